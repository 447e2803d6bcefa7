// The probe: open one file read-only, plan a pattern, run its operations on N
// threads sharing one list, and write one event per operation.  Knows nothing
// about Python.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/event.h"
#include "probe/file.h"
#include "probe/pattern.h"
#include "probe/residency.h"

namespace cmio::probe {

enum class Verify {
  kNone,
  kFile,     // compare with an independent read through a second open of the file
  kPattern,  // compare with pattern_byte(offset) (files written by the test suite)
};

struct ProbeConfig {
  std::string path;
  std::string pattern;
  PatternParams params;  // file_size and page_size are filled in by Probe
  int threads = 1;
  std::string fadvise;  // "" = no hint
  std::string madvise;  // "" = no hint (mmap patterns only)
  bool cold = false;    // flush (fdatasync) and evict (fadvise DONTNEED) the file before the
                        // run, and check; pages left (trusted residency): nothing is run
  bool faults = false;  // minor/major faults per operation (getrusage RUSAGE_THREAD)
  Verify verify = Verify::kNone;
  bool mincore = false;  // measure residency with mincore even where cachestat exists
  std::int32_t file_id = 0;
};

struct ProbeResult {
  std::int64_t t_begin_ns = 0;  // CLOCK_MONOTONIC, just before the first operation
  std::int64_t t_end_ns = 0;    // after the last thread finished
  Residency before;             // after eviction and hints, just before the run
  Residency after;
  bool ran = true;                // false: cold asked and pages were left, no operation run
  std::string cold_flush;         // fdatasync before the eviction: "ok" or why not ("EROFS")
  bool cold_evicted = false;      // cold asked and residency 0 afterwards (trusted)
  std::int64_t cold_left = -1;    // pages still resident after the eviction (-1: unknown)
  std::int64_t cold_dirty = -1;   // of which dirty (cachestat only; -1: unknown)
  std::vector<std::string> hints; // e.g. "fadvise(random)=ok", "madvise(hugepage)=EINVAL"
  std::int64_t verify_bad_ops = 0;
  std::int64_t verify_bad_bytes = 0;
  std::int64_t failed_ops = 0;  // err != 0 or fewer bytes than asked
  std::int64_t ops_done = 0;    // operations executed, summed over the workers
  int threads_used = 0;
};

// Byte `offset` of the test pattern: the little-endian 64-bit words splitmix64_mix(k).
inline unsigned char pattern_byte(std::int64_t offset) noexcept {
  const std::uint64_t w = splitmix64_mix(static_cast<std::uint64_t>(offset) >> 3);
  return static_cast<unsigned char>(w >> (8 * (static_cast<unsigned>(offset) & 7u)));
}

class Probe {
 public:
  // Opens and checks the file, plans the pattern.  Throws std::system_error
  // (errno, message naming the file) or std::invalid_argument (bad parameter).
  explicit Probe(ProbeConfig cfg);
  std::size_t op_count() const noexcept { return ops_.size(); }
  const std::vector<OpSpec>& ops() const noexcept { return ops_; }
  std::int64_t file_size() const noexcept { return cfg_.params.file_size; }
  std::int64_t page_size() const noexcept { return cfg_.params.page_size; }
  Access access() const noexcept { return access_; }
  // Runs the operations; `out` has room for op_count() events, events[i] is ops()[i].
  ProbeResult run(Event* out);

 private:
  ProbeConfig cfg_;
  const Pattern* pattern_ = nullptr;
  Access access_ = Access::kPread;
  Fd fd_;
  Fd verify_fd_;
  struct stat st_ {};
  std::vector<OpSpec> ops_;
};

// The plan alone (for tests and dry runs): same checks on parameters, no file.
std::vector<OpSpec> plan_pattern(const std::string& pattern, const PatternParams& p);

}  // namespace cmio::probe
