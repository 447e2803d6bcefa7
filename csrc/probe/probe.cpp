#include "probe/probe.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "probe/hints.h"

namespace cmio::probe {
namespace {

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "is a directory";
  if (S_ISFIFO(m)) return "is a FIFO, not a regular file";
  if (S_ISCHR(m)) return "is a character device, not a regular file";
  if (S_ISBLK(m)) return "is a block device, not a regular file";
  if (S_ISSOCK(m)) return "is a socket, not a regular file";
  return "is not a regular file";
}

// Opens without ever blocking: stat first so a FIFO is never opened, and
// O_NONBLOCK in case the path is swapped for one between stat and open.
Fd open_regular(const std::string& path, struct stat& st) {
  if (::stat(path.c_str(), &st) != 0) throw_errno(errno, path);
  if (!S_ISREG(st.st_mode)) throw std::invalid_argument(path + ": " + file_kind(st.st_mode));
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) throw_errno(errno, path);
  struct stat now {};
  if (::fstat(fd.get(), &now) != 0) throw_errno(errno, path);
  if (!S_ISREG(now.st_mode)) throw std::invalid_argument(path + ": " + file_kind(now.st_mode));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) throw_errno(errno, path + ": fcntl");
  if (::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) throw_errno(errno, path + ": fcntl");
  st = now;
  return fd;
}

std::string errname(int err) {
  const char* n = ::strerrorname_np(err);
  return n != nullptr ? n : std::to_string(err);
}

std::int64_t pread_full(int fd, unsigned char* buf, std::int64_t len, std::int64_t off) {
  std::int64_t done = 0;
  while (done < len) {
    const ssize_t r = ::pread(fd, buf + done, static_cast<std::size_t>(len - done), off + done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += r;
  }
  return done;
}

// One worker's state: its buffers, reused across operations.
struct Worker {
  std::vector<unsigned char> buf;
  std::vector<unsigned char> expect;
  std::int64_t bad_ops = 0;
  std::int64_t bad_bytes = 0;
  std::int64_t failed = 0;
  std::int64_t done = 0;
  unsigned char sink = 0;
};

struct RunContext {
  const std::vector<OpSpec>* ops;
  Event* out;
  int fd;
  int verify_fd;
  const unsigned char* map;  // touch patterns
  std::int64_t file_size;
  std::int64_t page_size;
  Access access;
  bool faults;
  Verify verify;
  std::int32_t file_id;
  std::int32_t pid;
  std::atomic<std::size_t> next{0};
};

// Bytes of [off, off+n) that differ from the file; `got` holds what the op saw.
std::int64_t count_mismatch(RunContext& c, Worker& w, const unsigned char* got, std::int64_t got_n,
                            std::int64_t off, std::int64_t want_n) {
  // Bytes the op should have delivered: the asked range, clipped at end of file.
  const std::int64_t n = std::max<std::int64_t>(0, std::min(want_n, c.file_size - off));
  std::int64_t bad = std::max<std::int64_t>(0, n - got_n);  // bytes not delivered
  const std::int64_t cmp = std::min(n, got_n);
  if (c.verify == Verify::kPattern) {
    for (std::int64_t i = 0; i < cmp; ++i) bad += got[i] != pattern_byte(off + i);
    return bad;
  }
  w.expect.resize(static_cast<std::size_t>(cmp));
  const std::int64_t r = pread_full(c.verify_fd, w.expect.data(), cmp, off);
  if (r < 0) return n;  // the reference read failed: count the whole range as unproven
  bad += cmp - r;
  for (std::int64_t i = 0; i < r; ++i) bad += got[i] != w.expect[static_cast<std::size_t>(i)];
  return bad;
}

void run_op(RunContext& c, Worker& w, std::size_t i, std::int32_t tid) {
  const OpSpec& op = (*c.ops)[i];
  Event e = blank_event(Source::kProbe, c.access == Access::kPread ? Op::kPread : Op::kMmapTouch);
  e.offset = op.offset;
  e.length = op.length;
  e.pid = c.pid;
  e.tid = tid;
  e.file_id = c.file_id;
  e.fd = c.fd;
  rusage r0{};
  if (c.faults && ::getrusage(RUSAGE_THREAD, &r0) != 0) e.err = errno;
  const std::int64_t t0 = monotonic_ns();
  if (c.access == Access::kPread) {
    ssize_t r;
    do {
      r = ::pread(c.fd, w.buf.data(), static_cast<std::size_t>(op.length), op.offset);
    } while (r < 0 && errno == EINTR);
    e.duration_ns = monotonic_ns() - t0;
    e.result = r;
    if (r < 0) e.err = errno;
  } else {
    // Load one byte of every page the range spans; the first load is at the exact offset.
    unsigned char acc = 0;
    const volatile unsigned char* p = c.map;
    const std::int64_t end = op.offset + op.length;
    acc = static_cast<unsigned char>(acc + p[op.offset]);
    for (std::int64_t a = (op.offset / c.page_size + 1) * c.page_size; a < end; a += c.page_size)
      acc = static_cast<unsigned char>(acc + p[a]);
    e.duration_ns = monotonic_ns() - t0;
    e.result = op.length;
    w.sink = static_cast<unsigned char>(w.sink + acc);
  }
  e.t_start_ns = t0;
  if (c.faults) {
    rusage r1{};
    if (::getrusage(RUSAGE_THREAD, &r1) != 0) {
      e.err = errno;
    } else {
      e.minflt = static_cast<std::int32_t>(r1.ru_minflt - r0.ru_minflt);
      e.majflt = static_cast<std::int32_t>(r1.ru_majflt - r0.ru_majflt);
    }
  }
  if (e.err != 0 || e.result < std::min(op.length, c.file_size - op.offset)) ++w.failed;
  if (c.verify != Verify::kNone) {
    const unsigned char* got = c.access == Access::kPread ? w.buf.data() : c.map + op.offset;
    const std::int64_t got_n = std::max<std::int64_t>(0, e.result);
    const std::int64_t bad = count_mismatch(c, w, got, got_n, op.offset, op.length);
    e.aux = bad;
    if (bad != 0) {
      ++w.bad_ops;
      w.bad_bytes += bad;
    }
  }
  c.out[i] = e;
}

void worker_loop(RunContext& c, Worker& w) {
  const auto tid = static_cast<std::int32_t>(::syscall(SYS_gettid));
  for (;;) {
    const std::size_t i = c.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= c.ops->size()) return;
    run_op(c, w, i, tid);
    ++w.done;
  }
}

}  // namespace

std::vector<OpSpec> plan_pattern(const std::string& pattern, const PatternParams& p) {
  const Pattern* pat = find_pattern(pattern);
  if (pat == nullptr) {
    std::string valid;
    for (const auto& n : pattern_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown pattern '" + pattern + "' (valid: " + valid + ")");
  }
  if (p.file_size <= 0) throw std::invalid_argument("file is empty");
  return pat->plan(p);
}

Probe::Probe(ProbeConfig cfg) : cfg_(std::move(cfg)) {
  pattern_ = find_pattern(cfg_.pattern);
  if (pattern_ == nullptr) (void)plan_pattern(cfg_.pattern, cfg_.params);  // throws the message
  access_ = pattern_->access();
  if (cfg_.threads < 1) throw std::invalid_argument("threads must be >= 1");
  if (!cfg_.fadvise.empty()) (void)fadvise_advice(cfg_.fadvise);
  if (!cfg_.madvise.empty()) {
    (void)madvise_advice(cfg_.madvise);
    if (access_ != Access::kTouch)
      throw std::invalid_argument("madvise applies to mmap patterns only, not '" + cfg_.pattern + "'");
  }
  fd_ = open_regular(cfg_.path, st_);
  if (st_.st_size == 0) throw std::invalid_argument(cfg_.path + ": file is empty");
  const long ps = ::sysconf(_SC_PAGESIZE);
  if (ps <= 0) throw_errno(errno, "sysconf(_SC_PAGESIZE)");
  cfg_.params.page_size = ps;
  cfg_.params.file_size = st_.st_size;
  try {
    ops_ = pattern_->plan(cfg_.params);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(cfg_.path + ": " + e.what());
  }
  if (cfg_.verify == Verify::kFile) {
    // A second open file description, so the reference read shares no file state with the probe.
    verify_fd_ = Fd(::open(cfg_.path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (!verify_fd_.valid()) throw_errno(errno, cfg_.path);
  }
}

ProbeResult Probe::run(Event* out) {
  ProbeResult res;
  const std::string& path = cfg_.path;
  const std::int64_t size = cfg_.params.file_size;
  const std::int64_t page = cfg_.params.page_size;
  const bool trusted = residency_trusted(st_, path);

  if (cfg_.cold) {
    // DONTNEED drops clean pages only: a file just written keeps its dirty pages (and
    // stays warm) until they are written back, so write them back first.  fdatasync works
    // on a read-only descriptor; a file system that cannot sync (read-only, FUSE without
    // fsync, special files) has nothing dirty to write back.
    const int err = ::fdatasync(fd_.get()) == 0 ? 0 : errno;
    if (err == 0) {
      res.cold_flush = "ok";
    } else if (err == EROFS || err == EINVAL || err == ENOSYS || err == EOPNOTSUPP) {
      res.cold_flush = errname(err);
    } else {
      throw_errno(err, path + ": fdatasync before eviction");
    }
    const int rc = ::posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_DONTNEED);
    if (rc != 0) throw_errno(rc, path + ": posix_fadvise(DONTNEED)");
    const Residency r = measure_residency(fd_.get(), size, page, trusted, path, cfg_.mincore);
    res.cold_left = r.pages;
    res.cold_dirty = r.dirty;
    res.cold_evicted = r.trusted && r.pages == 0;
    if (r.trusted && r.pages > 0) {
      // Not cold: run nothing rather than time a warm file as a cold one.
      res.ran = false;
      return res;
    }
  }
  if (!cfg_.fadvise.empty()) {
    const int rc = ::posix_fadvise(fd_.get(), 0, 0, fadvise_advice(cfg_.fadvise));
    res.hints.push_back("fadvise(" + cfg_.fadvise + ")=" + (rc == 0 ? "ok" : errname(rc)));
  }
  Mapping map;
  if (access_ == Access::kTouch) {
    map = Mapping(fd_.get(), static_cast<std::size_t>(size), path);
    if (!cfg_.madvise.empty()) {
      const int rc = ::madvise(map.mutable_data(), map.size(), madvise_advice(cfg_.madvise));
      res.hints.push_back("madvise(" + cfg_.madvise + ")=" + (rc == 0 ? "ok" : errname(errno)));
    }
  }

  std::int64_t max_len = 0;
  for (const auto& op : ops_) max_len = std::max(max_len, op.length);
  const int nthreads = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(cfg_.threads),
                                                              std::max<std::size_t>(1, ops_.size())));
  std::vector<Worker> workers(static_cast<std::size_t>(nthreads));
  for (auto& w : workers) {
    if (access_ == Access::kPread) w.buf.resize(static_cast<std::size_t>(max_len));
  }
  RunContext ctx;
  ctx.ops = &ops_;
  ctx.out = out;
  ctx.fd = fd_.get();
  ctx.verify_fd = verify_fd_.get();
  ctx.map = map.data();
  ctx.file_size = size;
  ctx.page_size = page;
  ctx.access = access_;
  ctx.faults = cfg_.faults;
  ctx.verify = cfg_.verify;
  ctx.file_id = cfg_.file_id;
  ctx.pid = static_cast<std::int32_t>(::getpid());

  res.before = measure_residency(fd_.get(), size, page, trusted, path, cfg_.mincore);
  res.t_begin_ns = monotonic_ns();
  if (nthreads == 1) {
    worker_loop(ctx, workers[0]);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(workers.size());
    try {
      for (auto& w : workers) pool.emplace_back([&ctx, &w] { worker_loop(ctx, w); });
    } catch (...) {
      // A thread that cannot be created (EAGAIN): the running ones still finish the
      // shared op list; join them, or ~thread would std::terminate the interpreter.
      for (auto& t : pool) t.join();
      throw;
    }
    for (auto& t : pool) t.join();
  }
  res.t_end_ns = monotonic_ns();
  res.after = measure_residency(fd_.get(), size, page, trusted, path, cfg_.mincore);
  res.threads_used = nthreads;
  for (const auto& w : workers) {
    res.verify_bad_ops += w.bad_ops;
    res.verify_bad_bytes += w.bad_bytes;
    res.failed_ops += w.failed;
    res.ops_done += w.done;
  }
  return res;
}

}  // namespace cmio::probe
