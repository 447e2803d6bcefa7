// stdio: fopen/fopen64, fread, fclose.  glibc's stdio reaches the kernel through
// internal symbols that an interposer cannot see, so the stream calls themselves
// are the events (fread's offset is the stream position before the call).
#include <cstdint>
#include <cstdio>

#include "real.h"
#include "runtime.h"

using cmio::Event;
using cmio::Op;
using cmio::Source;
namespace pl = cmio::preload;

namespace {

CMIO_REAL(FILE*, fopen, const char*, const char*)
CMIO_REAL(FILE*, fopen64, const char*, const char*)
CMIO_REAL(size_t, fread, void*, size_t, size_t, FILE*)
CMIO_REAL(size_t, fread_unlocked, void*, size_t, size_t, FILE*)
CMIO_REAL(int, fclose, FILE*)

template <class Call>
FILE* do_fopen(const char* path, Call call) noexcept {
  if (!pl::path_may_match(path) || pl::in_tracer()) return call();
  pl::gate_wait(path);
  std::int64_t t0 = pl::raw_now();
  FILE* f = call();
  std::int64_t t1 = pl::raw_now();
  int err = f == nullptr ? errno : 0;
  pl::ErrnoGuard g;
  if (f == nullptr) {
    if (!pl::failed_path_matches(path)) return f;
    Event e = pl::call_event(Op::kFopen, -1, -1, t0, t1);
    e.result = -1;
    e.err = err;
    pl::record(e);
    return f;
  }
  int fd = fileno_unlocked(f);
  std::int32_t fid = pl::track_fd(fd);
  if (fid < 0) return f;
  pl::gate_wait(nullptr);
  Event e = pl::call_event(Op::kFopen, fid, fd, t0, t1);
  e.result = fd;
  pl::record(e);
  return f;
}

template <class Call>
size_t do_fread(size_t size, size_t n, FILE* f, Call call) noexcept {
  int fd = f == nullptr ? -1 : fileno_unlocked(f);
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t pos;
  {
    pl::ErrnoGuard g;
    pos = ftello(f);
  }
  std::int64_t t0 = pl::raw_now();
  size_t r = call();
  std::int64_t t1 = pl::raw_now();
  int err = (r < n && ferror_unlocked(f)) ? errno : 0;
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kFread, fid, fd, t0, t1);
  e.offset = pos;
  e.length = static_cast<std::int64_t>(size * n);
  e.result = static_cast<std::int64_t>(r * size);
  e.aux = static_cast<std::int64_t>(size);
  e.err = err;
  pl::record(e);
  return r;
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

FILE* fopen(const char* path, const char* mode) {
  return do_fopen(path, [&] { return r_fopen()(path, mode); });
}
FILE* fopen64(const char* path, const char* mode) {
  return do_fopen(path, [&] { return r_fopen64()(path, mode); });
}
size_t fread(void* p, size_t size, size_t n, FILE* f) {
  return do_fread(size, n, f, [&] { return r_fread()(p, size, n, f); });
}
size_t fread_unlocked(void* p, size_t size, size_t n, FILE* f) {
  return do_fread(size, n, f, [&] { return r_fread_unlocked()(p, size, n, f); });
}
int fclose(FILE* f) {
  int fd = f == nullptr ? -1 : fileno_unlocked(f);
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return r_fclose()(f);
  pl::untrack_fd(fd);
  std::int64_t t0 = pl::raw_now();
  int r = r_fclose()(f);
  std::int64_t t1 = pl::raw_now();
  int err = r != 0 ? errno : 0;
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kFclose, fid, fd, t0, t1);
  e.result = r;
  e.err = err;
  pl::record(e);
  return r;
}

#pragma GCC visibility pop
}  // extern "C"
