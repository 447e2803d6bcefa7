// The CVMFS publisher's xor32 content-defined chunker (upstream class
// Xor32Detector), reimplemented from the algorithm in shared/cvmfs-facts.md §1.
//
// Speed comes from one observation: the rolling value h at byte p depends only on
// the 32 bytes ending at p (each byte is shifted out after 32 steps), and the
// chunker always feeds at least 32 bytes before it tests.  So "p is a cut
// candidate" is a pure function of the data and avg, and the candidates can be
// found for long spans independently (8 spans at once with AVX2), then the cuts
// picked from the sorted candidates with min and max.
#pragma once

#include <cstdint>
#include <vector>

#include "chunking/chunker.h"

namespace cmio {

constexpr std::uint32_t kXor32Mid = 0x7FFFFFFFu;

inline std::uint32_t xor32_threshold(std::int64_t avg) noexcept {
  return static_cast<std::uint32_t>(0xFFFFFFFFull / static_cast<std::uint64_t>(avg));
}

// |h - M| as an unsigned distance; 0 for the h == 0xFFFFFFFF corner (a candidate
// for every avg).  h is a candidate for avg iff xor32_distance(h) < threshold(avg).
inline std::uint32_t xor32_distance(std::uint32_t h) noexcept {
  if (h == 0xFFFFFFFFu) return 0;
  return h >= kXor32Mid ? h - kXor32Mid : kXor32Mid - h;
}

inline bool xor32_is_candidate(std::uint32_t h, std::uint32_t threshold) noexcept {
  return xor32_distance(h) < threshold;
}

struct Xor32Candidate {
  std::int64_t pos;
  std::uint32_t distance;
};

// Streaming candidate finder: reports, in ascending order, every position whose
// 32-byte window value is a candidate for `threshold`.
class Xor32Scanner {
 public:
  explicit Xor32Scanner(std::uint32_t threshold, bool allow_simd = true);
  void feed(const std::uint8_t* data, std::size_t n, std::vector<Xor32Candidate>& out);
  // Pass over n bytes without looking at them; the window restarts empty (as the
  // publisher's, which resets h at a cut), so the next 31 positions are not
  // reliable candidates: callers only skip up to 32 bytes before a tested position.
  void skip(std::size_t n) noexcept {
    pos_ += static_cast<std::int64_t>(n);
    h_ = 0;
  }
  std::int64_t position() const noexcept { return pos_; }

 private:
  void scalar(const std::uint8_t* d, std::size_t from, std::size_t to,
              std::vector<Xor32Candidate>& out);
  std::uint32_t thr_;
  bool simd_;
  std::uint32_t h_ = 0;   // window value at position pos_ - 1
  std::int64_t pos_ = 0;  // absolute position of the next byte
  std::vector<Xor32Candidate> lane_hits_;
};

// Cut selection (cvmfs-facts.md §1 steps 4-6) from the sorted candidate
// positions of one avg: the chunk start offsets for (min, max).
std::vector<std::int64_t> xor32_cuts_from_candidates(const std::int64_t* cand, std::size_t n,
                                                     std::int64_t file_size, std::int64_t min_size,
                                                     std::int64_t max_size);

class Xor32Chunker final : public Chunker {
 public:
  explicit Xor32Chunker(const ChunkParams& p, bool allow_simd = true);
  void feed(const std::uint8_t* data, std::size_t n) override;
  Layout finish() override;

 private:
  void take(std::int64_t c);
  ChunkParams p_;
  Xor32Scanner scan_;
  std::vector<Xor32Candidate> hits_;
  std::int64_t last_ = 0;
  std::vector<std::int64_t> cuts_;
};

// Whole-buffer convenience.
Layout xor32_layout(const std::uint8_t* data, std::int64_t n, const ChunkParams& p);

}  // namespace cmio
