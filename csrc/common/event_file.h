// Writer for the event file format (docs/event-format.md).
//
//   header:  "CMIOEVT1" | u32 version | u32 record size | u64 json length | json
//   frames:  u32 type | u32 payload length | payload
//            type 1 EVENTS  payload = n * 80-byte Event records
//            type 2 FILE    payload = i32 file_id | u32 0 | i64 size | u64 dev | u64 ino | path
//            type 3 META    payload = JSON object merged into the header metadata
//
// The frame helpers below do no allocation so that async-signal-safe writers
// (the preload tracer) can encode frames into their own buffers.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/event.h"

namespace cmio {

inline constexpr char kEventFileMagic[8] = {'C', 'M', 'I', 'O', 'E', 'V', 'T', '1'};
inline constexpr std::uint32_t kFrameEvents = 1;
inline constexpr std::uint32_t kFrameFile = 2;
inline constexpr std::uint32_t kFrameMeta = 3;
inline constexpr std::size_t kFrameHeaderSize = 8;
inline constexpr std::size_t kFileFrameFixed = 32;

inline void put_frame_header(unsigned char* out, std::uint32_t type, std::uint32_t len) noexcept {
  std::memcpy(out, &type, 4);
  std::memcpy(out + 4, &len, 4);
}

// Owns a file descriptor; every write is checked and retried on EINTR/short writes.
class EventFileWriter {
 public:
  // Creates (truncates) `path` and writes the header; throws std::system_error.
  EventFileWriter(const std::string& path, std::string_view metadata_json);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void write_events(const Event* events, std::size_t n);
  void write_file(std::int32_t file_id, std::int64_t size, std::uint64_t dev, std::uint64_t ino,
                  std::string_view path);
  void write_meta(std::string_view json);
  void close();

 private:
  void write_all(const void* data, std::size_t n);
  int fd_ = -1;
  std::string path_;
};

}  // namespace cmio
