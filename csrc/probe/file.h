// RAII owners of a file descriptor and of a mapping; every syscall checked.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <system_error>
#include <utility>

#include "common/unique_fd.h"

namespace cmio::probe {

// An OS error of the probe: errno plus a message naming the file.
class OsError : public std::system_error {
 public:
  OsError(int err, const std::string& what)
      : std::system_error(err, std::generic_category(), what), what_(what) {}
  const std::string& where() const noexcept { return what_; }

 private:
  std::string what_;
};

[[noreturn]] inline void throw_errno(int err, const std::string& what) { throw OsError(err, what); }

using Fd = cmio::UniqueFd;

class Mapping {
 public:
  Mapping() = default;
  // Read-only shared mapping of the first `length` bytes of `fd`.
  Mapping(int fd, std::size_t length, const std::string& what) : len_(length) {
    void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_errno(errno, what + ": mmap");
    addr_ = static_cast<unsigned char*>(p);
  }
  ~Mapping() { reset(); }
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      len_ = std::exchange(o.len_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  const unsigned char* data() const noexcept { return addr_; }
  unsigned char* mutable_data() const noexcept { return addr_; }
  std::size_t size() const noexcept { return len_; }
  void reset() noexcept {
    // munmap of a range we mapped cannot fail short of a bug; nothing to recover.
    if (addr_ != nullptr) (void)::munmap(addr_, len_);
    addr_ = nullptr;
    len_ = 0;
  }

 private:
  unsigned char* addr_ = nullptr;
  std::size_t len_ = 0;
};

}  // namespace cmio::probe
