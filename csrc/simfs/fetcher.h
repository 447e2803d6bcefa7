// Downloads, verifies and caches objects of the store, like the real client's
// fetcher + download manager: content-addressed objects fetched over HTTP (libcurl),
// checked against their SHA-1 before use, decompressed into a local cache shared by
// all mounts (`<cache>/XX/<rest of hex><suffix>`, written atomically), one download
// per object however many readers wait for it, at most N connections at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "catalog.h"
#include "download.h"
#include "eventlog.h"
#include "profile.h"
#include "quota.h"

namespace simfs {

// The real client's counter names (cvmfs_talk internal affairs) where one exists.
struct Counters {
  std::atomic<std::int64_t> n_fs_open{0};          // cvmfs.n_fs_open
  std::atomic<std::int64_t> n_fs_read{0};          // cvmfs.n_fs_read
  std::atomic<std::int64_t> n_fs_lookup{0};        // cvmfs.n_fs_lookup
  std::atomic<std::int64_t> n_io_error{0};         // cvmfs.n_io_error
  std::atomic<std::int64_t> n_downloads{0};        // fetch.n_downloads
  std::atomic<std::int64_t> n_invocations{0};      // fetch.n_invocations
  std::atomic<std::int64_t> n_requests{0};         // download.n_requests
  std::atomic<std::int64_t> n_retries{0};          // download.n_retries
  std::atomic<std::int64_t> sz_transferred{0};     // download.sz_transferred_bytes
  std::atomic<std::int64_t> transfer_time_ms{0};   // download.sz_transfer_time (ms)
  std::atomic<std::int64_t> n_prefetch{0};         // cmio.n_prefetch (ours)
  std::atomic<std::int64_t> n_cleanups{0};         // cmio.n_cleanups (ours)
  std::atomic<std::int64_t> n_bundle_triggers{0};  // cmio.n_bundle_triggers (ours)
  std::atomic<std::int64_t> n_bundle_deps{0};      // cmio.n_bundle_deps (ours)
  std::atomic<std::int64_t> n_bundle_missing{0};   // cmio.n_bundle_missing (ours)
  std::atomic<std::int64_t> n_bundle_bad_specs{0}; // cmio.n_bundle_bad_specs (ours)
  std::atomic<std::int64_t> n_fs_dir_open{0};      // cvmfs.n_fs_dir_open
  std::atomic<std::int64_t> no_open_files{0};      // cvmfs.no_open_files (user.usedfd)
  std::atomic<std::int64_t> no_open_dirs{0};       // cvmfs.no_open_dirs (user.useddirp)
  std::atomic<std::int64_t> last_io_error_s{0};    // user.timestamp_last_ioerr (unix seconds)
  const QuotaManager* quota = nullptr;             // cmio.n_quota_transactions (ours)
  std::int64_t cost_per_object_ns = 0;             // cmio.cost_per_object_ns (profile)
  std::int64_t cost_per_mib_ns = 0;                // cmio.cost_per_mib_ns (profile)

  // `name|value|description` lines, the format of `cvmfs_talk internal affairs`.
  std::string render() const;
};

struct FetcherConfig {
  std::string url;          // store base URL, no trailing slash
  std::string proxy;        // "" = DIRECT
  std::string cache_dir;
  // Connect timeout and stall limit per request, as cvmfs2's CVMFS_TIMEOUT (through a
  // proxy) and CVMFS_TIMEOUT_DIRECT (no proxy).
  long timeout_ms = 5000;
  long timeout_direct_ms = 10000;
  int retries = 1;
  int parallel = 16;
  ClientProfile profile;

  long effective_timeout_ms() const { return proxy.empty() ? timeout_direct_ms : timeout_ms; }
};

struct ObjectRef {
  Sha1 hash{};
  char suffix = 0;          // 0 whole file, 'P' chunk, 'C' catalog
  std::int64_t size = -1;   // decompressed size if known
  std::int64_t stored_size = -1;  // bytes on the wire if known (the manifest's B line)
  bool compressed = true;
  std::int64_t file_offset = 0;  // for the log: chunk offset in its file

  std::string name() const;  // "data/XX/<38 hex>[suffix]"
};

class Fetcher {
 public:
  Fetcher(FetcherConfig cfg, Counters* counters, EventLog* log);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  // Makes sure the object is in the cache; 0 and its cache path, or -errno.
  int fetch(const ObjectRef& obj, std::string* cache_path);
  // The object, from the cache or downloaded into it, as an open read-only descriptor
  // (>= 0), or -errno; `desc` is the path the quota database records for it.
  int open_object(const ObjectRef& obj, const std::string& desc);
  // GET of a small text file (the manifest); false with a one-line reason.
  bool get_text(const std::string& rel, std::string* out, std::string* why);
  // Queues background fetches (--prefetch); never blocks on the network.
  void prefetch(const std::vector<ObjectRef>& objs);
  bool cached(const ObjectRef& obj) const;
  const QuotaManager* quota() const { return quota_.get(); }
  std::string cache_path(const ObjectRef& obj) const;
  // Removes every cached object except `keep` (the pinned catalog); returns objects removed.
  std::int64_t cleanup(const std::string& keep);
  const FetcherConfig& config() const { return cfg_; }

 private:
  struct InFlight {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int result = 0;
  };
  struct CurlDeleter {
    void operator()(void* h) const;
  };
  using CurlHandle = std::unique_ptr<void, CurlDeleter>;

  int open_cached(const ObjectRef& obj, const std::string& path);
  int download(const ObjectRef& obj, const std::string& dest, const std::string& desc);
  int attempt(const ObjectRef& obj, const std::string& dest, const std::string& desc);
  void transfer(const std::string& url, class Sink* sink, CURLcode* cc, long* status, double* secs);
  void pay_residual(std::int64_t bytes) const;
  CurlHandle take_handle();
  void give_handle(CurlHandle h);
  void prefetch_worker();

  FetcherConfig cfg_;
  Counters* counters_;
  EventLog* log_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<InFlight>> inflight_;
  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<CurlHandle> pool_;
  int handles_out_ = 0;
  std::atomic<std::uint64_t> tmp_seq_{0};
  std::mutex pf_mu_;
  std::condition_variable pf_cv_;
  std::deque<ObjectRef> pf_queue_;
  bool pf_stop_ = false;
  std::vector<std::thread> pf_threads_;
  std::unique_ptr<QuotaManager> quota_;   // cvmfs-2.12 profile only
  std::unique_ptr<DownloadLoop> loop_;    // cvmfs-2.12 profile only
};

}  // namespace simfs
