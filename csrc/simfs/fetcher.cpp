#include "fetcher.h"

#include "common/unique_fd.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "sink.h"

namespace simfs {

namespace {

std::size_t on_text(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* s = static_cast<std::string*>(user);
  const std::size_t n = size * nmemb;
  if (s->size() + n > (1u << 20)) return 0;
  s->append(data, n);
  return n;
}

// A true stall timer: libcurl's low-speed check averages the speed over its last ~5 s of
// samples, so a server that sends a body and then goes silent (or announces more bytes
// than it sends) was given up only after timeout + ~5 s.  This aborts a transfer as soon
// as no byte arrived for the timeout (libcurl calls it at least once a second).
struct StallGuard {
  long timeout_ms = 0;
  curl_off_t seen = -1;
  std::chrono::steady_clock::time_point last{};
};

int on_progress(void* user, curl_off_t /*dltotal*/, curl_off_t dlnow, curl_off_t /*ultotal*/,
                curl_off_t /*ulnow*/) {
  auto* g = static_cast<StallGuard*>(user);
  const auto now = std::chrono::steady_clock::now();
  if (dlnow != g->seen) {
    g->seen = dlnow;
    g->last = now;
    return 0;
  }
  const auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(now - g->last).count();
  // before the first byte, CURLOPT_CONNECTTIMEOUT_MS and the low-speed check apply as before
  return dlnow > 0 && idle >= g->timeout_ms ? 1 : 0;
}

void guard_stalls(CURL* c, StallGuard* g, long timeout_ms) {
  g->timeout_ms = timeout_ms;
  g->seen = -1;
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, static_cast<void*>(g));
}

void configure(CURL* c, const FetcherConfig& cfg) {
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  // The real client: a connect timeout, and a transfer stalled below 1 KiB/s for the
  // timeout is given up (a slow server fails after the timeout, a large body does not).
  // cvmfs2 uses CVMFS_TIMEOUT through a proxy and CVMFS_TIMEOUT_DIRECT without one.
  const long timeout_ms = cfg.effective_timeout_ms();
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>(std::ceil(static_cast<double>(timeout_ms) / 1000.0))));
  // Explicit: never pick up http_proxy from the environment.
  curl_easy_setopt(c, CURLOPT_PROXY, cfg.proxy.c_str());
  curl_easy_setopt(c, CURLOPT_NOPROXY, cfg.proxy.empty() ? "*" : "");
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  // fast: fewer, larger body callbacks; cvmfs2 keeps libcurl's default (16 KiB).
  if (cfg.profile.curl_buffer > 0) curl_easy_setopt(c, CURLOPT_BUFFERSIZE, cfg.profile.curl_buffer);
}

}  // namespace

std::string Counters::render() const {
  std::string s;
  auto line = [&s](const char* name, std::int64_t v, const char* desc) {
    s += name;
    s += '|';
    s += std::to_string(v);
    s += '|';
    s += desc;
    s += '\n';
  };
  line("cvmfs.n_fs_lookup", n_fs_lookup.load(), "Number of lookups");
  line("cvmfs.n_fs_open", n_fs_open.load(), "Overall number of file open operations");
  line("cvmfs.n_fs_read", n_fs_read.load(), "Number of files read");
  line("cvmfs.n_io_error", n_io_error.load(), "Number of I/O errors");
  line("cvmfs.no_open_dirs", no_open_dirs.load(), "Number of currently opened directories");
  line("cvmfs.no_open_files", no_open_files.load(), "Number of currently opened files");
  line("cmio.cost_per_mib_ns", cost_per_mib_ns, "Calibrated residual per MiB fetched (ns)");
  line("cmio.cost_per_object_ns", cost_per_object_ns, "Calibrated residual per object fetched (ns)");
  line("cmio.n_bundle_bad_specs", n_bundle_bad_specs.load(), "Bundle specs that did not parse");
  line("cmio.n_bundle_deps", n_bundle_deps.load(), "Bundle dependencies prefetched");
  line("cmio.n_bundle_missing", n_bundle_missing.load(), "Bundle dependencies not in the catalog");
  line("cmio.n_bundle_triggers", n_bundle_triggers.load(), "Bundle triggers opened");
  line("cmio.n_cleanups", n_cleanups.load(), "Number of cache cleanups (SIGUSR1)");
  line("cmio.n_prefetch", n_prefetch.load(), "Number of chunks queued for prefetch");
  line("cmio.n_quota_transactions", quota != nullptr ? quota->transactions() : 0,
       "Number of SQLite transactions of the cache database");
  line("cvmfs.n_fs_dir_open", n_fs_dir_open.load(), "Overall number of directory open operations");
  line("download.n_requests", n_requests.load(), "Number of requests sent");
  line("download.n_retries", n_retries.load(), "Number of retries");
  line("download.sz_transfer_time", transfer_time_ms.load(), "Transfer time (milliseconds)");
  line("download.sz_transferred_bytes", sz_transferred.load(), "Number of transferred bytes");
  line("fetch.n_downloads", n_downloads.load(), "Number of downloads");
  line("fetch.n_invocations", n_invocations.load(), "Number of fetch calls");
  return s;
}

std::string ObjectRef::name() const {
  const std::string hex = to_hex(hash);
  std::string s = "data/" + hex.substr(0, 2) + "/" + hex.substr(2);
  if (suffix != 0) s += suffix;
  return s;
}

void Fetcher::CurlDeleter::operator()(void* h) const { curl_easy_cleanup(static_cast<CURL*>(h)); }

Fetcher::Fetcher(FetcherConfig cfg, Counters* counters, EventLog* log)
    : cfg_(std::move(cfg)), counters_(counters), log_(log) {
  cfg_.parallel = std::max(1, cfg_.parallel);
  cfg_.retries = std::max(0, cfg_.retries);
  counters_->cost_per_object_ns = cfg_.profile.cost_per_object_ns;
  counters_->cost_per_mib_ns = cfg_.profile.cost_per_mib_ns;
  if (cfg_.profile.quota_db) quota_ = std::make_unique<QuotaManager>(cfg_.cache_dir);
  counters_->quota = quota_.get();
  if (cfg_.profile.download_thread) loop_ = std::make_unique<DownloadLoop>(cfg_.profile.poll_1ms);
}

Fetcher::~Fetcher() {
  counters_->quota = nullptr;
  {
    std::lock_guard<std::mutex> lock(pf_mu_);
    pf_stop_ = true;
    pf_queue_.clear();
  }
  pf_cv_.notify_all();
  for (std::thread& t : pf_threads_) t.join();
}

std::string Fetcher::cache_path(const ObjectRef& obj) const {
  const std::string hex = to_hex(obj.hash);
  std::string p = cfg_.cache_dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2);
  if (obj.suffix != 0) p += obj.suffix;
  return p;
}

namespace {

std::string quota_key(const ObjectRef& obj) {
  std::string k = to_hex(obj.hash);
  if (obj.suffix != 0) k += obj.suffix;
  return k;
}

}  // namespace

bool Fetcher::cached(const ObjectRef& obj) const {
  struct stat st {};
  if (::stat(cache_path(obj).c_str(), &st) != 0) return false;
  return obj.size < 0 || st.st_size == obj.size;
}

// A cache lookup: cvmfs2 simply tries to open the object (PosixCacheManager::Open) and
// tells the quota manager it was used; fast checks stat() and the size first.
int Fetcher::open_cached(const ObjectRef& obj, const std::string& path) {
  if (!cfg_.profile.probe_with_open && !cached(obj)) return -ENOENT;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  if (quota_) quota_->touch(quota_key(obj));
  return fd;
}

Fetcher::CurlHandle Fetcher::take_handle() {
  std::unique_lock<std::mutex> lock(pool_mu_);
  pool_cv_.wait(lock, [this] { return handles_out_ < cfg_.parallel; });
  ++handles_out_;
  if (!pool_.empty()) {
    CurlHandle h = std::move(pool_.back());
    pool_.pop_back();
    return h;
  }
  lock.unlock();
  CurlHandle h(curl_easy_init());
  return h;
}

void Fetcher::give_handle(CurlHandle h) {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    --handles_out_;
    if (h) pool_.push_back(std::move(h));
  }
  pool_cv_.notify_one();
}

int Fetcher::fetch(const ObjectRef& obj, std::string* path_out) {
  if (path_out) *path_out = cache_path(obj);
  const std::string desc = obj.suffix == 'C' ? "file catalog" : "object " + obj.name();
  const int fd = open_object(obj, desc);
  if (fd < 0) return fd;
  ::close(fd);
  return 0;
}

int Fetcher::open_object(const ObjectRef& obj, const std::string& desc) {
  counters_->n_invocations.fetch_add(1);
  const std::string dest = cache_path(obj);
  int fd = open_cached(obj, dest);
  if (fd >= 0) return fd;

  std::shared_ptr<InFlight> job;
  bool owner = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inflight_.find(dest);
    if (it == inflight_.end()) {
      job = std::make_shared<InFlight>();
      inflight_.emplace(dest, job);
      owner = true;
    } else {
      job = it->second;
    }
  }
  if (!owner) {
    // cvmfs2 hands waiters a dup() of the downloader's descriptor; opening the
    // committed file is the same object.
    std::unique_lock<std::mutex> lock(job->mu);
    job->cv.wait(lock, [&job] { return job->done; });
    if (job->result != 0) return job->result;
    fd = ::open(dest.c_str(), O_RDONLY | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
  }
  // A second look (cvmfs2's OpenSelect after taking the queue lock): another thread or
  // another mount may have finished it since.
  fd = open_cached(obj, dest);
  const int rc = fd >= 0 ? fd : download(obj, dest, desc);
  {
    std::lock_guard<std::mutex> lock(mu_);
    inflight_.erase(dest);
  }
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->done = true;
    job->result = rc >= 0 ? 0 : rc;
  }
  job->cv.notify_all();
  return rc;
}

int Fetcher::download(const ObjectRef& obj, const std::string& dest, const std::string& desc) {
  counters_->n_downloads.fetch_add(1);
  int rc = -EIO;
  for (int i = 0; i <= cfg_.retries; ++i) {
    if (i > 0) counters_->n_retries.fetch_add(1);
    rc = attempt(obj, dest, desc);
    if (rc >= 0) break;
  }
  return rc;
}

// The calibrated residual of the profile (0 for fast): the time measurement shows the
// real client spending per object and per byte beyond the behaviours emulated above.
void Fetcher::pay_residual(std::int64_t bytes) const {
  const std::int64_t ns = cfg_.profile.cost_per_object_ns +
                          (cfg_.profile.cost_per_mib_ns * bytes) / (1 << 20);
  if (ns > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(ns));
}

void Fetcher::transfer(const std::string& url, Sink* sink, CURLcode* cc, long* status,
                       double* secs) {
  if (loop_) {
    // cvmfs2: the request goes to the download I/O thread, the caller sleeps on a pipe.
    Transfer t;
    t.url = url;
    StallGuard guard;
    t.configure = [this, sink, &url, &guard](CURL* c) {
      configure(c, cfg_);
      guard_stalls(c, &guard, cfg_.effective_timeout_ms());
      curl_easy_setopt(c, CURLOPT_URL, url.c_str());
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write_callback);
      curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
      sink->curl = c;
    };
    // The connection limit (--parallel) holds for both download paths.
    CurlHandle slot = take_handle();
    loop_->perform(&t);
    give_handle(std::move(slot));
    *cc = t.code;
    *status = sink->status != 0 ? sink->status : t.status;
    *secs = t.total_time_s;
    return;
  }
  CurlHandle h = take_handle();
  if (!h) {
    give_handle(nullptr);
    *cc = CURLE_OUT_OF_MEMORY;
    return;
  }
  CURL* c = static_cast<CURL*>(h.get());
  curl_easy_reset(c);
  configure(c, cfg_);
  StallGuard guard;
  guard_stalls(c, &guard, cfg_.effective_timeout_ms());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write_callback);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
  sink->curl = c;
  *cc = curl_easy_perform(c);
  *status = sink->status;
  if (*status == 0) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, secs);
  give_handle(std::move(h));
}

int Fetcher::attempt(const ObjectRef& obj, const std::string& dest, const std::string& desc) {
  const bool real = cfg_.profile.download_thread;  // the cvmfs-2.12 transaction pattern
  const std::string hex = to_hex(obj.hash);
  const std::string dir = cfg_.cache_dir + "/" + hex.substr(0, 2);
  cmio::Event ev = cmio::blank_event(cmio::Source::kFetch, cmio::Op::kFetch);
  ev.t_start_ns = cmio::monotonic_ns();
  ev.pid = ::getpid();
  ev.tid = static_cast<std::int32_t>(::gettid());
  ev.offset = obj.file_offset;
  ev.file_id = log_->file_id(obj.name(), obj.size);
  counters_->n_requests.fetch_add(1);

  // StartTxn: cvmfs2 makes the transaction file with mkstemp(<cache>/txn/fetchXXXXXX).
  std::string tmp;
  cmio::UniqueFd wfd;
  if (real) {
    std::string templ = cfg_.cache_dir + "/txn/fetchXXXXXX";
    wfd = cmio::UniqueFd(::mkostemp(templ.data(), O_CLOEXEC));
    tmp = templ;
  } else {
    tmp = cfg_.cache_dir + "/txn/" + hex + "." + std::to_string(::getpid()) + "." +
          std::to_string(tmp_seq_.fetch_add(1));
    wfd = cmio::UniqueFd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  }
  int err = wfd.valid() ? 0 : errno;
  Sink sink(wfd.get(), obj.size, obj.compressed, cfg_.profile, obj.stored_size);
  if (err == 0 && !sink.ok_init()) err = ENOMEM;
  if (err == 0) {
    CURLcode cc = CURLE_OK;
    long status = 0;
    double secs = 0;
    transfer(cfg_.url + "/" + obj.name(), &sink, &cc, &status, &secs);
    sink.status = status;
    counters_->transfer_time_ms.fetch_add(static_cast<std::int64_t>(secs * 1000.0));
    counters_->sz_transferred.fetch_add(sink.wire);
    bool ok = cc == CURLE_OK && status == 200 && !sink.failed;
    if (ok && !sink.complete()) ok = false;
    if (ok && obj.size >= 0 && sink.out != obj.size) ok = false;
    // cvmfs2 finalizes the hash when the transfer is done (VerifyAndFinalize).
    if (ok) ok = sink.digest_is(obj.hash.data());
    if (!ok) err = EIO;
  }
  int rfd = -1;
  if (err == 0 && !sink.flush()) err = errno != 0 ? errno : EIO;
  if (err == 0 && real) {
    // OpenFromTxn: the descriptor handed to the reader is a second open of the
    // transaction file, made before the commit.
    rfd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd < 0) err = errno;
  }
  if (err == 0) {
    // CommitTxn: close the written file, then rename it into place.
    if (::close(wfd.release()) != 0) err = errno;
  }
  if (err == 0 && !real) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) err = errno;
  }
  if (err == 0 && std::rename(tmp.c_str(), dest.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    if (rfd >= 0) ::close(rfd);
    rfd = -1;
  } else if (quota_) {
    // Success, inform the quota manager (one pipe write; the row is written later, in
    // the quota manager's next bunch).  The catalog is pinned, as cvmfs2 pins it.
    if (obj.suffix == 'C') {
      quota_->pin(quota_key(obj), sink.out, desc, true);
    } else {
      quota_->insert(quota_key(obj), sink.out, desc);
    }
  }

  ev.duration_ns = cmio::monotonic_ns() - ev.t_start_ns;
  ev.length = sink.wire;
  ev.result = err == 0 ? sink.out : -err;
  ev.aux = sink.status;
  ev.err = err;
  log_->add(ev);
  if (err != 0) return -err;
  pay_residual(sink.out);
  if (rfd < 0) {
    rfd = ::open(dest.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return -errno;
  }
  return rfd;
}

bool Fetcher::get_text(const std::string& rel, std::string* out, std::string* why) {
  const std::string url = cfg_.url + "/" + rel;
  const int attempts = cfg_.retries + 1;
  for (int i = 0; i < attempts; ++i) {
    if (i > 0) counters_->n_retries.fetch_add(1);
    CurlHandle h = take_handle();
    if (!h) {
      give_handle(nullptr);
      *why = "out of memory";
      return false;
    }
    CURL* c = static_cast<CURL*>(h.get());
    out->clear();
    curl_easy_reset(c);
    configure(c, cfg_);
    StallGuard guard;
    guard_stalls(c, &guard, cfg_.effective_timeout_ms());
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_text);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    counters_->n_requests.fetch_add(1);
    const CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    counters_->sz_transferred.fetch_add(static_cast<std::int64_t>(out->size()));
    give_handle(std::move(h));
    if (cc == CURLE_OK && status == 200) return true;
    if (cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_ABORTED_BY_CALLBACK) {
      // The documented limit: the timeout (proxy or direct) for the connection and for a
      // stalled answer, times the attempts (--retries + 1).
      const long t = cfg_.effective_timeout_ms();
      *why = url + ": no answer within " + std::to_string(t / 1000) +
             (t % 1000 != 0 ? "." + std::to_string((t % 1000) / 100) : "") + " s (" +
             std::string(curl_easy_strerror(cc)) + "); gave up after " + std::to_string(attempts) +
             (attempts == 1 ? " attempt" : " attempts");
    } else {
      *why = url + ": " +
             (cc != CURLE_OK ? std::string(curl_easy_strerror(cc)) : "HTTP status " + std::to_string(status));
    }
  }
  return false;
}

void Fetcher::prefetch(const std::vector<ObjectRef>& objs) {
  std::lock_guard<std::mutex> lock(pf_mu_);
  if (pf_stop_) return;
  if (pf_threads_.empty()) {
    const int n = std::max(1, std::min(cfg_.parallel, 8));
    for (int i = 0; i < n; ++i) pf_threads_.emplace_back([this] { prefetch_worker(); });
  }
  for (const ObjectRef& o : objs) {
    counters_->n_prefetch.fetch_add(1);
    pf_queue_.push_back(o);
  }
  pf_cv_.notify_all();
}

void Fetcher::prefetch_worker() {
  while (true) {
    ObjectRef obj;
    {
      std::unique_lock<std::mutex> lock(pf_mu_);
      pf_cv_.wait(lock, [this] { return pf_stop_ || !pf_queue_.empty(); });
      if (pf_stop_) return;
      obj = pf_queue_.front();
      pf_queue_.pop_front();
    }
    if (!cached(obj)) fetch(obj, nullptr);
  }
}

std::int64_t Fetcher::cleanup(const std::string& keep) {
  std::int64_t removed = 0;
  if (quota_) {
    // cvmfs_talk cleanup 0: the quota manager drops every unpinned entry (least recently
    // used first) and the files go with them.
    for (const std::string& p : quota_->cleanup(0)) {
      if (p != keep && ::unlink(p.c_str()) == 0) ++removed;
    }
  }
  // Then anything the database does not know (left by another profile or a killed
  // client): a cold cache must be cold.
  static const char kDigits[] = "0123456789abcdef";
  for (int a = 0; a < 16; ++a) {
    for (int b = 0; b < 16; ++b) {
      const std::string dir = cfg_.cache_dir + "/" + kDigits[a] + kDigits[b];
      DIR* d = ::opendir(dir.c_str());
      if (d == nullptr) continue;
      std::vector<std::string> names;
      while (dirent* de = ::readdir(d)) {
        if (de->d_name[0] == '.') continue;
        names.emplace_back(de->d_name);
      }
      ::closedir(d);
      for (const std::string& n : names) {
        const std::string p = dir + "/" + n;
        if (p == keep) continue;
        if (::unlink(p.c_str()) == 0) ++removed;
      }
    }
  }
  return removed;
}

}  // namespace simfs
