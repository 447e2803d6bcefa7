// In-memory log of FUSE requests and object fetches, written as an event file
// (docs/event-format.md) when the mount ends.  Buffered: the hot path only appends.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/event.h"

namespace simfs {

class EventLog {
 public:
  explicit EventLog(bool enabled) : enabled_(enabled) {}
  bool enabled() const { return enabled_; }

  // File-table id for a repository path or an object path (assigned on first use).
  std::int32_t file_id(const std::string& path, std::int64_t size);
  void add(const cmio::Event& ev);
  // Writes everything to `path` atomically (temp file + rename); throws std::system_error.
  void write(const std::string& path, const std::string& meta_json);

 private:
  bool enabled_;
  std::mutex mu_;
  std::vector<cmio::Event> events_;
  std::map<std::string, std::int32_t> ids_;
  std::vector<std::pair<std::string, std::int64_t>> files_;
};

}  // namespace simfs
