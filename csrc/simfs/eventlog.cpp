#include "eventlog.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <system_error>

#include "common/event_file.h"

namespace simfs {

std::int32_t EventLog::file_id(const std::string& path, std::int64_t size) {
  if (!enabled_) return -1;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = ids_.find(path);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<std::int32_t>(files_.size());
  ids_.emplace(path, id);
  files_.emplace_back(path, size);
  return id;
}

void EventLog::add(const cmio::Event& ev) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(ev);
}

void EventLog::write(const std::string& path, const std::string& meta_json) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    cmio::EventFileWriter w(tmp, meta_json);
    for (std::size_t i = 0; i < files_.size(); ++i) {
      w.write_file(static_cast<std::int32_t>(i), files_[i].second, 0, 0, files_[i].first);
    }
    w.write_events(events_.data(), events_.size());
    w.close();
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::system_error(e, std::generic_category(), path);
  }
}

}  // namespace simfs
