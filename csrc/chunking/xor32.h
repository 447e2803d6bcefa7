// The CVMFS publisher's xor32 content-defined chunker (upstream class
// Xor32Detector), reimplemented from the algorithm in shared/cvmfs-facts.md §1.
#pragma once

#include <cstdint>
#include <vector>

namespace cmio {

struct ChunkParams {
  std::int64_t min_size;
  std::int64_t avg_size;
  std::int64_t max_size;
};

// Throws std::invalid_argument unless 32 <= min < avg < max.
void validate(const ChunkParams& p);

// A layout: chunk start offsets plus the file size.  A single chunk means
// "not chunked" (stored as one whole object).
struct Layout {
  std::vector<std::int64_t> offsets;
  std::int64_t file_size = 0;
};

// Is the rolling value `h` a cut candidate for this average size?
inline bool xor32_is_candidate(std::uint32_t h, std::uint32_t threshold) noexcept {
  constexpr std::uint64_t kM = 0x7FFFFFFFu;
  const std::uint64_t v = h;
  return (v + threshold > kM && v < kM + threshold) || h == 0xFFFFFFFFu;
}

inline std::uint32_t xor32_threshold(std::int64_t avg) noexcept {
  return static_cast<std::uint32_t>(0xFFFFFFFFull / static_cast<std::uint64_t>(avg));
}

// Streaming chunker: feed the file in any pieces; cuts do not depend on how.
class Xor32Chunker {
 public:
  explicit Xor32Chunker(const ChunkParams& p);
  void feed(const std::uint8_t* data, std::size_t n);
  // Call once after the last byte; returns the layout.
  Layout finish();

 private:
  ChunkParams p_;
  std::uint32_t threshold_;
  std::uint32_t h_ = 0;
  std::int64_t pos_ = 0;   // absolute position of the next byte
  std::int64_t last_ = 0;  // start of the current chunk
  std::vector<std::int64_t> cuts_;
};

// Whole-buffer convenience.
Layout xor32_layout(const std::uint8_t* data, std::int64_t n, const ChunkParams& p);

}  // namespace cmio
