// File bundles (CVMFS 2.14, CVMFS_PREFETCH_FILEBUNDLES): opening a trigger file whose
// `.cvmfsbundle-<name>` spec sits next to it prefetches the files the spec lists.
//
// Behaves as upstream's BundleMgr (cvmfs/bundle_mgr.cc, pull requests 4002/4353/4359):
// one instance per mount, alive for the mount's life; open() only enqueues the trigger
// (never blocks: a full queue drops the request, prefetching is best effort); a dispatcher
// thread fetches and parses the spec and queues its dependencies for a pool of fetcher
// threads (default 8, CVMFS_BUNDLE_POOL_SIZE); a worker fetches an unchunked dependency
// whole and a chunked one chunk by chunk, into the same cache the read path uses (so
// shared downloads and the event log see them like any other fetch).  A dependency
// missing from the catalog is skipped.  On unmount queued work is dropped, not done.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "catalog.h"
#include "fetcher.h"

namespace simfs {

// Parses a bundle spec: optional leading '#' lines, then the JSON object; the
// `dependencies` array, each entry normalised against `spec_dir` (entries without a
// leading '/' are relative to it, "./" stripped).  False with a one-line reason.
bool parse_bundle_spec(const std::string& text, const std::string& spec_dir,
                       std::vector<std::string>* deps, std::string* why);

class BundleMgr {
 public:
  BundleMgr(const Catalog* catalog, Fetcher* fetcher, Counters* counters, std::size_t pool_size);
  ~BundleMgr();
  BundleMgr(const BundleMgr&) = delete;
  BundleMgr& operator=(const BundleMgr&) = delete;

  // Hands a trigger (repository path) to the dispatcher; false if the queue was full.
  bool schedule_trigger(const std::string& path);

 private:
  void dispatcher();
  void worker();
  void process_trigger(const std::string& path);
  void fetch_path(const std::string& path);

  static constexpr std::size_t kQueueLimit = 4096;

  const Catalog* catalog_;
  Fetcher* fetcher_;
  Counters* counters_;
  std::mutex mu_;
  std::condition_variable cv_triggers_;
  std::condition_variable cv_work_;
  std::deque<std::string> triggers_;
  std::deque<std::string> work_;
  bool stop_ = false;
  std::thread dispatcher_;
  std::vector<std::thread> workers_;
};

}  // namespace simfs
