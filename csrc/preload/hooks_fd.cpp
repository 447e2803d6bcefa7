// Descriptor calls: open family, close, read family, lseek, fstat/statx, dup family,
// posix_fadvise, readahead, exec and exit.  One event per call on a tracked fd.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstring>

#include "real.h"
#include "runtime.h"

using cmio::Event;
using cmio::Op;
using cmio::Source;
namespace pl = cmio::preload;

static_assert(sizeof(off_t) == 8, "the tracer needs a 64-bit off_t (LP64)");

namespace {


inline int err_of(long r) noexcept { return r < 0 ? errno : 0; }

CMIO_REAL(int, open, const char*, int, ...)
CMIO_REAL(int, open64, const char*, int, ...)
CMIO_REAL(int, openat, int, const char*, int, ...)
CMIO_REAL(int, openat64, int, const char*, int, ...)
CMIO_REAL(int, __open_2, const char*, int)
CMIO_REAL(int, __open64_2, const char*, int)
CMIO_REAL(int, __openat_2, int, const char*, int)
CMIO_REAL(int, __openat64_2, int, const char*, int)
CMIO_REAL(int, creat, const char*, mode_t)
CMIO_REAL(int, creat64, const char*, mode_t)
CMIO_REAL(int, close, int)
CMIO_REAL(ssize_t, read, int, void*, size_t)
CMIO_REAL(ssize_t, __read_chk, int, void*, size_t, size_t)
CMIO_REAL(ssize_t, pread, int, void*, size_t, off_t)
CMIO_REAL(ssize_t, pread64, int, void*, size_t, off_t)
CMIO_REAL(ssize_t, __pread_chk, int, void*, size_t, off_t, size_t)
CMIO_REAL(ssize_t, __pread64_chk, int, void*, size_t, off_t, size_t)
CMIO_REAL(ssize_t, readv, int, const struct iovec*, int)
CMIO_REAL(ssize_t, preadv, int, const struct iovec*, int, off_t)
CMIO_REAL(ssize_t, preadv64, int, const struct iovec*, int, off_t)
CMIO_REAL(ssize_t, preadv2, int, const struct iovec*, int, off_t, int)
CMIO_REAL(ssize_t, preadv64v2, int, const struct iovec*, int, off_t, int)
CMIO_REAL(off_t, lseek, int, off_t, int)
CMIO_REAL(off_t, lseek64, int, off_t, int)
CMIO_REAL(int, fstat, int, struct stat*)
CMIO_REAL(int, fstat64, int, struct stat64*)
CMIO_REAL(int, __fxstat, int, int, struct stat*)
CMIO_REAL(int, __fxstat64, int, int, struct stat64*)
CMIO_REAL(int, fstatat, int, const char*, struct stat*, int)
CMIO_REAL(int, fstatat64, int, const char*, struct stat64*, int)
CMIO_REAL(int, statx, int, const char*, int, unsigned, struct statx*)
CMIO_REAL(int, dup, int)
CMIO_REAL(int, dup2, int, int)
CMIO_REAL(int, dup3, int, int, int)
CMIO_REAL(int, fcntl, int, int, ...)
CMIO_REAL(int, fcntl64, int, int, ...)
CMIO_REAL(int, posix_fadvise, int, off_t, off_t, int)
CMIO_REAL(int, posix_fadvise64, int, off_t, off_t, int)
CMIO_REAL(ssize_t, readahead, int, off64_t, size_t)
CMIO_REAL(int, execve, const char*, char* const*, char* const*)
CMIO_REAL(int, execv, const char*, char* const*)
CMIO_REAL(int, execvp, const char*, char* const*)
CMIO_REAL(int, execvpe, const char*, char* const*, char* const*)
CMIO_REAL(int, execveat, int, const char*, char* const*, char* const*, int)
CMIO_REAL(int, fexecve, int, char* const*, char* const*)
CMIO_REAL(void, _exit, int)
CMIO_REAL(void, _Exit, int)
CMIO_REAL(pid_t, fork, void)

// Runs an untraced call that returns a new descriptor.  A tracking entry left for that
// number is stale (the descriptor was closed behind our back, or dup2 replaced it): drop it.
template <class Call>
int new_fd_untraced(Call call) noexcept {
  const int fd = call();
  if (fd >= 0 && pl::fd_file(fd) >= 0) {
    pl::ErrnoGuard g;
    pl::untrack_fd(fd);
  }
  return fd;
}

// -------------------------------------------------------------- open family
template <class Call>
int do_open(int dirfd, const char* path, int flags, Call call) noexcept {
  if (!pl::path_may_match(path) || pl::in_tracer()) return new_fd_untraced(call);
  pl::gate_wait(path);
  std::int64_t t0 = pl::raw_now();
  int fd = call();
  std::int64_t t1 = pl::raw_now();
  int err = err_of(fd);
  pl::ErrnoGuard g;
  std::int32_t fid = -1;
  if (fd >= 0) {
    fid = pl::track_fd(fd);
    if (fid < 0) return fd;  // not a regular file under a traced prefix
    pl::gate_wait(nullptr);   // matched through a symlink or a relative path
  } else if (!pl::failed_path_matches(path)) {
    return fd;
  }
  Event e = pl::call_event(Op::kOpen, fid, fd, t0, t1, -1, 0, fd, err);
  e.aux = flags;
  (void)dirfd;
  pl::record(e);
  return fd;
}

inline bool needs_mode(int flags) noexcept {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

}  // namespace

#define CMIO_VA_MODE(flags)       \
  mode_t mode = 0;                \
  if (needs_mode(flags)) {        \
    va_list ap;                   \
    va_start(ap, flags);          \
    mode = va_arg(ap, mode_t);    \
    va_end(ap);                   \
  }

extern "C" {
#pragma GCC visibility push(default)

int open(const char* path, int flags, ...) {
  CMIO_VA_MODE(flags)
  return do_open(AT_FDCWD, path, flags, [&] { return r_open()(path, flags, mode); });
}
int open64(const char* path, int flags, ...) {
  CMIO_VA_MODE(flags)
  return do_open(AT_FDCWD, path, flags, [&] { return r_open64()(path, flags, mode); });
}
int openat(int dirfd, const char* path, int flags, ...) {
  CMIO_VA_MODE(flags)
  return do_open(dirfd, path, flags, [&] { return r_openat()(dirfd, path, flags, mode); });
}
int openat64(int dirfd, const char* path, int flags, ...) {
  CMIO_VA_MODE(flags)
  return do_open(dirfd, path, flags, [&] { return r_openat64()(dirfd, path, flags, mode); });
}
int __open_2(const char* path, int flags) {
  return do_open(AT_FDCWD, path, flags, [&] { return r___open_2()(path, flags); });
}
int __open64_2(const char* path, int flags) {
  return do_open(AT_FDCWD, path, flags, [&] { return r___open64_2()(path, flags); });
}
int __openat_2(int dirfd, const char* path, int flags) {
  return do_open(dirfd, path, flags, [&] { return r___openat_2()(dirfd, path, flags); });
}
int __openat64_2(int dirfd, const char* path, int flags) {
  return do_open(dirfd, path, flags, [&] { return r___openat64_2()(dirfd, path, flags); });
}
int creat(const char* path, mode_t mode) {
  return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC,
                 [&] { return r_creat()(path, mode); });
}
int creat64(const char* path, mode_t mode) {
  return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC,
                 [&] { return r_creat64()(path, mode); });
}

int close(int fd) {
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return r_close()(fd);
  pl::untrack_fd(fd);  // before the real close: the number may be reused at once
  std::int64_t t0 = pl::raw_now();
  int r = r_close()(fd);
  std::int64_t t1 = pl::raw_now();
  int err = err_of(r);
  pl::ErrnoGuard g;
  pl::record(pl::call_event(Op::kClose, fid, fd, t0, t1, -1, 0, r, err));
  return r;
}

#pragma GCC visibility pop
}  // extern "C"

// -------------------------------------------------------------- read family
namespace {

// Times a read-family call on a tracked descriptor and records it.  `offset_of(r)` gives the
// file offset, evaluated after the call: read()-like calls advance the tracked position.
template <class Call, class OffsetOf>
ssize_t traced_read(Op op, int fd, std::int64_t len, Call call, OffsetOf offset_of) noexcept {
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t t0 = pl::raw_now();
  ssize_t r = call();
  std::int64_t t1 = pl::raw_now();
  int err = err_of(r);
  pl::ErrnoGuard g;
  pl::record(pl::call_event(op, fid, fd, t0, t1, offset_of(r), len, r, err));
  return r;
}

// read()-like call at the tracked position of the descriptor.
template <class Call>
ssize_t at_pos(Op op, int fd, std::int64_t len, Call call) noexcept {
  return traced_read(op, fd, len, call,
                     [fd](ssize_t r) noexcept { return pl::fd_pos_add(fd, r > 0 ? r : 0); });
}

template <class Call>
ssize_t at_off(Op op, int fd, std::int64_t off, std::int64_t len, Call call) noexcept {
  return traced_read(op, fd, len, call, [off](ssize_t) noexcept { return off; });
}

std::int64_t iov_len(const struct iovec* iov, int n) noexcept {
  std::int64_t s = 0;
  for (int i = 0; i < n && iov != nullptr; ++i) s += static_cast<std::int64_t>(iov[i].iov_len);
  return s;
}

template <class Call>
ssize_t preadv_any(int fd, const struct iovec* iov, int n, off_t off, Call call) noexcept {
  if (off == -1) return at_pos(Op::kPreadv, fd, iov_len(iov, n), call);  // preadv2 at position
  return at_off(Op::kPreadv, fd, off, iov_len(iov, n), call);
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

ssize_t read(int fd, void* buf, size_t n) {
  return at_pos(Op::kRead, fd, static_cast<std::int64_t>(n),
                [&] { return r_read()(fd, buf, n); });
}
ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  return at_pos(Op::kRead, fd, static_cast<std::int64_t>(n),
                [&] { return r___read_chk()(fd, buf, n, buflen); });
}
ssize_t pread(int fd, void* buf, size_t n, off_t off) {
  return at_off(Op::kPread, fd, off, static_cast<std::int64_t>(n),
                [&] { return r_pread()(fd, buf, n, off); });
}
ssize_t pread64(int fd, void* buf, size_t n, off_t off) {
  return at_off(Op::kPread, fd, off, static_cast<std::int64_t>(n),
                [&] { return r_pread64()(fd, buf, n, off); });
}
ssize_t __pread_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
  return at_off(Op::kPread, fd, off, static_cast<std::int64_t>(n),
                [&] { return r___pread_chk()(fd, buf, n, off, buflen); });
}
ssize_t __pread64_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
  return at_off(Op::kPread, fd, off, static_cast<std::int64_t>(n),
                [&] { return r___pread64_chk()(fd, buf, n, off, buflen); });
}
ssize_t readv(int fd, const struct iovec* iov, int n) {
  return at_pos(Op::kReadv, fd, iov_len(iov, n), [&] { return r_readv()(fd, iov, n); });
}
ssize_t preadv(int fd, const struct iovec* iov, int n, off_t off) {
  return at_off(Op::kPreadv, fd, off, iov_len(iov, n),
                [&] { return r_preadv()(fd, iov, n, off); });
}
ssize_t preadv64(int fd, const struct iovec* iov, int n, off_t off) {
  return at_off(Op::kPreadv, fd, off, iov_len(iov, n),
                [&] { return r_preadv64()(fd, iov, n, off); });
}
ssize_t preadv2(int fd, const struct iovec* iov, int n, off_t off, int flags) {
  return preadv_any(fd, iov, n, off, [&] { return r_preadv2()(fd, iov, n, off, flags); });
}
ssize_t preadv64v2(int fd, const struct iovec* iov, int n, off_t off, int flags) {
  return preadv_any(fd, iov, n, off, [&] { return r_preadv64v2()(fd, iov, n, off, flags); });
}

#pragma GCC visibility pop
}  // extern "C"

namespace {
template <class Call>
off_t do_lseek(int fd, off_t off, int whence, Call call) noexcept {
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t t0 = pl::raw_now();
  off_t r = call();
  std::int64_t t1 = pl::raw_now();
  int err = err_of(r);
  pl::ErrnoGuard g;
  if (r >= 0) pl::fd_pos_set(fd, r);
  Event e = pl::call_event(Op::kLseek, fid, fd, t0, t1, off, 0, r, err);
  e.aux = whence;
  pl::record(e);
  return r;
}

template <class Call>
int do_stat(int fd, Call call) noexcept {
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t t0 = pl::raw_now();
  int r = call();
  std::int64_t t1 = pl::raw_now();
  int err = err_of(r);
  pl::ErrnoGuard g;
  pl::record(pl::call_event(Op::kStat, fid, fd, t0, t1, -1, 0, r, err));
  return r;
}

inline bool empty_path(const char* p, int flags) noexcept {
  return (flags & AT_EMPTY_PATH) != 0 && p != nullptr && p[0] == 0;
}

template <class Call>
int do_dup(int oldfd, long cmd, Call call) noexcept {
  std::int32_t fid = pl::fd_file(oldfd);
  if (fid < 0) return new_fd_untraced(call);
  std::int64_t t0 = pl::raw_now();
  int r = call();
  std::int64_t t1 = pl::raw_now();
  int err = err_of(r);
  pl::ErrnoGuard g;
  if (r >= 0) pl::dup_fd(oldfd, r);
  Event e = pl::call_event(Op::kDup, fid, oldfd, t0, t1, -1, 0, r, err);
  e.aux = cmd;
  pl::record(e);
  return r;
}

template <class Call>
int do_fadvise(int fd, off_t off, off_t len, int advice, Call call) noexcept {
  std::int32_t fid = pl::fd_file(fd);
  if (fid < 0) return call();
  std::int64_t t0 = pl::raw_now();
  int r = call();  // returns the error number, does not set errno
  std::int64_t t1 = pl::raw_now();
  pl::ErrnoGuard g;
  Event e = pl::call_event(Op::kFadvise, fid, fd, t0, t1, off, len, r, r);
  e.aux = advice;
  pl::record(e);
  return r;
}

template <class Call>
int do_fcntl(int fd, int cmd, Call call) noexcept {
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) return do_dup(fd, cmd, call);
  return call();
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

off_t lseek(int fd, off_t off, int whence) {
  return do_lseek(fd, off, whence, [&] { return r_lseek()(fd, off, whence); });
}
off_t lseek64(int fd, off_t off, int whence) {
  return do_lseek(fd, off, whence, [&] { return r_lseek64()(fd, off, whence); });
}
int fstat(int fd, struct stat* sb) {
  return do_stat(fd, [&] { return r_fstat()(fd, sb); });
}
int fstat64(int fd, struct stat64* sb) {
  return do_stat(fd, [&] { return r_fstat64()(fd, sb); });
}
int __fxstat(int ver, int fd, struct stat* sb) {
  return do_stat(fd, [&] { return r___fxstat()(ver, fd, sb); });
}
int __fxstat64(int ver, int fd, struct stat64* sb) {
  return do_stat(fd, [&] { return r___fxstat64()(ver, fd, sb); });
}
int fstatat(int dirfd, const char* path, struct stat* sb, int flags) {
  if (!empty_path(path, flags)) return r_fstatat()(dirfd, path, sb, flags);
  return do_stat(dirfd, [&] { return r_fstatat()(dirfd, path, sb, flags); });
}
int fstatat64(int dirfd, const char* path, struct stat64* sb, int flags) {
  if (!empty_path(path, flags)) return r_fstatat64()(dirfd, path, sb, flags);
  return do_stat(dirfd, [&] { return r_fstatat64()(dirfd, path, sb, flags); });
}
int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* sx) {
  if (!empty_path(path, flags)) return r_statx()(dirfd, path, flags, mask, sx);
  return do_stat(dirfd, [&] { return r_statx()(dirfd, path, flags, mask, sx); });
}

int dup(int fd) {
  return do_dup(fd, 0, [&] { return r_dup()(fd); });
}
int dup2(int fd, int nfd) {
  return do_dup(fd, 0, [&] { return r_dup2()(fd, nfd); });
}
int dup3(int fd, int nfd, int flags) {
  return do_dup(fd, 0, [&] { return r_dup3()(fd, nfd, flags); });
}
int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);  // every fcntl argument travels in one register
  va_end(ap);
  return do_fcntl(fd, cmd, [&] { return r_fcntl()(fd, cmd, arg); });
}
int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  long arg = va_arg(ap, long);
  va_end(ap);
  return do_fcntl(fd, cmd, [&] { return r_fcntl64()(fd, cmd, arg); });
}

int posix_fadvise(int fd, off_t off, off_t len, int advice) {
  return do_fadvise(fd, off, len, advice,
                    [&] { return r_posix_fadvise()(fd, off, len, advice); });
}
int posix_fadvise64(int fd, off_t off, off_t len, int advice) {
  return do_fadvise(fd, off, len, advice,
                    [&] { return r_posix_fadvise64()(fd, off, len, advice); });
}
ssize_t readahead(int fd, off64_t off, size_t count) {
  return at_off(Op::kReadahead, fd, off, static_cast<std::int64_t>(count),
                [&] { return r_readahead()(fd, off, count); });
}

// exec replaces the image: write out what every thread buffered first.  The new
// image loads the tracer again from the inherited LD_PRELOAD.
int execve(const char* path, char* const argv[], char* const envp[]) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_execve()(path, argv, envp);
}
int execv(const char* path, char* const argv[]) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_execv()(path, argv);
}
int execvp(const char* file, char* const argv[]) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_execvp()(file, argv);
}
int execvpe(const char* file, char* const argv[], char* const envp[]) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_execvpe()(file, argv, envp);
}
int execveat(int dirfd, const char* path, char* const argv[], char* const envp[], int flags) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_execveat()(dirfd, path, argv, envp, flags);
}
int fexecve(int fd, char* const argv[], char* const envp[]) {
  {
    pl::ErrnoGuard g;
    pl::sample_all_final();
    pl::flush_all();
  }
  return r_fexecve()(fd, argv, envp);
}

// _exit skips atexit handlers and destructors: flush here.
void _exit(int status) {
  pl::sample_all_final();
  pl::flush_all();
  r__exit()(status);
  __builtin_unreachable();
}
void _Exit(int status) {
  pl::sample_all_final();
  pl::flush_all();
  r__Exit()(status);
  __builtin_unreachable();
}

// vfork shares the parent's memory (and so its trace buffers) until exec: run a
// real fork instead, which POSIX allows as an implementation of vfork.
pid_t vfork(void) { return r_fork()(); }

#pragma GCC visibility pop
}  // extern "C"
