#include "common/event_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

namespace cmio {

EventFileWriter::EventFileWriter(const std::string& path, std::string_view metadata_json)
    : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), path);
  unsigned char hdr[24];
  std::memcpy(hdr, kEventFileMagic, 8);
  const std::uint32_t version = kEventVersion;
  const std::uint32_t recsize = sizeof(Event);
  const std::uint64_t jlen = metadata_json.size();
  std::memcpy(hdr + 8, &version, 4);
  std::memcpy(hdr + 12, &recsize, 4);
  std::memcpy(hdr + 16, &jlen, 8);
  write_all(hdr, sizeof hdr);
  write_all(metadata_json.data(), metadata_json.size());
}

EventFileWriter::~EventFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void EventFileWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw std::system_error(errno, std::generic_category(), path_);
}

void EventFileWriter::write_all(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), path_);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void EventFileWriter::write_events(const Event* events, std::size_t n) {
  // Frames carry a u32 length: split very large batches.
  constexpr std::size_t kMaxPerFrame = (1u << 30) / sizeof(Event);
  while (n > 0) {
    const std::size_t k = n < kMaxPerFrame ? n : kMaxPerFrame;
    unsigned char fh[kFrameHeaderSize];
    put_frame_header(fh, kFrameEvents, static_cast<std::uint32_t>(k * sizeof(Event)));
    write_all(fh, sizeof fh);
    write_all(events, k * sizeof(Event));
    events += k;
    n -= k;
  }
}

void EventFileWriter::write_file(std::int32_t file_id, std::int64_t size, std::uint64_t dev,
                                 std::uint64_t ino, std::string_view path) {
  std::vector<unsigned char> buf(kFrameHeaderSize + kFileFrameFixed + path.size());
  put_frame_header(buf.data(), kFrameFile, static_cast<std::uint32_t>(kFileFrameFixed + path.size()));
  unsigned char* p = buf.data() + kFrameHeaderSize;
  const std::uint32_t zero = 0;
  std::memcpy(p, &file_id, 4);
  std::memcpy(p + 4, &zero, 4);
  std::memcpy(p + 8, &size, 8);
  std::memcpy(p + 16, &dev, 8);
  std::memcpy(p + 24, &ino, 8);
  std::memcpy(p + 32, path.data(), path.size());
  write_all(buf.data(), buf.size());
}

void EventFileWriter::write_meta(std::string_view json) {
  unsigned char fh[kFrameHeaderSize];
  put_frame_header(fh, kFrameMeta, static_cast<std::uint32_t>(json.size()));
  write_all(fh, sizeof fh);
  write_all(json.data(), json.size());
}

}  // namespace cmio
