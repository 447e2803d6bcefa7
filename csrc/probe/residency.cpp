#include "probe/residency.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "probe/file.h"

#ifndef __NR_cachestat
#if defined(__x86_64__) || defined(__aarch64__)
#define __NR_cachestat 451
#endif
#endif

namespace cmio::probe {
namespace {

// Kernel ABI of cachestat(2) (include/uapi/linux/mman.h), spelt out because
// older libc headers lack it.
struct CachestatRange {
  std::uint64_t off;
  std::uint64_t len;
};
struct Cachestat {
  std::uint64_t nr_cache;
  std::uint64_t nr_dirty;
  std::uint64_t nr_writeback;
  std::uint64_t nr_evicted;
  std::uint64_t nr_recently_evicted;
};

// Returns false when the kernel has no cachestat (ENOSYS) so the caller falls back.
bool try_cachestat(int fd, Residency& r, const std::string& what) {
#ifdef __NR_cachestat
  CachestatRange range{0, 0};  // len 0: to end of file
  Cachestat cs{};
  if (::syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) return false;
    if (errno == EPERM || errno == EACCES) {
      // The kernel refuses page-cache state of files we may not write: say so, no number.
      r.method = "cachestat";
      r.trusted = false;
      return true;
    }
    throw_errno(errno, what + ": cachestat");
  }
  r.method = "cachestat";
  r.pages = static_cast<std::int64_t>(cs.nr_cache);
  // Both kinds are pages DONTNEED cannot drop yet: not written back.
  r.dirty = static_cast<std::int64_t>(cs.nr_dirty + cs.nr_writeback);
  return true;
#else
  (void)fd;
  (void)r;
  (void)what;
  return false;
#endif
}

void mincore_count(int fd, std::int64_t file_size, std::int64_t page_size, Residency& r,
                 const std::string& what) {
  r.method = "mincore";
  Mapping m(fd, static_cast<std::size_t>(file_size), what);
  std::vector<unsigned char> vec(static_cast<std::size_t>((file_size + page_size - 1) / page_size));
  if (::mincore(m.mutable_data(), m.size(), vec.data()) != 0) throw_errno(errno, what + ": mincore");
  std::int64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  r.pages = n;
}

}  // namespace

std::vector<bool> resident_pages(int fd, std::int64_t file_size, std::int64_t page_size,
                                 const std::string& what) {
  Mapping m(fd, static_cast<std::size_t>(file_size), what);
  std::vector<unsigned char> vec(static_cast<std::size_t>((file_size + page_size - 1) / page_size));
  if (::mincore(m.mutable_data(), m.size(), vec.data()) != 0) throw_errno(errno, what + ": mincore");
  std::vector<bool> out(vec.size());
  for (std::size_t i = 0; i < vec.size(); ++i) out[i] = (vec[i] & 1) != 0;
  return out;
}

bool residency_trusted(const struct stat& st, const std::string& path) {
  const uid_t euid = ::geteuid();
  if (euid == 0 || st.st_uid == euid) return true;
  return ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) == 0;
}

Residency measure_residency(int fd, std::int64_t file_size, std::int64_t page_size, bool trusted,
                            const std::string& what, bool use_mincore) {
  Residency r;
  r.trusted = trusted;
  r.total_pages = (file_size + page_size - 1) / page_size;
  if (use_mincore || !try_cachestat(fd, r, what)) mincore_count(fd, file_size, page_size, r, what);
  if (!trusted || !r.trusted) {
    r.trusted = false;
    r.pages = -1;
    r.dirty = -1;
  }
  return r;
}

}  // namespace cmio::probe
