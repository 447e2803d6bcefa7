// The chunkers other than xor32: fixed size, FastCDC and layout-aware.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "chunking/chunker.h"

namespace cmio {

// Fixed-size chunks (cvmfs_swissknife graft uses 24 MiB); a file of at most
// `size` bytes is one object.
class FixedChunker final : public Chunker {
 public:
  explicit FixedChunker(std::int64_t size);
  void feed(const std::uint8_t*, std::size_t n) override { pos_ += static_cast<std::int64_t>(n); }
  void skip(std::size_t n) override { pos_ += static_cast<std::int64_t>(n); }
  bool needs_data() const override { return false; }
  Layout finish() override;

 private:
  std::int64_t size_;
  std::int64_t pos_ = 0;
};

// FastCDC (Xia et al., USENIX ATC 2016): gear rolling hash fp = (fp << 1) + G[b],
// a cut where the masked bits of fp are zero, min-size skipping, and normalized
// chunking: a stricter mask (log2(avg) + 2 bits) before the chunk reaches avg and a
// looser one (log2(avg) - 2 bits) after, so sizes cluster around avg.
//
// The masks test the top bits of fp, which depend on the 64 bytes ending at the
// byte; the hash is warmed up over the 64 bytes before the first tested byte, so
// like xor32 a cut depends only on content, never on where the previous cut fell
// or how the data is fed.  Gear values have their top bit clear, so a run of one
// repeated byte value (fp = -G[b]) never matches: constant data is cut at max.
// A chunk ends after byte p (chunk [last, p + 1)); tested p keep the chunk within
// [min, max]; min must be at least 64.
class FastCdcChunker final : public Chunker {
 public:
  explicit FastCdcChunker(const ChunkParams& p);
  void feed(const std::uint8_t* data, std::size_t n) override;
  Layout finish() override;
  static const std::array<std::uint64_t, 256>& gear();

 private:
  ChunkParams p_;
  std::uint64_t mask_small_;  // stricter, before avg
  std::uint64_t mask_large_;  // looser, after avg
  std::uint64_t fp_ = 0;
  std::int64_t pos_ = 0;
  std::int64_t last_ = 0;
  std::vector<std::int64_t> cuts_;
};

// Cut at preferred offsets (e.g. tensor boundaries): while the rest of the file is
// longer than min, among the preferred offsets in [last + min, min(last + max,
// size)) take the one closest to last + avg (the smaller on a tie); with none
// there, cut hard at last + max if the file goes on beyond it.
class LayoutAwareChunker final : public Chunker {
 public:
  LayoutAwareChunker(const ChunkParams& p, std::vector<std::int64_t> preferred);
  void feed(const std::uint8_t*, std::size_t n) override { pos_ += static_cast<std::int64_t>(n); }
  void skip(std::size_t n) override { pos_ += static_cast<std::int64_t>(n); }
  bool needs_data() const override { return false; }
  Layout finish() override;

 private:
  ChunkParams p_;
  std::vector<std::int64_t> preferred_;
  std::int64_t pos_ = 0;
};

}  // namespace cmio
