// The real client's "magic" extended attributes (cvmfs-facts.md §3), with its paging
// forms: NAME~N / NAME@N (page N, machine / human readable), NAME~? / NAME@? (page count).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "catalog.h"
#include "fetcher.h"

namespace simfs {

struct XattrEnv {
  const Counters* counters = nullptr;
  const FetcherConfig* cfg = nullptr;
  std::string host;      // the store URL the client talks to
  std::string revision;  // catalog revision
  std::string fqrn;      // repository name
  std::string root_hash; // catalog object hex
  std::int64_t pid = 0;
};

// Value of attribute `name` of entry `e`; false if the entry has no such attribute.
bool get_xattr(const XattrEnv& env, const Entry& e, const std::string& name, std::string* value);
// NUL-separated names for listxattr: the magic names on the root directory only.
std::string list_xattrs(const Entry& e);
// The pages of user.chunk_list (each repeats the header; a page ends once it exceeds
// 40000 characters).
std::vector<std::string> chunk_list_pages(const Entry& e);

}  // namespace simfs
