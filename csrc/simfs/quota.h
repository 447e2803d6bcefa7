// The cache's LRU bookkeeping of the cvmfs-2.12 profile, as cvmfs2's PosixQuotaManager:
// an SQLite database `<cache>/cachedb` (same pragmas and schema: cache_catalog with
// sha1, size, acseq, path, type, pinned), maintained by a command thread that reads
// fixed-size commands from a pipe.  Inserts and touches are asynchronous (one pipe write
// for the caller) and processed in bunches of up to 32 in one transaction, flushed when
// the bunch is full or an immediate command (cleanup, status) arrives -- cvmfs2's
// MainCommandServer / ProcessCommandBunch pattern.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace simfs {

class QuotaManager {
 public:
  // Opens (creates) `<cache_dir>/cachedb`; rebuilds it from the cache directories when it
  // is empty.  Throws std::runtime_error with one line.
  explicit QuotaManager(const std::string& cache_dir);
  ~QuotaManager();  // processes what is pending, then stops
  QuotaManager(const QuotaManager&) = delete;
  QuotaManager& operator=(const QuotaManager&) = delete;

  // `key`: the object's hex hash plus its suffix (the cache file's name); `desc`: a path.
  void insert(const std::string& key, std::int64_t size, const std::string& desc);
  void pin(const std::string& key, std::int64_t size, const std::string& desc, bool catalog);
  void touch(const std::string& key);
  // Immediate: removes unpinned entries (least recently used first) until at most
  // `leave_bytes` remain; returns their cache file paths (the caller unlinks them).
  std::vector<std::string> cleanup(std::int64_t leave_bytes);
  std::int64_t transactions() const { return transactions_.load(); }
  std::int64_t gauge() const { return gauge_.load(); }

 private:
  enum Type : std::uint8_t { kTouch = 1, kInsert, kPin, kPinCatalog, kCleanup, kStop };
  static constexpr std::size_t kMaxDescription = 512;
  static constexpr unsigned kBunch = 32;
  struct Command {
    std::uint8_t type = 0;
    std::uint16_t desc_length = 0;
    std::int32_t return_fd = -1;
    std::int64_t size = 0;
    char key[48] = {};
  };
  struct Pending {
    Command cmd;
    std::string desc;
  };

  void send(Type type, const std::string& key, std::int64_t size, const std::string& desc);
  void run();
  void process_bunch(std::vector<Pending>* bunch);
  std::vector<std::string> do_cleanup(std::int64_t leave_bytes);
  void exec(const char* sql);
  void rebuild();

  std::string dir_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_new_ = nullptr;
  sqlite3_stmt* stmt_touch_ = nullptr;
  sqlite3_stmt* stmt_size_ = nullptr;
  sqlite3_stmt* stmt_list_ = nullptr;
  sqlite3_stmt* stmt_rm_ = nullptr;
  std::int64_t seq_ = 0;
  int pipe_[2] = {-1, -1};
  std::atomic<std::int64_t> transactions_{0};
  std::atomic<std::int64_t> gauge_{0};
  std::thread thread_;
};

}  // namespace simfs
