#include "xattrs.h"

#include <cstdio>
#include <map>

namespace simfs {

namespace {

constexpr std::size_t kMaxCharsPerPage = 40000;

enum class Flavor { kBase, kWithHash, kRegular };

const std::map<std::string, Flavor>& magic_names() {
  static const std::map<std::string, Flavor> names = {
      {"user.chunk_list", Flavor::kRegular},  {"user.chunks", Flavor::kRegular},
      {"user.cmio_counters", Flavor::kBase},  {"user.compression", Flavor::kRegular},
      {"user.external_file", Flavor::kRegular}, {"user.fqrn", Flavor::kBase},
      {"user.hash", Flavor::kWithHash},       {"user.hitrate", Flavor::kBase},
      {"user.host", Flavor::kBase},           {"user.ndownload", Flavor::kBase},
      {"user.nioerr", Flavor::kBase},         {"user.nopen", Flavor::kBase},
      {"user.pid", Flavor::kBase},            {"user.proxy", Flavor::kBase},
      {"user.revision", Flavor::kBase},       {"user.root_hash", Flavor::kBase},
      {"user.rx", Flavor::kBase},             {"user.speed", Flavor::kBase},
      {"user.timeout", Flavor::kBase},        {"user.timeout_direct", Flavor::kBase},
  };
  return names;
}

// The pages of one attribute's value; empty if the entry does not have it.
std::vector<std::string> pages_of(const XattrEnv& env, const Entry& e, const std::string& name) {
  const Counters& c = *env.counters;
  auto one = [](std::string v) { return std::vector<std::string>{std::move(v)}; };
  if (name == "user.chunk_list") return chunk_list_pages(e);
  if (name == "user.chunks") {
    if (!e.is_regular()) return {};
    return one(std::to_string(e.is_chunked() ? e.chunks.size() : 1));
  }
  if (name == "user.compression") {
    if (!e.is_regular()) return {};
    return one(e.compressed() ? "zlib" : "none");
  }
  if (name == "user.external_file") {
    if (!e.is_regular()) return {};
    return one("0");
  }
  if (name == "user.hash") {
    if (!e.has_hash) return {};
    return one(to_hex(e.hash));
  }
  if (name == "user.cmio_counters") return one(c.render());
  if (name == "user.fqrn") return one(env.fqrn);
  if (name == "user.host") return one(env.host);
  if (name == "user.proxy") return one(env.cfg->proxy.empty() ? "DIRECT" : env.cfg->proxy);
  if (name == "user.revision") return one(env.revision);
  if (name == "user.root_hash") return one(env.root_hash);
  if (name == "user.pid") return one(std::to_string(env.pid));
  if (name == "user.ndownload") return one(std::to_string(c.n_downloads.load()));
  if (name == "user.nioerr") return one(std::to_string(c.n_io_error.load()));
  if (name == "user.nopen") return one(std::to_string(c.n_fs_open.load()));
  if (name == "user.timeout" || name == "user.timeout_direct") {
    return one(std::to_string(env.cfg->timeout_ms / 1000));
  }
  if (name == "user.rx") return one(std::to_string(c.sz_transferred.load() / 1024));
  if (name == "user.speed") {
    const std::int64_t ms = c.transfer_time_ms.load();
    if (ms == 0) return one("n/a");
    return one(std::to_string((1000 * (c.sz_transferred.load() / 1024)) / ms));
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
  std::string out;
  for (const auto& [name, flavor] : magic_names()) {
    if (flavor == Flavor::kWithHash && !e.has_hash) continue;
    if (flavor == Flavor::kRegular && !e.is_regular()) continue;
    out += name;
    out.push_back('\0');
  }
  return out;
}

}  // namespace simfs
