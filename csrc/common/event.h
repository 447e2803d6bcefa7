// The one event record that every vantage point fills (probe, preload tracer,
// page-in sampler, perf, FUSE client, HTTP fetch log). Layout is part of the
// on-disk format: never reorder or resize fields; bump kEventVersion instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>

namespace cmio {

inline constexpr std::uint32_t kEventVersion = 1;

// Which vantage point produced an event.  Append only; never renumber.
enum class Source : std::uint16_t {
  kUnknown = 0,
  kProbe = 1,        // native access-pattern probe
  kPreload = 2,      // LD_PRELOAD interposer (syscalls, stdio)
  kMincore = 3,      // page-in sampler (mincore on tracked mappings)
  kPerf = 4,         // kernel tracepoints (filemap:*)
  kFuse = 5,         // emulated CVMFS client: FUSE requests
  kFetch = 6,        // emulated CVMFS client: HTTP object fetches
  kHttpServer = 7,   // HTTP server access log
  kCvmfsLog = 8,     // real cvmfs2 debug log
  kOrt = 9,          // ONNX Runtime phase markers
};

// What happened.  Append only; never renumber.
enum class Op : std::uint16_t {
  kNone = 0,
  kOpen = 1,
  kClose = 2,
  kRead = 3,
  kPread = 4,
  kReadv = 5,
  kPreadv = 6,
  kLseek = 7,
  kMmap = 8,
  kMunmap = 9,
  kMadvise = 10,
  kFadvise = 11,
  kReadahead = 12,
  kStat = 13,
  kDup = 14,
  kFopen = 15,
  kFread = 16,
  kFclose = 17,
  kMmapTouch = 18,   // probe touched one page of a mapping
  kPageIn = 19,      // a run of file pages became resident (offset, length)
  kPageFault = 20,   // kernel page fault on a file page
  kFuseOpen = 21,
  kFuseRead = 22,
  kFuseRelease = 23,
  kFetch = 24,       // one object downloaded (length = compressed bytes)
  kHttpRequest = 25, // one request served
  kMark = 26,        // phase marker (aux = phase id)
  kFseek = 27,
  kFcntl = 28,
  kGetxattr = 29,
  kLookup = 30,
};

// 80 bytes, naturally aligned, little-endian on disk.
struct Event {
  std::int64_t t_start_ns;   // CLOCK_MONOTONIC
  std::int64_t duration_ns;  // end - start
  std::int64_t offset;       // file offset in bytes (-1 if not applicable)
  std::int64_t length;       // bytes asked
  std::int64_t result;       // bytes returned / syscall return value
  std::int64_t aux;          // op-specific (hint value, flags, timing bound ns, ...)
  std::int32_t pid;
  std::int32_t tid;
  std::int32_t file_id;      // index into the file table, -1 if none
  std::int32_t fd;
  std::int32_t err;          // errno, 0 on success
  std::int32_t minflt;       // minor faults during the op (-1 = not measured)
  std::int32_t majflt;       // major faults during the op (-1 = not measured)
  std::uint16_t source;      // Source
  std::uint16_t op;          // Op
};

static_assert(sizeof(Event) == 80, "event record is 80 bytes on disk");
static_assert(offsetof(Event, aux) == 40, "layout");
static_assert(offsetof(Event, pid) == 48, "layout");
static_assert(offsetof(Event, minflt) == 68, "layout");
static_assert(offsetof(Event, source) == 76, "layout");
static_assert(offsetof(Event, op) == 78, "layout");

inline std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline Event blank_event(Source src, Op op) noexcept {
  Event e{};
  e.offset = -1;
  e.file_id = -1;
  e.fd = -1;
  e.minflt = -1;
  e.majflt = -1;
  e.source = static_cast<std::uint16_t>(src);
  e.op = static_cast<std::uint16_t>(op);
  return e;
}

}  // namespace cmio
