#include "xattrs.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "common/unique_fd.h"

namespace simfs {

namespace {

constexpr std::size_t kMaxCharsPerPage = 40000;

// kBase: listed on the root; kWithHash: files with a content hash; kRegular: regular
// files; kSymlink: symbolic links; kHidden: readable by name, never listed (the real
// client's authz/external ones, which never apply here, and the emulator's own).
enum class Flavor { kBase, kWithHash, kRegular, kSymlink, kHidden };

const std::map<std::string, Flavor>& magic_names() {
  static const std::map<std::string, Flavor> names = {
      {"user.catalog_counters", Flavor::kBase},
      {"user.expires", Flavor::kBase},
      {"user.external_host", Flavor::kBase},
      {"user.external_timeout", Flavor::kBase},
      {"user.fqrn", Flavor::kBase},
      {"user.hitrate", Flavor::kBase},
      {"user.host", Flavor::kBase},
      {"user.host_list", Flavor::kBase},
      {"user.inode_max", Flavor::kBase},
      {"user.logbuffer", Flavor::kBase},
      {"user.maxfd", Flavor::kBase},
      {"user.ncleanup24", Flavor::kBase},
      {"user.nclg", Flavor::kBase},
      {"user.ndiropen", Flavor::kBase},
      {"user.ndownload", Flavor::kBase},
      {"user.nioerr", Flavor::kBase},
      {"user.nopen", Flavor::kBase},
      {"user.pid", Flavor::kBase},
      {"user.proxy", Flavor::kBase},
      {"user.proxy_list", Flavor::kBase},
      {"user.proxy_list_external", Flavor::kBase},
      {"user.pubkeys", Flavor::kBase},
      {"user.repo_counters", Flavor::kBase},
      {"user.repo_metainfo", Flavor::kBase},
      {"user.revision", Flavor::kBase},
      {"user.root_hash", Flavor::kBase},
      {"user.rx", Flavor::kBase},
      {"user.speed", Flavor::kBase},
      {"user.tag", Flavor::kBase},
      {"user.timeout", Flavor::kBase},
      {"user.timeout_direct", Flavor::kBase},
      {"user.timestamp_last_ioerr", Flavor::kBase},
      {"user.uptime", Flavor::kBase},
      {"user.useddirp", Flavor::kBase},
      {"user.usedfd", Flavor::kBase},
      {"user.version", Flavor::kBase},
      {"user.hash", Flavor::kWithHash},
      {"user.lhash", Flavor::kWithHash},
      {"user.chunk_list", Flavor::kRegular},
      {"user.chunks", Flavor::kRegular},
      {"user.compression", Flavor::kRegular},
      {"user.direct_io", Flavor::kRegular},
      {"user.external_file", Flavor::kRegular},
      {"user.bundle_trigger", Flavor::kRegular},
      {"user.rawlink", Flavor::kSymlink},
      {"user.authz", Flavor::kHidden},
      {"user.external_url", Flavor::kHidden},
      {"user.cmio_counters", Flavor::kHidden},
      {"user.cmio_client_profile", Flavor::kHidden},
  };
  return names;
}

std::int64_t now_s() { return static_cast<std::int64_t>(std::time(nullptr)); }

// The SHA-1 of the cached (decompressed) file, as cvmfs2's user.lhash checksums the
// local copy; "Not in cache" if there is none.
std::string local_hash(const XattrEnv& env, const Entry& e) {
  const std::string hex = to_hex(e.hash);
  const std::string path = env.cfg->cache_dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2);
  cmio::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "Not in cache";
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  if (md == nullptr || EVP_DigestInit_ex(md, EVP_sha1(), nullptr) != 1) {
    EVP_MD_CTX_free(md);
    return "I/O error (-12)";
  }
  std::vector<unsigned char> buf(1 << 16);
  ssize_t n = 0;
  while ((n = ::read(fd.get(), buf.data(), buf.size())) > 0) {
    EVP_DigestUpdate(md, buf.data(), static_cast<std::size_t>(n));
  }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int dl = 0;
  const bool ok = n == 0 && EVP_DigestFinal_ex(md, d, &dl) == 1 && dl == 20;
  EVP_MD_CTX_free(md);
  if (!ok) return "I/O error (-5)";
  Sha1 h{};
  for (std::size_t i = 0; i < 20; ++i) h[i] = d[i];
  return to_hex(h);
}

// The pages of one attribute's value; empty if the entry does not have it.
std::vector<std::string> pages_of(const XattrEnv& env, const Entry& e, const std::string& name) {
  const Counters& c = *env.counters;
  auto one = [](std::string v) { return std::vector<std::string>{std::move(v)}; };
  auto num = [&one](std::int64_t v) { return one(std::to_string(v)); };
  const std::string proxy = env.cfg->proxy.empty() ? "DIRECT" : env.cfg->proxy;
  if (name == "user.chunk_list") return chunk_list_pages(e);
  if (name == "user.chunks") {
    if (!e.is_regular()) return {};
    return num(static_cast<std::int64_t>(e.is_chunked() ? e.chunks.size() : 1));
  }
  if (name == "user.compression") {
    if (!e.is_regular()) return {};
    return one(e.compressed() ? "zlib" : "none");
  }
  if (name == "user.bundle_trigger") {
    if (!e.is_regular()) return {};
    return one(e.is_bundle_trigger() ? "1" : "0");
  }
  if (name == "user.external_file" || name == "user.direct_io") {
    if (!e.is_regular()) return {};
    return one("0");
  }
  if (name == "user.hash") {
    if (!e.has_hash || e.is_chunked()) return {};
    return one(to_hex(e.hash));
  }
  if (name == "user.lhash") {
    if (!e.has_hash || e.is_chunked()) return {};
    return one(local_hash(env, e));
  }
  if (name == "user.rawlink") {
    if (!e.is_link()) return {};
    return one(e.symlink);
  }
  if (name == "user.cmio_counters") return one(c.render());
  if (name == "user.cmio_client_profile") return one(env.cfg->profile.name);
  if (name == "user.catalog_counters") {
    return one("catalog_hash: " + env.root_hash + "\ncatalog_mountpoint: \n" +
               catalog_counters_csv(*env.catalog));
  }
  if (name == "user.repo_counters") return one(catalog_counters_csv(*env.catalog));
  if (name == "user.expires") {
    // Minutes until the catalog's TTL runs out; the tree never changes, so each expiry
    // is a reload that finds the same revision and starts a new period.
    const std::int64_t ttl = env.ttl_s > 0 ? env.ttl_s : 240;
    const std::int64_t age = std::max<std::int64_t>(0, now_s() - env.loaded_s);
    return num((ttl - age % ttl) / 60);
  }
  if (name == "user.external_host") return one("");
  if (name == "user.external_timeout") return num(env.cfg->timeout_direct_ms / 1000);
  if (name == "user.fqrn") return one(env.fqrn);
  if (name == "user.host" || name == "user.host_list") return one(env.host);
  if (name == "user.inode_max") return num(static_cast<std::int64_t>(env.catalog->size()));
  if (name == "user.logbuffer") return one(env.log->render());
  if (name == "user.maxfd") return num(env.max_fd);
  if (name == "user.ncleanup24") return num(env.cleanups->since(now_s() - 24 * 3600));
  if (name == "user.nclg") return num(1);
  if (name == "user.ndiropen") return num(c.n_fs_dir_open.load());
  if (name == "user.proxy") return one(proxy);
  if (name == "user.proxy_list" || name == "user.proxy_list_external") return one(proxy + "\n");
  if (name == "user.pubkeys") return one("");  // the emulated store is not signed
  if (name == "user.repo_metainfo") return one("metainfo not available");
  if (name == "user.tag") return one("");
  if (name == "user.timestamp_last_ioerr") return num(c.last_io_error_s.load());
  if (name == "user.uptime") return num((now_s() - env.boot_s) / 60);
  if (name == "user.usedfd") return num(c.no_open_files.load());
  if (name == "user.useddirp") return num(c.no_open_dirs.load());
  if (name == "user.version") return one("2.12.0.0");  // the client release emulated
  if (name == "user.revision") return one(env.revision);
  if (name == "user.root_hash") return one(env.root_hash);
  if (name == "user.pid") return num(env.pid);
  if (name == "user.ndownload") return num(c.n_downloads.load());
  if (name == "user.nioerr") return num(c.n_io_error.load());
  if (name == "user.nopen") return num(c.n_fs_open.load());
  // cvmfs2's user.timeout is its proxy timeout (CVMFS_TIMEOUT), also under DIRECT; the
  // direct one is user.timeout_direct (upstream TimeoutMagicXattr / TimeoutDirect...).
  if (name == "user.timeout") return num(env.cfg->timeout_ms / 1000);
  if (name == "user.timeout_direct") return num(env.cfg->timeout_direct_ms / 1000);
  if (name == "user.rx") return num(c.sz_transferred.load() / 1024);
  if (name == "user.speed") {
    const std::int64_t ms = c.transfer_time_ms.load();
    if (ms == 0) return one("n/a");
    return num((1000 * (c.sz_transferred.load() / 1024)) / ms);
  }
  if (name == "user.hitrate") {
    const std::int64_t inv = c.n_invocations.load();
    if (inv == 0) return one("n/a");
    const float rate = static_cast<float>(
        100.0 * (1.0 - static_cast<double>(static_cast<float>(c.n_downloads.load()) /
                                           static_cast<float>(inv))));
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.03f", static_cast<double>(rate));
    return one(buf);
  }
  return {};
}

bool parse_page(const std::string& s, long* page) {
  if (s == "?") {
    *page = -1;
    return true;
  }
  if (s.empty() || s.size() > 9) return false;
  long v = 0;
  for (const char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  *page = v;
  return true;
}

}  // namespace

std::vector<std::string> chunk_list_pages(const Entry& e) {
  if (!e.is_regular()) return {};
  const std::string header = "hash,offset,size\n";
  std::vector<std::string> pages;
  std::string page = header;
  if (e.is_chunked()) {
    for (const Chunk& ch : e.chunks) {
      page += to_hex(ch.hash) + "," + std::to_string(ch.offset) + "," + std::to_string(ch.size) + "\n";
      if (page.size() > kMaxCharsPerPage) {
        pages.push_back(page);
        page = header;
      }
    }
  } else {
    page += to_hex(e.hash) + ",0," + std::to_string(e.size) + "\n";
  }
  if (page.size() > header.size()) pages.push_back(page);
  return pages;
}

bool get_xattr(const XattrEnv& env, const Entry& e, const std::string& name, std::string* value) {
  const auto& names = magic_names();
  std::string base = name;
  long page = 0;
  bool human = false;
  if (names.count(name) == 0) {
    const std::size_t pos = name.find_last_of("~@");
    if (pos == std::string::npos || names.count(name.substr(0, pos)) == 0 ||
        !parse_page(name.substr(pos + 1), &page)) {
      return false;
    }
    base = name.substr(0, pos);
    human = name[pos] == '@';
  }
  const std::vector<std::string> pages = pages_of(env, e, base);
  if (pages.empty()) return false;
  const std::string n = std::to_string(pages.size());
  if (!human) {
    if (page >= static_cast<long>(pages.size())) return false;
    *value = page < 0 ? "num_pages, " + n : pages[static_cast<std::size_t>(page)];
    return true;
  }
  if (page >= static_cast<long>(pages.size())) {
    *value = "Page requested does not exists. There are " + n +
             " pages available.\nAccess them with xattr~<page_num> (machine-readable mode) or "
             "xattr@<page_num> (human-readable mode).\nUse xattr@? or xattr~? to get extra info "
             "about the attribute";
  } else if (page < 0) {
    *value =
        "Access xattr with xattr~<page_num> (machine-readable mode) or  xattr@<page_num> "
        "(human-readable mode).\nPages available: " + n;
  } else {
    *value = "# Access page at idx: " + std::to_string(page) + ". Total num pages: " + n +
             " (access other pages: xattr~<page_num>, starting  with 0; number of pages "
             "available: xattr~?)\n" + pages[static_cast<std::size_t>(page)];
  }
  return true;
}

std::string list_xattrs(const Entry& e) {
  // As CVMFS_MAGIC_XATTRS_VISIBILITY=rootonly: names only on the repository root.
  if (e.ino != 1) return {};
  std::string names;
  for (const auto& [name, flavor] : magic_names()) {
    if (flavor == Flavor::kHidden || flavor == Flavor::kSymlink) continue;
    if (flavor == Flavor::kWithHash && (!e.has_hash || e.is_chunked())) continue;
    if (flavor == Flavor::kRegular && !e.is_regular()) continue;
    names += name;
    names.push_back('\0');
  }
  // The real 2.12 client returns its list twice over (72 entries for 36 names,
  // root_xattrs.json "listxattr_raw"); so does the emulation, byte for byte.
  return names + names;
}

std::string catalog_counters_csv(const Catalog& cat) {
  std::int64_t dirs = 0, regular = 0, symlinks = 0, chunked = 0, chunked_size = 0;
  std::int64_t chunks = 0, file_size = 0;
  for (const Entry& e : cat.entries()) {
    if (e.ino == 0) continue;
    if (e.is_dir()) ++dirs;  // the root included, as cvmfs2 counts it
    if (e.is_link()) ++symlinks;
    if (e.is_regular()) {
      ++regular;
      file_size += e.size;
      if (e.is_chunked()) {
        ++chunked;
        chunked_size += e.size;
        chunks += static_cast<std::int64_t>(e.chunks.size());
      }
    }
  }
  std::string s;
  auto row = [&s](const char* k, std::int64_t v) {
    s += k;
    s += ',';
    s += std::to_string(v);
    s += '\n';
  };
  row("chunked", chunked);
  row("chunked_size", chunked_size);
  row("chunks", chunks);
  row("dir", dirs);
  row("external", 0);
  row("external_file_size", 0);
  row("file_size", file_size);
  row("nested", 0);
  row("regular", regular);
  row("special", 0);
  row("symlink", symlinks);
  row("xattr", 0);
  return s;
}

void LogBuffer::add(const std::string& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.emplace_back(now_s(), msg);
  while (entries_.size() > kKeep) entries_.pop_front();
}

std::string LogBuffer::render() const {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [t, msg] : entries_) {
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%d %s %d %02d:%02d:%02d UTC] ", tm.tm_mday,
                  kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    out += buf;
    out += msg;
    out += '\n';
  }
  return out;
}

void CleanupTimes::add(std::int64_t t) {
  std::lock_guard<std::mutex> lock(mu_);
  times_.push_back(t);
  while (times_.size() > 100000) times_.pop_front();
}

std::int64_t CleanupTimes::since(std::int64_t t) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::int64_t n = 0;
  for (const std::int64_t x : times_) n += x >= t ? 1 : 0;
  return n;
}

}  // namespace simfs
