#include "quota.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace simfs {

namespace {

bool write_exact(int fd, const void* p, std::size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_exact(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// cvmfs2's file types in the cache database.
constexpr int kFileRegular = 0;
constexpr int kFileCatalog = 1;

}  // namespace

void QuotaManager::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error(dir_ + "/cachedb: " + msg);
  }
}

QuotaManager::QuotaManager(const std::string& cache_dir) : dir_(cache_dir) {
  const std::string path = dir_ + "/cachedb";
  if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw std::runtime_error(path + ": cannot open the cache database: " + msg);
  }
  try {
    // The same pragmas and schema as cvmfs2's PosixQuotaManager::InitDatabase.
    exec("PRAGMA synchronous=0; PRAGMA locking_mode=EXCLUSIVE; PRAGMA auto_vacuum=1; "
         "CREATE TABLE IF NOT EXISTS cache_catalog (sha1 TEXT, size INTEGER, acseq INTEGER, "
         "path TEXT, type INTEGER, pinned INTEGER, CONSTRAINT pk_cache_catalog PRIMARY KEY "
         "(sha1)); CREATE UNIQUE INDEX IF NOT EXISTS idx_cache_catalog_acseq ON cache_catalog "
         "(acseq); CREATE TABLE IF NOT EXISTS properties (key TEXT, value TEXT, CONSTRAINT "
         "pk_properties PRIMARY KEY(key)); UPDATE cache_catalog SET pinned=0; INSERT OR "
         "REPLACE INTO properties (key, value) VALUES ('schema', '1.0');");
    auto prep = [this](const char* sql, sqlite3_stmt** st) {
      if (sqlite3_prepare_v2(db_, sql, -1, st, nullptr) != SQLITE_OK) {
        throw std::runtime_error(dir_ + "/cachedb: " + sqlite3_errmsg(db_));
      }
    };
    prep("INSERT OR REPLACE INTO cache_catalog (sha1, size, acseq, path, type, pinned) "
         "VALUES (:sha1, :s, :seq, :p, :t, :pin);", &stmt_new_);
    prep("UPDATE cache_catalog SET acseq=:seq | (acseq&(1<<63)) WHERE sha1=:sha1;", &stmt_touch_);
    prep("SELECT size, pinned FROM cache_catalog WHERE sha1=:sha1;", &stmt_size_);
    prep("SELECT sha1, size, pinned FROM cache_catalog ORDER BY acseq;", &stmt_list_);
    prep("DELETE FROM cache_catalog WHERE sha1=:sha1;", &stmt_rm_);
    sqlite3_stmt* st = nullptr;
    prep("SELECT count(*), coalesce(sum(size), 0), coalesce(max(acseq & (~(1<<63))), 0) "
         "FROM cache_catalog;", &st);
    std::int64_t rows = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
      rows = sqlite3_column_int64(st, 0);
      gauge_ = sqlite3_column_int64(st, 1);
      seq_ = sqlite3_column_int64(st, 2) + 1;
    }
    sqlite3_finalize(st);
    if (rows == 0) rebuild();
    if (::pipe2(pipe_, O_CLOEXEC) != 0) {
      throw std::runtime_error(dir_ + ": cannot create the quota manager pipe");
    }
  } catch (...) {
    for (sqlite3_stmt* s : {stmt_new_, stmt_touch_, stmt_size_, stmt_list_, stmt_rm_}) {
      sqlite3_finalize(s);
    }
    sqlite3_close(db_);
    throw;
  }
  thread_ = std::thread([this] { run(); });
}

QuotaManager::~QuotaManager() {
  send(kStop, "", 0, "");
  thread_.join();
  for (sqlite3_stmt* s : {stmt_new_, stmt_touch_, stmt_size_, stmt_list_, stmt_rm_}) {
    sqlite3_finalize(s);
  }
  sqlite3_close(db_);
  ::close(pipe_[0]);
  ::close(pipe_[1]);
}

// An empty database next to a filled cache (first mount, or a cache filled by the fast
// profile) is rebuilt from the files, as cvmfs2 does on an empty cache catalog.
void QuotaManager::rebuild() {
  static const char kDigits[] = "0123456789abcdef";
  exec("BEGIN");
  for (int a = 0; a < 16; ++a) {
    for (int b = 0; b < 16; ++b) {
      const std::string sub = std::string(1, kDigits[a]) + kDigits[b];
      DIR* d = ::opendir((dir_ + "/" + sub).c_str());
      if (d == nullptr) continue;
      while (dirent* de = ::readdir(d)) {
        if (de->d_name[0] == '.') continue;
        struct stat st {};
        if (::stat((dir_ + "/" + sub + "/" + de->d_name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
          continue;
        }
        const std::string key = sub + de->d_name;
        sqlite3_bind_text(stmt_new_, 1, key.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt_new_, 2, st.st_size);
        sqlite3_bind_int64(stmt_new_, 3, seq_++);
        sqlite3_bind_text(stmt_new_, 4, "unknown (automatic rebuild)", -1, SQLITE_STATIC);
        sqlite3_bind_int64(stmt_new_, 5, kFileRegular);
        sqlite3_bind_int64(stmt_new_, 6, 0);
        if (sqlite3_step(stmt_new_) == SQLITE_DONE) gauge_ += st.st_size;
        sqlite3_reset(stmt_new_);
      }
      ::closedir(d);
    }
  }
  exec("COMMIT");
}

void QuotaManager::send(Type type, const std::string& key, std::int64_t size,
                        const std::string& desc) {
  // One write(2) of header + description: below PIPE_BUF, so atomic between threads.
  char buf[sizeof(Command) + kMaxDescription];
  Command cmd;
  cmd.type = type;
  cmd.size = size;
  std::strncpy(cmd.key, key.c_str(), sizeof cmd.key - 1);
  const std::size_t dl = std::min(desc.size(), kMaxDescription);
  cmd.desc_length = static_cast<std::uint16_t>(dl);
  std::memcpy(buf, &cmd, sizeof cmd);
  std::memcpy(buf + sizeof cmd, desc.data(), dl);
  (void)write_exact(pipe_[1], buf, sizeof cmd + dl);
}

void QuotaManager::insert(const std::string& key, std::int64_t size, const std::string& desc) {
  send(kInsert, key, size, desc);
}

void QuotaManager::pin(const std::string& key, std::int64_t size, const std::string& desc,
                       bool catalog) {
  send(catalog ? kPinCatalog : kPin, key, size, desc);
}

void QuotaManager::touch(const std::string& key) { send(kTouch, key, 0, ""); }

std::vector<std::string> QuotaManager::cleanup(std::int64_t leave_bytes) {
  int ret[2];
  if (::pipe2(ret, O_CLOEXEC) != 0) return {};
  char buf[sizeof(Command)];
  Command cmd;
  cmd.type = kCleanup;
  cmd.size = leave_bytes;
  cmd.return_fd = ret[1];
  std::memcpy(buf, &cmd, sizeof cmd);
  std::vector<std::string> paths;
  if (write_exact(pipe_[1], buf, sizeof cmd)) {
    std::uint32_t n = 0;
    while (read_exact(ret[0], &n, sizeof n) && n > 0 && n < 4096) {
      std::string p(n, '\0');
      if (!read_exact(ret[0], p.data(), n)) break;
      paths.push_back(std::move(p));
    }
  }
  ::close(ret[0]);
  ::close(ret[1]);
  return paths;
}

void QuotaManager::run() {
  std::vector<Pending> bunch;
  bunch.reserve(kBunch);
  while (true) {
    Pending p;
    if (!read_exact(pipe_[0], &p.cmd, sizeof p.cmd)) break;
    if (p.cmd.desc_length > 0) {
      p.desc.resize(p.cmd.desc_length);
      if (!read_exact(pipe_[0], p.desc.data(), p.desc.size())) break;
    }
    if (p.cmd.type == kStop) break;
    if (p.cmd.type == kCleanup) {
      // Immediate command: the pending bunch is committed first.
      process_bunch(&bunch);
      const std::vector<std::string> paths = do_cleanup(p.cmd.size);
      for (const std::string& path : paths) {
        const auto n = static_cast<std::uint32_t>(path.size());
        if (!write_exact(p.cmd.return_fd, &n, sizeof n) ||
            !write_exact(p.cmd.return_fd, path.data(), path.size())) {
          break;
        }
      }
      const std::uint32_t end = 0;
      (void)write_exact(p.cmd.return_fd, &end, sizeof end);
      continue;
    }
    bunch.push_back(std::move(p));
    if (bunch.size() == kBunch) process_bunch(&bunch);
  }
  process_bunch(&bunch);
}

void QuotaManager::process_bunch(std::vector<Pending>* bunch) {
  if (bunch->empty()) return;
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) {
    bunch->clear();
    return;
  }
  for (const Pending& p : *bunch) {
    const Command& c = p.cmd;
    if (c.type == kTouch) {
      sqlite3_bind_int64(stmt_touch_, 1, seq_++);
      sqlite3_bind_text(stmt_touch_, 2, c.key, -1, SQLITE_TRANSIENT);
      sqlite3_step(stmt_touch_);
      sqlite3_reset(stmt_touch_);
      continue;
    }
    // Insert or pin: is it already in (cvmfs2's Contains)?
    sqlite3_bind_text(stmt_size_, 1, c.key, -1, SQLITE_TRANSIENT);
    const bool exists = sqlite3_step(stmt_size_) == SQLITE_ROW;
    sqlite3_reset(stmt_size_);
    sqlite3_bind_text(stmt_new_, 1, c.key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt_new_, 2, c.size);
    sqlite3_bind_int64(stmt_new_, 3, seq_++);
    sqlite3_bind_text(stmt_new_, 4, p.desc.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt_new_, 5, c.type == kPinCatalog ? kFileCatalog : kFileRegular);
    sqlite3_bind_int64(stmt_new_, 6, (c.type == kPin || c.type == kPinCatalog) ? 1 : 0);
    if (sqlite3_step(stmt_new_) == SQLITE_DONE && !exists) gauge_ += c.size;
    sqlite3_reset(stmt_new_);
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) transactions_ += 1;
  bunch->clear();
}

std::vector<std::string> QuotaManager::do_cleanup(std::int64_t leave_bytes) {
  std::vector<std::string> keys;
  std::vector<std::int64_t> sizes;
  std::int64_t removing = 0;
  while (sqlite3_step(stmt_list_) == SQLITE_ROW) {
    if (gauge_.load() - removing <= leave_bytes) break;
    if (sqlite3_column_int64(stmt_list_, 2) != 0) continue;  // pinned (the catalog)
    const unsigned char* k = sqlite3_column_text(stmt_list_, 0);
    if (k == nullptr) continue;
    keys.emplace_back(reinterpret_cast<const char*>(k));
    sizes.push_back(sqlite3_column_int64(stmt_list_, 1));
    removing += sizes.back();
  }
  sqlite3_reset(stmt_list_);
  std::vector<std::string> paths;
  if (keys.empty()) return paths;
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return paths;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    sqlite3_bind_text(stmt_rm_, 1, keys[i].c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(stmt_rm_) == SQLITE_DONE) {
      gauge_ -= sizes[i];
      if (keys[i].size() > 2) paths.push_back(dir_ + "/" + keys[i].substr(0, 2) + "/" + keys[i].substr(2));
    }
    sqlite3_reset(stmt_rm_);
  }
  if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) transactions_ += 1;
  return paths;
}

}  // namespace simfs
