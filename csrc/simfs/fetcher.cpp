#include "fetcher.h"

#include "common/unique_fd.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

namespace simfs {

namespace {

struct MdDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

bool write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Receives a response body: hashes the bytes as they arrive and decompresses them
// into the temporary cache file.  Any surprise aborts the transfer.
struct Sink {
  CURL* curl = nullptr;
  int fd = -1;
  EVP_MD_CTX* md = nullptr;
  bool inflating = false;
  z_stream zs{};
  bool z_end = false;
  std::int64_t wire = 0;
  std::int64_t out = 0;
  std::int64_t limit = -1;
  long status = 0;
  bool failed = false;
  std::vector<unsigned char> buf = std::vector<unsigned char>(256 * 1024);

  bool emit(const unsigned char* p, std::size_t n) {
    out += static_cast<std::int64_t>(n);
    if (limit >= 0 && out > limit) return false;
    return write_all(fd, p, n);
  }

  // The object is a zlib stream.  It is inflated raw (header and Adler-32 trailer
  // handled here) because the SHA-1 of the stored bytes already proves them intact; the
  // redundant Adler-32 pass cost ~15% of the client's CPU time on a cold read.
  unsigned char header[2] = {0, 0};
  std::size_t header_got = 0;
  std::size_t trailer = 0;

  bool consume(const unsigned char* p, std::size_t n) {
    if (EVP_DigestUpdate(md, p, n) != 1) return false;
    if (!inflating) return emit(p, n);
    while (header_got < 2 && n > 0) {
      header[header_got++] = *p++;
      --n;
      if (header_got == 2) {
        const unsigned cmf = header[0], flg = header[1];
        // deflate, window <= 32 KiB, no preset dictionary, valid check bits
        if ((cmf & 15) != 8 || (cmf >> 4) > 7 || (flg & 0x20) != 0 || (cmf * 256 + flg) % 31 != 0) {
          return false;
        }
      }
    }
    if (n == 0) return true;
    if (z_end) {
      trailer += n;
      return trailer <= 4;
    }
    zs.next_in = const_cast<unsigned char*>(p);
    zs.avail_in = static_cast<uInt>(n);
    while (true) {
      zs.next_out = buf.data();
      zs.avail_out = static_cast<uInt>(buf.size());
      const int rc = inflate(&zs, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
      const std::size_t produced = buf.size() - zs.avail_out;
      if (produced > 0 && !emit(buf.data(), produced)) return false;
      if (rc == Z_STREAM_END) {
        z_end = true;
        trailer += zs.avail_in;
        return trailer <= 4;
      }
      if (zs.avail_in == 0 && zs.avail_out != 0) return true;
      if (rc == Z_BUF_ERROR && produced == 0) return zs.avail_in == 0;
    }
  }

  bool complete() const { return !inflating || (z_end && trailer == 4); }
};

std::size_t on_body(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* s = static_cast<Sink*>(user);
  const std::size_t n = size * nmemb;
  if (s->status == 0) {
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
  }
  if (s->status != 200) return 0;
  s->wire += static_cast<std::int64_t>(n);
  if (!s->consume(reinterpret_cast<const unsigned char*>(data), n)) {
    s->failed = true;
    return 0;
  }
  return n;
}

std::size_t on_text(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* s = static_cast<std::string*>(user);
  const std::size_t n = size * nmemb;
  if (s->size() + n > (1u << 20)) return 0;
  s->append(data, n);
  return n;
}

void configure(CURL* c, const FetcherConfig& cfg) {
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  // The real client: a connect timeout, and a transfer stalled below 1 KiB/s for the
  // timeout is given up (a slow server fails after the timeout, a large body does not).
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, cfg.timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>(std::ceil(static_cast<double>(cfg.timeout_ms) / 1000.0))));
  // Explicit: never pick up http_proxy from the environment.
  curl_easy_setopt(c, CURLOPT_PROXY, cfg.proxy.c_str());
  curl_easy_setopt(c, CURLOPT_NOPROXY, cfg.proxy.empty() ? "*" : "");
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  // Fewer, larger body callbacks: each one hashes and inflates a block.
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024L);
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
  line("cmio.n_cleanups", n_cleanups.load(), "Number of cache cleanups (SIGUSR1)");
  line("cmio.n_prefetch", n_prefetch.load(), "Number of chunks queued for prefetch");
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
}

Fetcher::~Fetcher() {
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

bool Fetcher::cached(const ObjectRef& obj) const {
  struct stat st {};
  if (::stat(cache_path(obj).c_str(), &st) != 0) return false;
  return obj.size < 0 || st.st_size == obj.size;
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
  counters_->n_invocations.fetch_add(1);
  const std::string dest = cache_path(obj);
  if (path_out) *path_out = dest;
  if (cached(obj)) return 0;

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
    std::unique_lock<std::mutex> lock(job->mu);
    job->cv.wait(lock, [&job] { return job->done; });
    return job->result;
  }
  // Another mount sharing the cache may have finished it since the check above.
  const int rc = cached(obj) ? 0 : download(obj, dest);
  {
    std::lock_guard<std::mutex> lock(mu_);
    inflight_.erase(dest);
  }
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->done = true;
    job->result = rc;
  }
  job->cv.notify_all();
  return rc;
}

int Fetcher::download(const ObjectRef& obj, const std::string& dest) {
  counters_->n_downloads.fetch_add(1);
  int rc = -EIO;
  for (int i = 0; i <= cfg_.retries; ++i) {
    if (i > 0) counters_->n_retries.fetch_add(1);
    CurlHandle h = take_handle();
    if (!h) {
      give_handle(nullptr);
      return -ENOMEM;
    }
    rc = attempt(obj, dest, h.get());
    give_handle(std::move(h));
    if (rc == 0) break;
  }
  return rc;
}

int Fetcher::attempt(const ObjectRef& obj, const std::string& dest, void* handle) {
  CURL* c = static_cast<CURL*>(handle);
  const std::string hex = to_hex(obj.hash);
  const std::string dir = cfg_.cache_dir + "/" + hex.substr(0, 2);
  const std::string tmp = cfg_.cache_dir + "/txn/" + hex + "." + std::to_string(::getpid()) + "." +
                          std::to_string(tmp_seq_.fetch_add(1));
  cmio::Event ev = cmio::blank_event(cmio::Source::kFetch, cmio::Op::kFetch);
  ev.t_start_ns = cmio::monotonic_ns();
  ev.pid = ::getpid();
  ev.tid = static_cast<std::int32_t>(::gettid());
  ev.offset = obj.file_offset;
  ev.file_id = log_->file_id(obj.name(), obj.size);
  counters_->n_requests.fetch_add(1);

  Sink sink;
  sink.curl = c;
  sink.limit = obj.size;
  sink.inflating = obj.compressed;
  std::unique_ptr<EVP_MD_CTX, MdDeleter> md(EVP_MD_CTX_new());
  sink.md = md.get();
  int err = 0;
  cmio::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    err = errno;
  } else if (!md || EVP_DigestInit_ex(md.get(), EVP_sha1(), nullptr) != 1) {
    err = ENOMEM;
  } else if (sink.inflating && inflateInit2(&sink.zs, -15) != Z_OK) {
    err = ENOMEM;
    sink.inflating = false;
  }
  const bool z_init = sink.inflating;
  sink.fd = fd.get();
  CURLcode cc = CURLE_OK;
  if (err == 0) {
    const std::string url = cfg_.url + "/" + obj.name();
    curl_easy_reset(c);
    configure(c, cfg_);
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    cc = curl_easy_perform(c);
    if (sink.status == 0) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &sink.status);
    double secs = 0;
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &secs);
    counters_->transfer_time_ms.fetch_add(static_cast<std::int64_t>(secs * 1000.0));
    counters_->sz_transferred.fetch_add(sink.wire);
    bool ok = cc == CURLE_OK && sink.status == 200 && !sink.failed;
    if (ok && !sink.complete()) ok = false;
    if (ok && obj.size >= 0 && sink.out != obj.size) ok = false;
    if (ok) {
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int dlen = 0;
      ok = EVP_DigestFinal_ex(md.get(), digest, &dlen) == 1 && dlen == 20 &&
           std::memcmp(digest, obj.hash.data(), 20) == 0;
    }
    if (!ok) err = EIO;
  }
  if (z_init) inflateEnd(&sink.zs);
  if (err == 0) {
    const int raw = fd.release();
    if (::close(raw) != 0) err = errno;
  }
  if (err == 0) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) err = errno;
  }
  if (err == 0 && std::rename(tmp.c_str(), dest.c_str()) != 0) err = errno;
  if (err != 0) ::unlink(tmp.c_str());

  ev.duration_ns = cmio::monotonic_ns() - ev.t_start_ns;
  ev.length = sink.wire;
  ev.result = err == 0 ? sink.out : -err;
  ev.aux = sink.status;
  ev.err = err;
  log_->add(ev);
  return err == 0 ? 0 : -err;
}

bool Fetcher::get_text(const std::string& rel, std::string* out, std::string* why) {
  for (int i = 0; i <= cfg_.retries; ++i) {
    CurlHandle h = take_handle();
    if (!h) {
      give_handle(nullptr);
      *why = "out of memory";
      return false;
    }
    CURL* c = static_cast<CURL*>(h.get());
    out->clear();
    const std::string url = cfg_.url + "/" + rel;
    curl_easy_reset(c);
    configure(c, cfg_);
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
    *why = cc != CURLE_OK ? std::string(curl_easy_strerror(cc))
                          : "HTTP status " + std::to_string(status);
    *why = url + ": " + *why;
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
