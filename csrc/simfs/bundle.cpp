#include "bundle.h"

#include <fcntl.h>
#include <json/json.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <sstream>

#include "common/unique_fd.h"

namespace simfs {

namespace {

std::string parent_of(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool read_whole(const std::string& path, std::string* out) {
  cmio::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->append(buf, static_cast<std::size_t>(n));
    if (out->size() > (16u << 20)) return false;  // a spec is a short list, not a model
  }
}

}  // namespace

bool parse_bundle_spec(const std::string& text, const std::string& spec_dir,
                       std::vector<std::string>* deps, std::string* why) {
  std::size_t start = 0;
  while (start < text.size() && text[start] == '#') {
    const std::size_t nl = text.find('\n', start);
    start = nl == std::string::npos ? text.size() : nl + 1;
  }
  Json::CharReaderBuilder b;
  b["collectComments"] = false;
  b["strictRoot"] = true;
  b["failIfExtra"] = true;
  std::unique_ptr<Json::CharReader> reader(b.newCharReader());
  Json::Value root;
  std::string errs;
  const char* begin = text.data() + start;
  if (!reader->parse(begin, text.data() + text.size(), &root, &errs)) {
    *why = "not JSON: " + errs.substr(0, errs.find('\n'));
    return false;
  }
  if (!root.isObject() || !root.isMember("dependencies") || !root["dependencies"].isArray()) {
    *why = "no 'dependencies' array";
    return false;
  }
  for (const Json::Value& d : root["dependencies"]) {
    if (!d.isString() || d.asString().empty()) {
      *why = "a dependency is not a path";
      return false;
    }
    std::string p = d.asString();
    if (p[0] != '/') {
      if (p.compare(0, 2, "./") == 0) p = p.substr(2);
      p = spec_dir + "/" + p;
    }
    deps->push_back(p);
  }
  return true;
}

BundleMgr::BundleMgr(const Catalog* catalog, Fetcher* fetcher, Counters* counters,
                     std::size_t pool_size)
    : catalog_(catalog), fetcher_(fetcher), counters_(counters) {
  dispatcher_ = std::thread([this] { dispatcher(); });
  for (std::size_t i = 0; i < std::max<std::size_t>(1, pool_size); ++i) {
    workers_.emplace_back([this] { worker(); });
  }
}

BundleMgr::~BundleMgr() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    triggers_.clear();
    work_.clear();
  }
  cv_triggers_.notify_all();
  cv_work_.notify_all();
  dispatcher_.join();
  for (std::thread& t : workers_) t.join();
}

bool BundleMgr::schedule_trigger(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || triggers_.size() >= kQueueLimit) return false;
    triggers_.push_back(path);
  }
  counters_->n_bundle_triggers.fetch_add(1);
  cv_triggers_.notify_one();
  return true;
}

void BundleMgr::dispatcher() {
  while (true) {
    std::string path;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_triggers_.wait(lock, [this] { return stop_ || !triggers_.empty(); });
      if (stop_) return;
      path = std::move(triggers_.front());
      triggers_.pop_front();
    }
    process_trigger(path);
  }
}

void BundleMgr::process_trigger(const std::string& path) {
  const std::string dir = parent_of(path);
  const Entry* spec = catalog_->find(dir + "/.cvmfsbundle-" + name_of(path));
  if (spec == nullptr || !spec->is_regular() || spec->is_chunked()) return;
  ObjectRef o;
  o.hash = spec->hash;
  o.size = spec->size;
  o.compressed = spec->compressed();
  std::string cache_path;
  if (fetcher_->fetch(o, &cache_path) != 0) return;
  std::string text;
  if (!read_whole(cache_path, &text)) return;
  std::vector<std::string> deps;
  std::string why;
  if (!parse_bundle_spec(text, dir, &deps, &why)) {
    counters_->n_bundle_bad_specs.fetch_add(1);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::string& d : deps) {
      if (work_.size() >= kQueueLimit) break;  // best effort: the rest is dropped
      work_.push_back(std::move(d));
    }
  }
  cv_work_.notify_all();
}

void BundleMgr::worker() {
  while (true) {
    std::string path;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_work_.wait(lock, [this] { return stop_ || !work_.empty(); });
      if (stop_) return;
      path = std::move(work_.front());
      work_.pop_front();
    }
    fetch_path(path);
  }
}

void BundleMgr::fetch_path(const std::string& path) {
  const Entry* e = catalog_->find(path);
  if (e == nullptr || !e->is_regular()) {
    counters_->n_bundle_missing.fetch_add(1);
    return;
  }
  counters_->n_bundle_deps.fetch_add(1);
  if (e->is_chunked()) {
    for (const Chunk& c : e->chunks) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      ObjectRef o;
      o.hash = c.hash;
      o.suffix = 'P';
      o.size = c.size;
      o.compressed = e->compressed();
      o.file_offset = c.offset;
      const int fd = fetcher_->open_object(o, "Part of " + e->path);
      if (fd >= 0) ::close(fd);
    }
    return;
  }
  ObjectRef o;
  o.hash = e->hash;
  o.size = e->size;
  o.compressed = e->compressed();
  const int fd = fetcher_->open_object(o, e->path);
  if (fd >= 0) ::close(fd);
}

}  // namespace simfs
