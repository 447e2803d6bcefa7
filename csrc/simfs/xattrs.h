// The real client's "magic" extended attributes (cvmfs-facts.md §3; the 36 names the
// real cvmfs2 2.12 root directory lists, testvectors/cvmfs-client/root_xattrs.json), with
// its paging forms: NAME~N / NAME@N (page N, machine / human readable), NAME~? / NAME@?
// (page count).  Extras of the emulated client, readable by name but never listed:
// user.cmio_counters and user.cmio_client_profile.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "catalog.h"
#include "fetcher.h"

namespace simfs {

// The client's recent log messages (user.logbuffer), as cvmfs2 keeps its last few.
class LogBuffer {
 public:
  void add(const std::string& msg);
  std::string render() const;  // oldest first, "[D Mon YYYY HH:MM:SS UTC] msg\n" each

 private:
  static constexpr std::size_t kKeep = 10;
  mutable std::mutex mu_;
  std::deque<std::pair<std::int64_t, std::string>> entries_;
};

// Times (unix seconds) of cache cleanups, for user.ncleanup24.
class CleanupTimes {
 public:
  void add(std::int64_t t);
  std::int64_t since(std::int64_t t) const;

 private:
  mutable std::mutex mu_;
  std::deque<std::int64_t> times_;
};

struct XattrEnv {
  const Counters* counters = nullptr;
  const FetcherConfig* cfg = nullptr;
  const Catalog* catalog = nullptr;
  const LogBuffer* log = nullptr;
  const CleanupTimes* cleanups = nullptr;
  std::string host;      // the store URL the client talks to
  std::string revision;  // catalog revision
  std::string fqrn;      // repository name
  std::string root_hash; // catalog object hex
  std::int64_t pid = 0;
  std::int64_t boot_s = 0;     // unix time the client started (user.uptime)
  std::int64_t loaded_s = 0;   // unix time the catalog was loaded (user.expires)
  std::int64_t ttl_s = 240;    // catalog time to live (manifest 'D' line)
  std::int64_t max_fd = 0;     // open-file limit less cvmfs2's 512 reserved descriptors
};

// Value of attribute `name` of entry `e`; false if the entry has no such attribute.
bool get_xattr(const XattrEnv& env, const Entry& e, const std::string& name, std::string* value);
// NUL-separated names for listxattr: the magic names on the root directory only.
std::string list_xattrs(const Entry& e);
// The pages of user.chunk_list (each repeats the header; a page ends once it exceeds
// 40000 characters).
std::vector<std::string> chunk_list_pages(const Entry& e);
// user.repo_counters of a catalog: `name,value` lines (cvmfs2's catalog counters).
std::string catalog_counters_csv(const Catalog& c);

}  // namespace simfs
