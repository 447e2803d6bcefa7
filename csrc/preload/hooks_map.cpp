// Mappings: mmap/mmap64, munmap, madvise.  A mapping of a tracked file is handed
// to the page-in sampler (sampler.cpp).
#include <sys/mman.h>

#include <cstdint>

#include "real.h"
#include "runtime.h"

using cmio::Event;
using cmio::Op;
using cmio::Source;
namespace pl = cmio::preload;

namespace cmio::preload {
std::int32_t map_find(const void* addr, std::size_t len, std::int64_t* file_off) noexcept;
}

namespace {

CMIO_REAL(void*, mmap, void*, size_t, int, int, int, off_t)
CMIO_REAL(void*, mmap64, void*, size_t, int, int, int, off_t)
CMIO_REAL(int, munmap, void*, size_t)
CMIO_REAL(int, madvise, void*, size_t, int)


template <class Call>
void* do_mmap(size_t len, int prot, int flags, int fd, off_t off, Call call) noexcept {
  std::int32_t fid = (flags & MAP_ANONYMOUS) ? -1 : pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t t0 = pl::raw_now();
  void* r = call();
  std::int64_t t1 = pl::raw_now();
  int err = r == MAP_FAILED ? errno : 0;
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kMmap, fid, fd, t0, t1, off, static_cast<std::int64_t>(len),
                 r == MAP_FAILED ? -1 : static_cast<std::int64_t>(reinterpret_cast<intptr_t>(r)),
                 err);
  e.aux = static_cast<std::int64_t>(flags) | (static_cast<std::int64_t>(prot) << 32);
  pl::record(e);
  if (r != MAP_FAILED) pl::map_added(r, len, fid, off, cmio::monotonic_ns());
  return r;
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return do_mmap(len, prot, flags, fd, off,
                 [&] { return r_mmap()(addr, len, prot, flags, fd, off); });
}
void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return do_mmap(len, prot, flags, fd, off,
                 [&] { return r_mmap64()(addr, len, prot, flags, fd, off); });
}

int munmap(void* addr, size_t len) {
  if (pl::maps_empty()) return r_munmap()(addr, len);
  std::int64_t foff = -1;
  std::int32_t fid;
  {
    pl::ErrnoGuard g;
    fid = pl::map_find(addr, len, &foff);
    if (fid >= 0) pl::map_removing(addr, len);  // last sample while the pages still exist
  }
  if (fid < 0) return r_munmap()(addr, len);
  std::int64_t t0 = pl::raw_now();
  int r = r_munmap()(addr, len);
  std::int64_t t1 = pl::raw_now();
  int err = r < 0 ? errno : 0;
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kMunmap, fid, -1, t0, t1, foff, static_cast<std::int64_t>(len), r, err);
  e.aux = static_cast<std::int64_t>(reinterpret_cast<intptr_t>(addr));
  pl::record(e);
  return r;
}

int madvise(void* addr, size_t len, int advice) {
  if (pl::maps_empty()) return r_madvise()(addr, len, advice);
  std::int64_t foff = -1;
  std::int32_t fid;
  {
    pl::ErrnoGuard g;
    fid = pl::map_find(addr, len, &foff);
  }
  if (fid < 0) return r_madvise()(addr, len, advice);
  std::int64_t t0 = pl::raw_now();
  int r = r_madvise()(addr, len, advice);
  std::int64_t t1 = pl::raw_now();
  int err = r < 0 ? errno : 0;
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kMadvise, fid, -1, t0, t1, foff, static_cast<std::int64_t>(len), r, err);
  e.aux = advice;
  pl::record(e);
  return r;
}

#pragma GCC visibility pop
}  // extern "C"
