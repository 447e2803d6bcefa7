// Shared state of the LD_PRELOAD tracer (libcmio_preload.so).
//
// Rules for everything in this directory: no C++ runtime allocation, no locks
// that can deadlock, no stdio in the hot path, errno preserved on every path.
// Every state is a fixed-size POD array; writes to the trace file are single
// write() calls of whole frames on an O_APPEND descriptor (docs/trace-format.md).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "common/event.h"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace cmio::preload {

inline constexpr int kMaxFd = 1 << 16;        // descriptors above this are not traced
inline constexpr int kMaxDesc = 4096;         // open file descriptions traced at once
inline constexpr int kMaxFiles = 8192;        // distinct files per process
inline constexpr int kMaxThreads = 1024;      // thread buffers registered at once
inline constexpr int kMaxMaps = 4096;         // tracked mappings at once
inline constexpr int kBufEvents = 512;        // events per thread buffer (one frame)

// Saves errno on construction and restores it on destruction.
class ErrnoGuard {
 public:
  ErrnoGuard() noexcept : saved_(errno) {}
  ~ErrnoGuard() { errno = saved_; }
  ErrnoGuard(const ErrnoGuard&) = delete;
  ErrnoGuard& operator=(const ErrnoGuard&) = delete;

 private:
  int saved_;
};

// Hot-path timestamps.  clock_gettime costs 40-100 ns on a VM, rdtsc ~25 ns: the
// hooks stamp events with raw TSC ticks (marked by minflt == kRawTicks) and the
// buffer is converted to CLOCK_MONOTONIC ns when it is written out, by linear
// interpolation between two (TSC, CLOCK_MONOTONIC) anchors that enclose the
// events (invariant TSC assumed, as the kernel's own tsc clocksource does).
#if defined(__x86_64__)
inline constexpr bool kUseTsc = true;
inline std::int64_t raw_now() noexcept { return static_cast<std::int64_t>(__rdtsc()); }
#else
inline constexpr bool kUseTsc = false;
inline std::int64_t raw_now() noexcept { return monotonic_ns(); }
#endif
inline constexpr std::int32_t kRawTicks = -2;

// True once the constructor ran and a trace file is open.
bool active() noexcept;

// Current pid / tid (cached; refreshed after fork).
std::int32_t cur_pid() noexcept;
std::int32_t cur_tid() noexcept;

// One traced call as an event, stamped in raw_now() units (converted at flush).
// Defaults are blank_event's: no offset, nothing asked or returned, no error.
inline Event call_event(Op op, std::int32_t fid, int fd, std::int64_t t0, std::int64_t t1,
                        std::int64_t off = -1, std::int64_t len = 0, std::int64_t res = 0,
                        int err = 0) noexcept {
  Event e = blank_event(Source::kPreload, op);
  e.t_start_ns = t0;
  e.duration_ns = t1 - t0;
  e.offset = off;
  e.length = len;
  e.result = res;
  e.pid = cur_pid();
  e.tid = cur_tid();
  e.file_id = fid;
  e.fd = fd;
  e.err = err;
  if (kUseTsc) e.minflt = kRawTicks;
  return e;
}

// Appends one event to this thread's buffer (flushes it when full).
void record(const Event& e) noexcept;

// Flushes every registered thread buffer (used at exit, exec, fork).
void flush_all() noexcept;
// Flushes this thread's buffer only.
void flush_own_buffer() noexcept;

// Writes one raw frame (already encoded) to the trace file with one write().
void write_frame(const void* data, std::size_t n) noexcept;

// ---- kernel-tracepoint gate
// The ``trace`` command sets up its kernel tracepoints while the program starts; the
// program waits here, at its first open of a matched file, until the gate file
// (CMIO_TRACE_GATE) is gone, so no page-cache or FUSE event of a traced file is missed.
// Call with the path as passed (pre-open, absolute paths only) or nullptr (post-open,
// the file matched): a no-op once the gate is open.
void gate_wait(const char* path) noexcept;

// ---- descriptors and files
// Does `path` (as passed to open) possibly match?  Cheap filter before any syscall.
bool path_may_match(const char* path) noexcept;
// Is a failed open of `path` (as passed) under a traced prefix?  Relative paths
// count only when no prefix was given.
bool failed_path_matches(const char* path) noexcept;
// After a successful open of `fd`: resolve its path, match, register.  Returns file id or -1.
std::int32_t track_fd(int fd) noexcept;
// File id of a tracked fd, or -1.
std::int32_t fd_file(int fd) noexcept;
// Tracked position of fd's open file description (the offset a read() starts at).
std::int64_t fd_pos_add(int fd, std::int64_t delta) noexcept;  // returns the old position
void fd_pos_set(int fd, std::int64_t pos) noexcept;
void untrack_fd(int fd) noexcept;
// newfd now refers to oldfd's open file description.
void dup_fd(int oldfd, int newfd) noexcept;

// ---- mappings (sampler.cpp)
void map_added(void* addr, std::size_t len, std::int32_t file_id, std::int64_t file_off,
               std::int64_t t_ns) noexcept;
void map_removing(void* addr, std::size_t len) noexcept;  // before the real munmap
void sample_all_final() noexcept;                          // at exit
void sampler_after_fork_child() noexcept;
bool maps_empty() noexcept;

// Settings from the environment (read in the constructor).
std::int64_t sample_interval_ns() noexcept;

// Forked child: new trace stream, forget other threads (runtime.cpp).
void runtime_after_fork_child() noexcept;

// Thread-local recursion guard: true while inside the tracer itself.
bool in_tracer() noexcept;
class TracerScope {
 public:
  TracerScope() noexcept;
  ~TracerScope();
  TracerScope(const TracerScope&) = delete;
  TracerScope& operator=(const TracerScope&) = delete;
};

}  // namespace cmio::preload
