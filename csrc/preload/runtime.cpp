// Trace stream, per-thread event buffers, descriptor and file tables.
#include "runtime.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <cstring>

#include "common/event_file.h"
#include "json_buf.h"

namespace cmio::preload {
namespace {

// ------------------------------------------------------------ atomics on POD
template <class T>
T ld(const T& v) noexcept {
  return __atomic_load_n(&v, __ATOMIC_ACQUIRE);
}
template <class T>
void st(T& v, T x) noexcept {
  __atomic_store_n(&v, x, __ATOMIC_RELEASE);
}
template <class T>
bool cas(T& v, T expect, T desired) noexcept {
  return __atomic_compare_exchange_n(&v, &expect, desired, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}
template <class T>
T fetch_add(T& v, T d) noexcept {
  return __atomic_fetch_add(&v, d, __ATOMIC_ACQ_REL);
}

long raw(long nr, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  return syscall(nr, a, b, c, d);
}

// ------------------------------------------------------------ settings
int g_trace_fd = -1;
bool g_enabled = false;  // CMIO_TRACE_DIR was set
std::int32_t g_pid = 0;
char g_dir[2048];
constexpr int kMaxPrefixes = 16;
char g_prefix[kMaxPrefixes][512];
std::size_t g_prefix_len[kMaxPrefixes];
int g_nprefix = 0;
std::int64_t g_sample_ns = 1000000;
bool g_warned = false;
char g_gate[2048];
int g_gate_shut = 0;  // 1 while the kernel-tracepoint gate file may still exist
constexpr std::int64_t kGateTimeoutNs = 30LL * 1000000000LL;

// ------------------------------------------------------------ thread buffers
// Layout: the EVENTS frame header sits right before the records so that one
// write() sends header and records together.
struct Anchor {
  std::int64_t tsc;
  std::int64_t ns;
};

Anchor take_anchor() noexcept {
  std::int64_t a = raw_now();
  std::int64_t ns = monotonic_ns();
  std::int64_t b = raw_now();
  return Anchor{a + (b - a) / 2, ns};
}

Anchor g_anchor0;  // taken in the constructor (and after fork)

// One per thread.  Only the owner appends (no locked instruction on that path:
// `n` is published with a release store).  Writing out is serialised by `flushing`
// (a CAS once per buffer-full): the owner writes [done, n) and resets both to 0;
// another thread flushing at exit writes [done, n) and sets done = n, so the owner
// never writes those events again and never overwrites them (it appends at n).
struct ThreadBuf {
  Anchor anchor;         // when this buffer was last written out (valid if has_anchor)
  int has_anchor;
  int flushing;          // 0 free, 1 someone writes the buffer out
  int busy;              // owner is inside record(): a signal handler must not append
  int slot;              // index in g_bufs + 1, 0 = not registered, -1 = table full
  std::uint32_t n;       // events appended
  std::uint32_t done;    // events [0, done) already written by another thread
  std::int32_t tid;      // cached gettid(), 0 = unknown
  int in_tracer;         // recursion guard depth
  Event ev[kBufEvents];
};

__attribute__((tls_model("initial-exec"))) thread_local ThreadBuf t_buf;

ThreadBuf* g_bufs[kMaxThreads];
pthread_key_t g_key;
bool g_key_ok = false;

void write_all_fd(int fd, const void* data, std::size_t n) noexcept {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    long w = raw(SYS_write, fd, reinterpret_cast<long>(p), static_cast<long>(n));
    if (w < 0) {
      if (errno == EINTR) continue;
      return;  // disk full or similar: the frame is lost, the program goes on
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Rewrites raw-tick events of ev[0, n) to CLOCK_MONOTONIC ns, interpolating
// between anchors `from` (before the events) and `to` (after them).
void convert(Event* ev, std::uint32_t n, const Anchor& from, const Anchor& to) noexcept {
  if (!kUseTsc) return;
  const std::int64_t dt = to.tsc - from.tsc;
  const double ns_per_tick = dt > 0 ? static_cast<double>(to.ns - from.ns) / static_cast<double>(dt) : 0.0;
  for (std::uint32_t i = 0; i < n; ++i) {
    Event& e = ev[i];
    if (e.minflt != kRawTicks) continue;
    e.t_start_ns = from.ns + static_cast<std::int64_t>(
                                 static_cast<double>(e.t_start_ns - from.tsc) * ns_per_tick);
    e.duration_ns = static_cast<std::int64_t>(static_cast<double>(e.duration_ns) * ns_per_tick);
    e.minflt = -1;
  }
}

void write_events(const Event* ev, std::uint32_t n) noexcept {
  if (n == 0 || g_trace_fd < 0) return;
  unsigned char hdr[8];
  put_frame_header(hdr, kFrameEvents, static_cast<std::uint32_t>(n * sizeof(Event)));
  iovec iov[2] = {{hdr, 8}, {const_cast<Event*>(ev), n * sizeof(Event)}};
  // One writev per frame on an O_APPEND descriptor: frames of several threads and
  // processes never interleave.  A failed or short write (disk full) loses the frame
  // (the reader then reports a truncated file); the program goes on.
  while (raw(SYS_writev, g_trace_fd, reinterpret_cast<long>(iov), 2) < 0 && errno == EINTR) {
  }
}

void acquire_flush(ThreadBuf& b) noexcept {
  int expect = 0;
  while (!cas(b.flushing, expect, 1)) {
    expect = 0;
    raw(SYS_sched_yield);
  }
}

// Writes out [done, n) of `b`; the caller holds b.flushing.  `reset` (owner only)
// empties the buffer, otherwise the events are marked done.
void flush_held(ThreadBuf& b, bool reset) noexcept {
  const std::uint32_t n = ld(b.n);
  const std::uint32_t from = b.done;
  if (n > from) {
    if (kUseTsc) {
      const Anchor now = take_anchor();
      convert(b.ev + from, n - from, b.has_anchor ? b.anchor : g_anchor0, now);
      b.anchor = now;
      b.has_anchor = 1;
    }
    write_events(b.ev + from, n - from);
  }
  if (reset) {
    b.done = 0;
    st(b.n, 0u);
  } else {
    b.done = n;
  }
}

void flush_own(ThreadBuf& b) noexcept {
  acquire_flush(b);
  flush_held(b, true);
  st(b.flushing, 0);
}

void thread_exit(void* p) noexcept {
  auto* b = static_cast<ThreadBuf*>(p);
  ErrnoGuard g;
  b->busy = 1;
  flush_own(*b);
  if (b->slot > 0) st(g_bufs[b->slot - 1], static_cast<ThreadBuf*>(nullptr));
  b->slot = 0;
  b->busy = 0;
}

void register_buf(ThreadBuf& b) noexcept {
  for (int i = 0; i < kMaxThreads; ++i) {
    if (ld(g_bufs[i]) == nullptr && cas(g_bufs[i], static_cast<ThreadBuf*>(nullptr), &b)) {
      b.slot = i + 1;
      if (g_key_ok) pthread_setspecific(g_key, &b);
      return;
    }
  }
  b.slot = -1;  // table full: this thread flushes only when its buffer fills
}

// ------------------------------------------------------------ descriptors
struct Desc {
  std::int32_t refs;
  std::int32_t file_id;
  std::int64_t pos;
};
Desc g_desc[kMaxDesc];
std::int32_t g_fd_desc[kMaxFd];  // desc index + 1, 0 = untracked

struct FileRec {
  std::uint64_t dev;
  std::uint64_t ino;
  int ready;
};
FileRec g_files[kMaxFiles];
std::int32_t g_nfiles = 0;
constexpr std::size_t kArena = 4u << 20;
unsigned char g_arena[kArena];  // every FILE frame written so far (re-sent after fork)
std::size_t g_arena_len = 0;

bool prefix_match(const char* path) noexcept {
  std::size_t dl = std::strlen(g_dir);
  if (dl > 0 && std::strncmp(path, g_dir, dl) == 0 && (path[dl] == '/' || path[dl] == 0))
    return false;  // never trace our own output
  if (g_nprefix == 0) {
    static const char* const kSkip[] = {"/proc/", "/sys/", "/dev/"};
    for (const char* s : kSkip)
      if (std::strncmp(path, s, std::strlen(s)) == 0) return false;
    return true;
  }
  for (int i = 0; i < g_nprefix; ++i)
    if (std::strncmp(path, g_prefix[i], g_prefix_len[i]) == 0) return true;
  return false;
}

std::int32_t register_file(const struct stat& sb, const char* path, std::size_t plen) noexcept {
  std::int32_t n = ld(g_nfiles);
  if (n > kMaxFiles) n = kMaxFiles;
  for (std::int32_t i = 0; i < n; ++i) {
    if (ld(g_files[i].ready) && g_files[i].dev == sb.st_dev && g_files[i].ino == sb.st_ino)
      return i;
  }
  std::int32_t id = fetch_add(g_nfiles, 1);
  if (id >= kMaxFiles) return -1;
  g_files[id].dev = sb.st_dev;
  g_files[id].ino = sb.st_ino;
  st(g_files[id].ready, 1);
  unsigned char frame[8 + kFileFrameFixed + 4096];
  if (plen > 4096) plen = 4096;
  put_frame_header(frame, kFrameFile, static_cast<std::uint32_t>(kFileFrameFixed + plen));
  std::uint32_t zero = 0;
  std::int64_t size = sb.st_size;
  std::uint64_t dev = sb.st_dev, ino = sb.st_ino;
  std::memcpy(frame + 8, &id, 4);
  std::memcpy(frame + 12, &zero, 4);
  std::memcpy(frame + 16, &size, 8);
  std::memcpy(frame + 24, &dev, 8);
  std::memcpy(frame + 32, &ino, 8);
  std::memcpy(frame + 40, path, plen);
  std::size_t total = 8 + kFileFrameFixed + plen;
  std::size_t at = fetch_add(g_arena_len, total);
  if (at + total <= kArena) std::memcpy(g_arena + at, frame, total);
  write_frame(frame, total);
  return id;
}

// ------------------------------------------------------------ trace stream
std::size_t read_small(const char* path, char* out, std::size_t cap) noexcept {
  long fd = raw(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t n = 0;
  while (n < cap) {
    long r = raw(SYS_read, fd, reinterpret_cast<long>(out + n), static_cast<long>(cap - n));
    if (r <= 0) break;
    n += static_cast<std::size_t>(r);
  }
  raw(SYS_close, fd);
  return n;
}

char g_hdr[96 * 1024];

std::size_t build_header(std::int64_t now) noexcept {
  JsonBuf j(g_hdr + 24, sizeof(g_hdr) - 24);
  j.raw("{\"clock\":\"CLOCK_MONOTONIC\",\"source\":\"preload\",\"tracer_version\":1");
  j.key("pid");
  j.num(g_pid);
  j.key("ppid");
  j.num(static_cast<std::int64_t>(raw(SYS_getppid)));
  j.key("start_ns");
  j.num(now);
  j.key("sample_us");
  j.num(g_sample_ns / 1000);
  j.key("page_size");
  j.num(sysconf(_SC_PAGESIZE));
  struct utsname u {};
  if (uname(&u) == 0) {
    j.key("host");
    j.str(u.nodename, std::strlen(u.nodename));
  }
  static char cmd[32 * 1024];
  std::size_t n = read_small("/proc/self/cmdline", cmd, sizeof(cmd));
  j.key("argv");
  j.raw("[");
  std::size_t start = 0;
  bool first = true;
  for (std::size_t i = 0; i < n; ++i) {
    if (cmd[i] == 0) {
      if (!first) j.raw(",");
      j.str(cmd + start, i - start);
      first = false;
      start = i + 1;
    }
  }
  j.raw("]");
  static char exe[4096];
  long el = raw(SYS_readlinkat, AT_FDCWD, reinterpret_cast<long>("/proc/self/exe"),
                reinterpret_cast<long>(exe), sizeof(exe));
  if (el > 0) {
    j.key("exe");
    j.str(exe, static_cast<std::size_t>(el));
  }
  j.key("match");
  j.raw("[");
  for (int i = 0; i < g_nprefix; ++i) {
    if (i) j.raw(",");
    j.str(g_prefix[i], g_prefix_len[i]);
  }
  j.raw("]}");
  std::size_t mlen = j.len();
  std::memcpy(g_hdr, kEventFileMagic, 8);
  std::uint32_t ver = kEventVersion, rec = sizeof(Event);
  std::uint64_t ml = mlen;
  std::memcpy(g_hdr + 8, &ver, 4);
  std::memcpy(g_hdr + 12, &rec, 4);
  std::memcpy(g_hdr + 16, &ml, 8);
  return 24 + mlen;
}

void warn_once(const char* what, int err) noexcept {
  if (g_warned) return;
  g_warned = true;
  char msg[3072];
  JsonBuf m(msg, sizeof(msg));
  m.raw("cvmfs-modelio trace: warning: cannot write trace file in ");
  m.raw(g_dir);
  m.raw(" (");
  m.raw(what);
  m.raw(", errno ");
  m.num(err);
  m.raw("); running untraced\n");
  write_all_fd(2, msg, m.len());
}

// Opens <dir>/<pid>.<n>.cmtr exclusively and writes the header.  exec keeps the
// pid, so n makes the name unique.
void open_stream() noexcept {
  g_trace_fd = -1;
  if (!g_enabled) return;
  char path[2300];
  for (int seq = 0; seq < 10000; ++seq) {
    JsonBuf p(path, sizeof(path) - 1);
    p.raw(g_dir);
    p.raw("/");
    p.num(g_pid);
    p.raw(".");
    p.num(seq);
    p.raw(".cmtr");
    path[p.len()] = 0;
    long fd = raw(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path),
                  O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      // Keep the stream away from the low descriptors that programs dup2 onto.
      long hi = raw(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 700);
      if (hi >= 0) {
        raw(SYS_close, fd);
        fd = hi;
      }
      std::size_t n = build_header(monotonic_ns());
      write_all_fd(static_cast<int>(fd), g_hdr, n);
      g_trace_fd = static_cast<int>(fd);
      return;
    }
    if (errno != EEXIST) {
      warn_once("open failed", errno);
      return;
    }
  }
  warn_once("no free file name", EEXIST);
}

void parse_env() noexcept {
  const char* dir = getenv("CMIO_TRACE_DIR");
  if (dir == nullptr || dir[0] == 0 || std::strlen(dir) >= sizeof(g_dir)) return;
  std::strcpy(g_dir, dir);
  g_enabled = true;
  const char* w = getenv("CMIO_TRACE_WARNED");
  g_warned = (w != nullptr && w[0] == '1');
  const char* m = getenv("CMIO_TRACE_MATCH");
  if (m != nullptr) {
    // colon-separated prefixes
    const char* s = m;
    while (*s && g_nprefix < kMaxPrefixes) {
      const char* e = std::strchr(s, ':');
      std::size_t l = e ? static_cast<std::size_t>(e - s) : std::strlen(s);
      if (l > 0 && l < sizeof(g_prefix[0])) {
        std::memcpy(g_prefix[g_nprefix], s, l);
        g_prefix[g_nprefix][l] = 0;
        g_prefix_len[g_nprefix] = l;
        ++g_nprefix;
      }
      if (!e) break;
      s = e + 1;
    }
  }
  const char* gate = getenv("CMIO_TRACE_GATE");
  if (gate != nullptr && gate[0] == '/' && std::strlen(gate) < sizeof(g_gate)) {
    std::strcpy(g_gate, gate);
    g_gate_shut = 1;
  }
  const char* us = getenv("CMIO_TRACE_SAMPLE_US");
  if (us != nullptr && us[0] != 0) {
    char* end = nullptr;
    long long v = std::strtoll(us, &end, 10);
    if (end != nullptr && *end == 0 && v >= 0) g_sample_ns = v * 1000;
  }
}

void at_exit_flush() {
  ErrnoGuard g;
  sample_all_final();
  flush_all();
}

void fork_prepare() {
  ErrnoGuard g;
  ThreadBuf& b = t_buf;
  if (b.busy) return;  // fork from a signal handler that interrupted record()
  b.busy = 1;
  flush_own(b);
  b.busy = 0;
}

void fork_child() {
  ErrnoGuard g;
  runtime_after_fork_child();
  sampler_after_fork_child();
}

__attribute__((constructor)) void preload_init() {
  ErrnoGuard g;
  g_pid = static_cast<std::int32_t>(raw(SYS_getpid));
  g_anchor0 = take_anchor();
  parse_env();
  if (!g_enabled) return;
  g_key_ok = pthread_key_create(&g_key, thread_exit) == 0;
  pthread_atfork(fork_prepare, nullptr, fork_child);
  atexit(at_exit_flush);
  open_stream();
  if (g_trace_fd < 0 && g_warned) setenv("CMIO_TRACE_WARNED", "1", 1);
}

__attribute__((destructor)) void preload_fini() { at_exit_flush(); }

}  // namespace

// ------------------------------------------------------------ public
bool active() noexcept { return g_trace_fd >= 0; }
std::int32_t cur_pid() noexcept { return g_pid; }
std::int32_t cur_tid() noexcept {
  ThreadBuf& b = t_buf;
  if (b.tid == 0) b.tid = static_cast<std::int32_t>(raw(SYS_gettid));
  return b.tid;
}
std::int64_t sample_interval_ns() noexcept { return g_sample_ns; }

bool in_tracer() noexcept { return t_buf.in_tracer != 0; }
TracerScope::TracerScope() noexcept { ++t_buf.in_tracer; }
TracerScope::~TracerScope() { --t_buf.in_tracer; }

void write_frame(const void* data, std::size_t n) noexcept {
  if (g_trace_fd >= 0) write_all_fd(g_trace_fd, data, n);
}

void record(const Event& e) noexcept {
  if (g_trace_fd < 0) return;
  ThreadBuf& b = t_buf;
  if (b.busy) {
    // A signal handler interrupted this thread inside record(): write this one
    // event as a frame of its own instead of touching the buffer.
    Event c = e;
    convert(&c, 1, b.has_anchor ? b.anchor : g_anchor0, take_anchor());
    write_events(&c, 1);
    return;
  }
  b.busy = 1;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (b.slot == 0) register_buf(b);
  std::uint32_t n = b.n;
  b.ev[n] = e;
  __atomic_store_n(&b.n, n + 1, __ATOMIC_RELEASE);
  if (n + 1 == kBufEvents) flush_own(b);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  b.busy = 0;
}

void flush_own_buffer() noexcept {
  ThreadBuf& b = t_buf;
  if (b.busy) return;
  b.busy = 1;
  flush_own(b);
  b.busy = 0;
}

void flush_all() noexcept {
  ThreadBuf& own = t_buf;
  if (own.busy) return;  // called from a signal handler inside record(): skip
  own.busy = 1;
  for (int i = 0; i < kMaxThreads; ++i) {
    ThreadBuf* b = ld(g_bufs[i]);
    if (b == nullptr || b == &own) continue;
    bool got = false;
    for (int spin = 0; spin < 1000 && !got; ++spin) {
      int expect = 0;
      got = cas(b->flushing, expect, 1);
      if (!got) raw(SYS_sched_yield);
    }
    if (!got) continue;  // its owner is stuck in a flush (e.g. frozen mid-exit)
    flush_held(*b, false);
    st(b->flushing, 0);
  }
  flush_own(own);
  own.busy = 0;
}

void runtime_after_fork_child() noexcept {
  g_pid = static_cast<std::int32_t>(raw(SYS_getpid));
  ThreadBuf& own = t_buf;
  own.tid = 0;
  own.flushing = 0;  // the child flushes only what it appends from now on
  own.n = 0;
  own.done = 0;
  for (int i = 0; i < kMaxThreads; ++i) g_bufs[i] = nullptr;  // other threads are gone
  own.slot = 0;
  if (g_trace_fd >= 0) {
    raw(SYS_close, g_trace_fd);
    g_trace_fd = -1;
  }
  open_stream();
  std::size_t n = ld(g_arena_len);
  if (n > kArena) n = kArena;
  write_frame(g_arena, n);
}

void gate_wait(const char* path) noexcept {
  if (__atomic_load_n(&g_gate_shut, __ATOMIC_ACQUIRE) == 0 || g_trace_fd < 0) return;
  if (path != nullptr && (path[0] != '/' || !prefix_match(path))) return;
  ErrnoGuard g;
  const std::int64_t t0 = monotonic_ns();
  struct stat sb {};
  while (raw(SYS_newfstatat, AT_FDCWD, reinterpret_cast<long>(g_gate), reinterpret_cast<long>(&sb),
             0) == 0) {
    const std::int64_t waited = monotonic_ns() - t0;
    if (waited > kGateTimeoutNs) {
      // Say so in the trace: kernel events of this process may be missing.
      char meta[128];
      JsonBuf j(meta + 8, sizeof(meta) - 8);
      j.raw("{\"kernel_gate_timeout_ns\":");
      j.num(waited);
      j.raw("}");
      put_frame_header(reinterpret_cast<unsigned char*>(meta), kFrameMeta,
                       static_cast<std::uint32_t>(j.len()));
      write_frame(meta, 8 + j.len());
      break;
    }
    timespec ts{0, 200000};  // 200 us
    raw(SYS_nanosleep, reinterpret_cast<long>(&ts), 0);
  }
  __atomic_store_n(&g_gate_shut, 0, __ATOMIC_RELEASE);
}

bool path_may_match(const char* path) noexcept {
  if (g_trace_fd < 0 || path == nullptr) return false;
  if (path[0] != '/') return true;  // relative: decided after open from /proc/self/fd
  if (g_nprefix != 0) return true;  // symlinks may lead into a prefix
  return prefix_match(path);
}

bool failed_path_matches(const char* path) noexcept {
  if (g_trace_fd < 0 || path == nullptr) return false;
  if (path[0] != '/') return g_nprefix == 0;
  return prefix_match(path);
}

std::int32_t track_fd(int fd) noexcept {
  if (fd < 0 || fd >= kMaxFd || g_trace_fd < 0) return -1;
  TracerScope scope;
  if (ld(g_fd_desc[fd]) != 0) untrack_fd(fd);  // closed behind our back (close_range, ...)
  struct stat sb {};
  if (raw(SYS_fstat, fd, reinterpret_cast<long>(&sb)) != 0 || !S_ISREG(sb.st_mode)) return -1;
  char link[32];
  JsonBuf l(link, sizeof(link) - 1);
  l.raw("/proc/self/fd/");
  l.num(fd);
  link[l.len()] = 0;
  char path[4097];
  long pl = raw(SYS_readlinkat, AT_FDCWD, reinterpret_cast<long>(link),
                reinterpret_cast<long>(path), 4096);
  if (pl <= 0) return -1;
  path[pl] = 0;
  if (!prefix_match(path)) return -1;
  std::int32_t fid = register_file(sb, path, static_cast<std::size_t>(pl));
  if (fid < 0) return -1;
  static int hint = 0;
  for (int k = 0; k < kMaxDesc; ++k) {
    int i = (hint + k) % kMaxDesc;
    std::int32_t zero = 0;
    if (cas(g_desc[i].refs, zero, 1)) {
      hint = i + 1;
      g_desc[i].file_id = fid;
      st(g_desc[i].pos, static_cast<std::int64_t>(0));
      st(g_fd_desc[fd], i + 1);
      return fid;
    }
  }
  return -1;
}

std::int32_t fd_file(int fd) noexcept {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFd)) return -1;
  std::int32_t d = __atomic_load_n(&g_fd_desc[fd], __ATOMIC_RELAXED);
  if (d == 0) return -1;
  return g_desc[d - 1].file_id;
}

std::int64_t fd_pos_add(int fd, std::int64_t delta) noexcept {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFd)) return -1;
  std::int32_t d = __atomic_load_n(&g_fd_desc[fd], __ATOMIC_RELAXED);
  if (d == 0) return -1;
  // Not a locked add: threads that read() one description concurrently race in the
  // kernel too, and this keeps the hot path free of atomic read-modify-writes.
  std::int64_t& pos = g_desc[d - 1].pos;
  std::int64_t old = __atomic_load_n(&pos, __ATOMIC_RELAXED);
  __atomic_store_n(&pos, old + delta, __ATOMIC_RELAXED);
  return old;
}

void fd_pos_set(int fd, std::int64_t pos) noexcept {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFd)) return;
  std::int32_t d = ld(g_fd_desc[fd]);
  if (d != 0) st(g_desc[d - 1].pos, pos);
}

void untrack_fd(int fd) noexcept {
  if (static_cast<unsigned>(fd) >= static_cast<unsigned>(kMaxFd)) return;
  std::int32_t d = __atomic_exchange_n(&g_fd_desc[fd], 0, __ATOMIC_ACQ_REL);
  if (d == 0) return;
  if (__atomic_fetch_sub(&g_desc[d - 1].refs, 1, __ATOMIC_ACQ_REL) == 1) {
    g_desc[d - 1].file_id = -1;
  }
}

void dup_fd(int oldfd, int newfd) noexcept {
  if (static_cast<unsigned>(newfd) >= static_cast<unsigned>(kMaxFd) || oldfd == newfd) return;
  untrack_fd(newfd);
  if (static_cast<unsigned>(oldfd) >= static_cast<unsigned>(kMaxFd)) return;
  std::int32_t d = ld(g_fd_desc[oldfd]);
  if (d == 0) return;
  fetch_add(g_desc[d - 1].refs, 1);
  st(g_fd_desc[newfd], d);
}

}  // namespace cmio::preload
