#include "catalog.h"

#include <sqlite3.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

namespace simfs {

std::string to_hex(const Sha1& h) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(40, '0');
  for (std::size_t i = 0; i < h.size(); ++i) {
    s[2 * i] = kDigits[h[i] >> 4];
    s[2 * i + 1] = kDigits[h[i] & 15];
  }
  return s;
}

namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};
struct StmtCloser {
  void operator()(sqlite3_stmt* st) const { sqlite3_finalize(st); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;
using Stmt = std::unique_ptr<sqlite3_stmt, StmtCloser>;

using Key = std::pair<std::int64_t, std::int64_t>;

Stmt prepare(sqlite3* db, const char* sql, const std::string& path) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    throw std::runtime_error(path + ": not a cmio-1 catalog: " + sqlite3_errmsg(db));
  }
  return Stmt(st);
}

// The whole text value, embedded NUL bytes included (so that a name with one is seen and
// refused, not silently cut at the NUL).
std::string column_text(sqlite3_stmt* st, int col) {
  const unsigned char* t = sqlite3_column_text(st, col);
  if (t == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(t),
                     static_cast<std::size_t>(sqlite3_column_bytes(st, col)));
}

// A catalog's names go into one-line error messages: control bytes are shown as \xNN.
std::string shown(const std::string& s) {
  std::string out;
  for (const unsigned char c : s.substr(0, 200)) {
    if (c < 0x20 || c == 0x7f) {
      static const char kDigits[] = "0123456789abcdef";
      out += "\\x";
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// A name the kernel can list and look up: not empty, ".", "..", no '/' or NUL, <= NAME_MAX.
bool valid_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.size() <= 255 &&
         n.find_first_of(std::string("/\0", 2)) == std::string::npos;
}

bool column_sha1(sqlite3_stmt* st, int col, Sha1* out) {
  if (sqlite3_column_type(st, col) != SQLITE_BLOB) return false;
  const void* b = sqlite3_column_blob(st, col);
  if (sqlite3_column_bytes(st, col) != 20 || b == nullptr) return false;
  std::memcpy(out->data(), b, 20);
  return true;
}

}  // namespace

Catalog::Catalog(const std::string& db_path) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(db_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK) throw std::runtime_error(db_path + ": cannot open catalog");

  {
    Stmt st = prepare(db.get(), "SELECT key, value FROM properties", db_path);
    while (sqlite3_step(st.get()) == SQLITE_ROW) {
      props_[column_text(st.get(), 0)] = column_text(st.get(), 1);
    }
  }

  std::map<Key, std::uint64_t> by_key;
  std::vector<Key> parents;
  entries_.emplace_back();  // inode 0 is not a file
  entries_.emplace_back();  // the root gets inode 1 (FUSE_ROOT_ID)
  parents.emplace_back(0, 0);
  parents.emplace_back(0, 0);
  bool have_root = false;
  {
    Stmt st = prepare(db.get(),
                      "SELECT md5path_1, md5path_2, parent_1, parent_2, hash, size, mode, mtime, "
                      "flags, name, symlink, uid, gid FROM catalog",
                      db_path);
    int step;
    while ((step = sqlite3_step(st.get())) == SQLITE_ROW) {
      Entry e;
      const Key key{sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1)};
      const Key parent{sqlite3_column_int64(st.get(), 2), sqlite3_column_int64(st.get(), 3)};
      e.has_hash = column_sha1(st.get(), 4, &e.hash);
      e.size = sqlite3_column_int64(st.get(), 5);
      e.mode = static_cast<std::uint32_t>(sqlite3_column_int64(st.get(), 6));
      e.mtime = sqlite3_column_int64(st.get(), 7);
      e.flags = sqlite3_column_int64(st.get(), 8);
      e.name = column_text(st.get(), 9);
      e.symlink = column_text(st.get(), 10);
      e.uid = static_cast<std::uint32_t>(sqlite3_column_int64(st.get(), 11));
      e.gid = static_cast<std::uint32_t>(sqlite3_column_int64(st.get(), 12));
      if (e.name.empty() && parent == Key{0, 0}) {
        if (have_root) throw std::runtime_error(db_path + ": catalog has two root entries");
        have_root = true;
        e.ino = 1;
        if (!by_key.emplace(key, 1).second) {
          throw std::runtime_error(db_path + ": the root entry's key is used twice");
        }
        entries_[1] = std::move(e);
        continue;
      }
      if (!valid_name(e.name)) {
        throw std::runtime_error(db_path + ": entry with an invalid name '" + shown(e.name) + "'");
      }
      if (e.is_regular() && e.size < 0) {
        throw std::runtime_error(db_path + ": file '" + shown(e.name) + "' has a negative size");
      }
      e.ino = entries_.size();
      if (!by_key.emplace(key, e.ino).second) {
        throw std::runtime_error(db_path + ": two entries with the key of '" + shown(e.name) + "'");
      }
      parents.push_back(parent);
      entries_.push_back(std::move(e));
    }
    if (step != SQLITE_DONE) throw std::runtime_error(db_path + ": catalog read failed");
  }
  if (!have_root) throw std::runtime_error(db_path + ": catalog has no root entry");
  if (!entries_[1].is_dir()) throw std::runtime_error(db_path + ": catalog root is not a directory");

  for (std::size_t i = 2; i < entries_.size(); ++i) {
    const auto it = by_key.find(parents[i]);
    if (it == by_key.end() || !entries_[it->second].is_dir()) {
      throw std::runtime_error(db_path + ": entry '" + shown(entries_[i].name) +
                               "' has no parent directory");
    }
    entries_[i].parent = it->second;
    if (!entries_[it->second].children.emplace(entries_[i].name, i).second) {
      throw std::runtime_error(db_path + ": two entries named '" + shown(entries_[i].name) +
                               "' in one directory");
    }
  }
  entries_[1].parent = 1;
  // Paths: parents may come after their children in the table, so resolve recursively.
  std::vector<bool> done(entries_.size(), false);
  done[1] = true;
  for (std::size_t i = 2; i < entries_.size(); ++i) {
    std::vector<std::size_t> stack;
    std::size_t j = i;
    while (!done[j]) {
      stack.push_back(j);
      j = entries_[j].parent;
      if (stack.size() > entries_.size()) throw std::runtime_error(db_path + ": catalog has a loop");
    }
    while (!stack.empty()) {
      const std::size_t k = stack.back();
      stack.pop_back();
      entries_[k].path = entries_[entries_[k].parent].path + "/" + entries_[k].name;
      done[k] = true;
    }
  }
  for (std::size_t i = 1; i < entries_.size(); ++i) by_path_.emplace(entries_[i].path, i);

  {
    Stmt st = prepare(db.get(),
                      "SELECT md5path_1, md5path_2, offset, size, hash FROM chunks "
                      "ORDER BY md5path_1, md5path_2, offset",
                      db_path);
    int step;
    while ((step = sqlite3_step(st.get())) == SQLITE_ROW) {
      const Key key{sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1)};
      const auto it = by_key.find(key);
      if (it == by_key.end()) throw std::runtime_error(db_path + ": chunk row for an unknown file");
      Chunk c;
      c.offset = sqlite3_column_int64(st.get(), 2);
      c.size = sqlite3_column_int64(st.get(), 3);
      if (!column_sha1(st.get(), 4, &c.hash)) {
        throw std::runtime_error(db_path + ": chunk row without a 20-byte hash");
      }
      entries_[it->second].chunks.push_back(c);
    }
    if (step != SQLITE_DONE) throw std::runtime_error(db_path + ": catalog read failed");
  }
  for (Entry& e : entries_) {
    if (e.ino == 0) continue;
    if ((e.flags & kFlagChunked) != 0) {
      std::int64_t expect = 0;
      for (const Chunk& c : e.chunks) {
        // (a size that would overflow the sum is as wrong as a gap)
        if (c.offset != expect || c.size <= 0 || c.size > INT64_MAX - expect) {
          throw std::runtime_error(db_path + ": chunks of '" + shown(e.path) +
                                   "' do not tile the file");
        }
        expect += c.size;
      }
      if (expect != e.size) {
        throw std::runtime_error(db_path + ": chunks of '" + shown(e.path) +
                                 "' do not add up to its size");
      }
    } else if (e.is_regular() && !e.has_hash) {
      throw std::runtime_error(db_path + ": file '" + shown(e.path) + "' has no hash");
    }
    if (e.is_regular()) total_bytes_ += e.size;
  }
}

}  // namespace simfs
