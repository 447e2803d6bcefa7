// Page-in sampler: which pages of each tracked mapping came in, and when.
//
// Two per-page signals, sampled by a thread in the traced process every
// CMIO_TRACE_SAMPLE_US, at munmap and at exit:
//   * mincore(2): the page is in the page cache.  For a file mapping (shared or
//     private) this is the state of the FILE's cache page, not of this process:
//     pages cached before the mmap count as present (they are the baseline taken at
//     mmap time and never reported).  Emitted as source MINCORE, op PAGE_IN.
//   * /proc/self/pagemap bit 63: the page is mapped in THIS process's page table,
//     i.e. the process faulted on it (or the kernel's fault-around mapped it with a
//     faulting neighbour).  Emitted as source MINCORE, op PAGE_FAULT.
// Each event is one run of newly present pages: offset/length in file bytes,
// t_start = previous sample, duration = aux = sampling bound in ns.
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "runtime.h"

namespace cmio::preload {
std::int32_t map_find(const void* addr, std::size_t len, std::int64_t* file_off) noexcept;

namespace {

constexpr std::uint8_t kResident = 1;  // seen in the page cache
constexpr std::uint8_t kMapped = 2;    // seen in this process's page table

struct Map {
  int state;  // 0 free, 1 live, 2 being set up
  int lock;   // 0 free, 1 held (sampler sweep, munmap, exit)
  std::uintptr_t addr;
  std::size_t len;
  std::int32_t file_id;
  std::int64_t file_off;
  std::uint8_t* pstate;  // one byte per page of the mapping
  std::uint8_t* pbase;   // what to munmap
  std::size_t pbase_len;
  std::int64_t last_ns;
};

Map g_maps[kMaxMaps];
int g_nlive = 0;
int g_sampler = 0;  // 0 not started, 1 running
int g_pagemap = -1;
long g_page = 0;

long page() noexcept {
  if (g_page == 0) g_page = sysconf(_SC_PAGESIZE);
  return g_page;
}

void lock_map(Map& m) noexcept {
  int expect = 0;
  while (!__atomic_compare_exchange_n(&m.lock, &expect, 1, false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
    expect = 0;
    syscall(SYS_sched_yield);
  }
}
bool trylock_map(Map& m) noexcept {
  int expect = 0;
  return __atomic_compare_exchange_n(&m.lock, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}
void unlock_map(Map& m) noexcept { __atomic_store_n(&m.lock, 0, __ATOMIC_RELEASE); }

// Emits one event per run of pages in [first, last) whose `bit` became set.
class RunEmitter {
 public:
  RunEmitter(const Map& m, Op op, std::int64_t now) noexcept : m_(m), op_(op), now_(now) {}
  void add(std::size_t i) noexcept {
    if (run_len_ > 0 && run_start_ + run_len_ == i) {
      ++run_len_;
      return;
    }
    emit();
    run_start_ = i;
    run_len_ = 1;
  }
  void emit() noexcept {
    if (run_len_ == 0) return;
    Event e = blank_event(Source::kMincore, op_);
    e.t_start_ns = m_.last_ns;
    e.duration_ns = now_ - m_.last_ns;
    e.aux = now_ - m_.last_ns;
    e.offset = m_.file_off + static_cast<std::int64_t>(run_start_) * page();
    e.length = static_cast<std::int64_t>(run_len_) * page();
    e.result = static_cast<std::int64_t>(run_len_);
    e.pid = cur_pid();
    e.tid = cur_tid();
    e.file_id = m_.file_id;
    record(e);
    run_len_ = 0;
  }

 private:
  const Map& m_;
  Op op_;
  std::int64_t now_;
  std::size_t run_start_ = 0;
  std::size_t run_len_ = 0;
};

void sample(Map& m, std::int64_t now) noexcept {
  const std::size_t npages = (m.len + static_cast<std::size_t>(page()) - 1) / page();
  constexpr std::size_t kChunk = 512;
  {
    RunEmitter runs(m, Op::kPageIn, now);
    unsigned char vec[kChunk];
    for (std::size_t i = 0; i < npages; i += kChunk) {
      std::size_t n = npages - i < kChunk ? npages - i : kChunk;
      bool all_seen = true;
      for (std::size_t k = 0; k < n && all_seen; ++k) all_seen = (m.pstate[i + k] & kResident);
      if (all_seen) continue;
      if (syscall(SYS_mincore, m.addr + i * page(), n * page(), vec) != 0) continue;
      for (std::size_t k = 0; k < n; ++k) {
        if ((vec[k] & 1) && !(m.pstate[i + k] & kResident)) {
          m.pstate[i + k] |= kResident;
          runs.add(i + k);
        }
      }
    }
    runs.emit();
  }
  if (g_pagemap < 0) {
    g_pagemap = static_cast<int>(syscall(SYS_openat, AT_FDCWD, "/proc/self/pagemap",
                                         O_RDONLY | O_CLOEXEC));
  }
  if (g_pagemap >= 0) {
    RunEmitter runs(m, Op::kPageFault, now);
    std::uint64_t ent[kChunk];
    for (std::size_t i = 0; i < npages; i += kChunk) {
      std::size_t n = npages - i < kChunk ? npages - i : kChunk;
      bool all_seen = true;
      for (std::size_t k = 0; k < n && all_seen; ++k) all_seen = (m.pstate[i + k] & kMapped);
      if (all_seen) continue;
      long off = static_cast<long>((m.addr / page() + i) * 8);
      long r = syscall(SYS_pread64, g_pagemap, ent, static_cast<long>(n * 8), off);
      if (r <= 0) continue;
      std::size_t got = static_cast<std::size_t>(r) / 8;
      for (std::size_t k = 0; k < got; ++k) {
        if ((ent[k] >> 63) && !(m.pstate[i + k] & kMapped)) {
          m.pstate[i + k] |= kMapped;
          runs.add(i + k);
        }
      }
    }
    runs.emit();
  }
  m.last_ns = now;
}

void sleep_ns(std::int64_t ns) noexcept {
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  while (syscall(SYS_nanosleep, &ts, &ts) != 0 && errno == EINTR) {
  }
}

void* sampler_main(void*) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  const std::int64_t interval = sample_interval_ns();
  for (;;) {
    sleep_ns(interval);
    const std::int64_t now = monotonic_ns();
    for (Map& m : g_maps) {
      if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) != 1 || !trylock_map(m)) continue;
      if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) == 1) sample(m, now);
      unlock_map(m);
    }
    flush_own_buffer();
  }
  return nullptr;
}

void start_sampler() noexcept {
  if (sample_interval_ns() <= 0) return;
  int expect = 0;
  if (!__atomic_compare_exchange_n(&g_sampler, &expect, 1, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    return;
  TracerScope scope;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t th;
  if (pthread_create(&th, &attr, sampler_main, nullptr) != 0) g_sampler = 0;
  pthread_attr_destroy(&attr);
}

void release(Map& m) noexcept {
  if (m.pbase != nullptr) syscall(SYS_munmap, m.pbase, m.pbase_len);
  m.pbase = nullptr;
  m.pstate = nullptr;
  __atomic_store_n(&m.state, 0, __ATOMIC_RELEASE);
  __atomic_fetch_sub(&g_nlive, 1, __ATOMIC_ACQ_REL);
}

}  // namespace

bool maps_empty() noexcept { return __atomic_load_n(&g_nlive, __ATOMIC_ACQUIRE) == 0; }

void map_added(void* addr, std::size_t len, std::int32_t file_id, std::int64_t file_off,
               std::int64_t t_ns) noexcept {
  if (!active() || len == 0) return;
  const std::size_t npages = (len + static_cast<std::size_t>(page()) - 1) / page();
  const std::size_t plen = (npages + static_cast<std::size_t>(page()) - 1) / page() * page();
  long p = syscall(SYS_mmap, nullptr, plen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (p == -1) return;
  for (Map& m : g_maps) {
    int expect = 0;
    if (!__atomic_compare_exchange_n(&m.state, &expect, 2, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
      continue;
    m.addr = reinterpret_cast<std::uintptr_t>(addr);
    m.len = len;
    m.file_id = file_id;
    m.file_off = file_off;
    m.pbase = reinterpret_cast<std::uint8_t*>(p);
    m.pbase_len = plen;
    m.pstate = m.pbase;
    m.last_ns = t_ns;
    m.lock = 0;
    // Baseline: pages already in the page cache at mmap time are not page-ins.
    if (syscall(SYS_mincore, addr, len, m.pstate) == 0) {
      for (std::size_t i = 0; i < npages; ++i) m.pstate[i] &= kResident;
    } else {
      std::memset(m.pstate, 0, npages);
    }
    __atomic_fetch_add(&g_nlive, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&m.state, 1, __ATOMIC_RELEASE);
    start_sampler();
    return;
  }
  syscall(SYS_munmap, p, plen);  // table full: this mapping goes unsampled
}

std::int32_t map_find(const void* addr, std::size_t len, std::int64_t* file_off) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  for (Map& m : g_maps) {
    if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) != 1) continue;
    if (a < m.addr + m.len && m.addr < a + len) {
      *file_off = m.file_off + static_cast<std::int64_t>(a > m.addr ? a - m.addr : 0);
      return m.file_id;
    }
  }
  return -1;
}

void map_removing(void* addr, std::size_t len) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const auto e = a + len;
  const std::int64_t now = monotonic_ns();
  for (Map& m : g_maps) {
    if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) != 1) continue;
    if (!(a < m.addr + m.len && m.addr < e)) continue;
    lock_map(m);
    if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) != 1) {
      unlock_map(m);
      continue;
    }
    sample(m, now);
    const std::uintptr_t mend = m.addr + m.len;
    if (a <= m.addr && e >= mend) {
      release(m);
    } else if (a <= m.addr) {  // prefix unmapped: keep the tail
      const std::size_t cut = (e - m.addr) / page();
      m.pstate += cut;
      m.file_off += static_cast<std::int64_t>(e - m.addr);
      m.len = mend - e;
      m.addr = e;
    } else {  // suffix or a hole: keep what lies before the unmapped range
      m.len = a - m.addr;
    }
    unlock_map(m);
  }
}

void sample_all_final() noexcept {
  if (maps_empty()) return;
  const std::int64_t now = monotonic_ns();
  for (Map& m : g_maps) {
    if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) != 1) continue;
    // The sampler thread holds a map for one sweep at most; do not wait on a
    // thread that may be frozen (fork, exit from another thread).
    bool got = false;
    for (int spin = 0; spin < 1000 && !got; ++spin) {
      got = trylock_map(m);
      if (!got) syscall(SYS_sched_yield);
    }
    if (!got) continue;
    if (__atomic_load_n(&m.state, __ATOMIC_ACQUIRE) == 1) sample(m, now);
    unlock_map(m);
  }
}

void sampler_after_fork_child() noexcept {
  g_sampler = 0;  // the thread was not copied; restarted by the child's next mmap
  if (g_pagemap >= 0) syscall(SYS_close, g_pagemap);
  g_pagemap = -1;  // it named the parent's page table
  for (Map& m : g_maps) m.lock = 0;
}

}  // namespace cmio::preload
