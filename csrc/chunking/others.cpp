#include "chunking/others.h"

#include <algorithm>
#include <stdexcept>

namespace cmio {

FixedChunker::FixedChunker(std::int64_t size) : size_(size) {
  if (size < 1) throw std::invalid_argument("fixed chunk size must be at least 1 byte");
}

Layout FixedChunker::finish() {
  Layout out;
  out.file_size = pos_;
  for (std::int64_t o = 0; o == 0 || o < pos_; o += size_) out.offsets.push_back(o);
  return out;
}

namespace {

std::uint64_t top_bits(int bits) {
  bits = std::clamp(bits, 1, 63);
  return ~std::uint64_t{0} << (64 - bits);
}

int log2_round(std::int64_t v) {
  int b = 0;
  while ((std::int64_t{1} << (b + 1)) <= v) ++b;
  // Round to nearest: v >= 1.5 * 2^b goes up.
  if (v - (std::int64_t{1} << b) >= (std::int64_t{1} << b) / 2) ++b;
  return b;
}

}  // namespace

const std::array<std::uint64_t, 256>& FastCdcChunker::gear() {
  static const std::array<std::uint64_t, 256> table = [] {
    std::array<std::uint64_t, 256> t{};
    std::uint64_t s = 0x6366646367656172ull;  // fixed seed: layouts are reproducible
    for (auto& g : t) {
      do {  // splitmix64
        s += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        g = (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFFull;
      } while (g == 0);
    }
    return t;
  }();
  return table;
}

FastCdcChunker::FastCdcChunker(const ChunkParams& p) : p_(p) {
  validate(p);
  if (p.min_size < 64) throw std::invalid_argument("FastCDC min chunk size must be at least 64 bytes");
  const int bits = log2_round(p.avg_size);
  mask_small_ = top_bits(bits + 2);
  mask_large_ = top_bits(bits - 2);
}

void FastCdcChunker::feed(const std::uint8_t* data, std::size_t n) {
  const auto& g = gear();
  std::size_t i = 0;
  while (i < n) {
    // Tested bytes p: chunk [last, p + 1) within [min, max].
    const std::int64_t first_test = last_ + p_.min_size - 1;
    const std::int64_t warm = first_test - 64;
    const std::int64_t hard = last_ + p_.max_size;  // first byte after a max-size chunk
    const std::int64_t normal = last_ + p_.avg_size - 1;  // last byte tested with the small mask
    if (pos_ < warm) {
      const std::int64_t k = std::min<std::int64_t>(warm - pos_, static_cast<std::int64_t>(n - i));
      pos_ += k;
      i += static_cast<std::size_t>(k);
      continue;
    }
    if (pos_ == hard) {
      cuts_.push_back(hard);
      last_ = hard;
      continue;
    }
    std::uint64_t fp = fp_;
    if (pos_ < first_test) {
      const std::int64_t k =
          std::min<std::int64_t>(first_test - pos_, static_cast<std::int64_t>(n - i));
      for (std::int64_t j = 0; j < k; ++j) fp = (fp << 1) + g[data[i + static_cast<std::size_t>(j)]];
      fp_ = fp;
      pos_ += k;
      i += static_cast<std::size_t>(k);
      continue;
    }
    const bool small = pos_ < normal;
    const std::uint64_t mask = small ? mask_small_ : mask_large_;
    const std::int64_t until = small ? normal : hard;
    const std::int64_t k = std::min<std::int64_t>(until - pos_, static_cast<std::int64_t>(n - i));
    std::int64_t j = 0;
    bool cut = false;
    for (; j < k; ++j) {
      fp = (fp << 1) + g[data[i + static_cast<std::size_t>(j)]];
      if ((fp & mask) == 0) {
        cut = true;
        break;
      }
    }
    if (cut) {
      const std::int64_t c = pos_ + j + 1;
      fp_ = fp;
      pos_ = c;
      i += static_cast<std::size_t>(j + 1);
      cuts_.push_back(c);
      last_ = c;
    } else {
      fp_ = fp;
      pos_ += k;
      i += static_cast<std::size_t>(k);
    }
  }
}

Layout FastCdcChunker::finish() {
  Layout out;
  out.file_size = pos_;
  out.offsets.push_back(0);
  // A hard cut exactly at the end of the file is not a cut.
  for (std::int64_t c : cuts_)
    if (c < pos_) out.offsets.push_back(c);
  return out;
}

LayoutAwareChunker::LayoutAwareChunker(const ChunkParams& p, std::vector<std::int64_t> preferred)
    : p_(p), preferred_(std::move(preferred)) {
  validate(p);
  std::sort(preferred_.begin(), preferred_.end());
  preferred_.erase(std::unique(preferred_.begin(), preferred_.end()), preferred_.end());
}

Layout LayoutAwareChunker::finish() {
  Layout out;
  out.file_size = pos_;
  out.offsets.push_back(0);
  std::int64_t last = 0;
  auto it = preferred_.cbegin();
  for (;;) {
    const std::int64_t lo = last + p_.min_size;
    if (lo >= pos_) break;
    const std::int64_t hi = std::min(last + p_.max_size, pos_);  // exclusive
    it = std::lower_bound(it, preferred_.cend(), lo);
    auto stop = std::lower_bound(it, preferred_.cend(), hi);
    if (it != stop) {
      const std::int64_t target = last + p_.avg_size;
      auto above = std::lower_bound(it, stop, target);
      std::int64_t best;
      if (above == stop) {
        best = *(stop - 1);
      } else if (above == it) {
        best = *above;
      } else {
        const std::int64_t below = *(above - 1);
        best = (target - below <= *above - target) ? below : *above;
      }
      last = best;
    } else if (last + p_.max_size < pos_) {
      last += p_.max_size;
    } else {
      break;
    }
    out.offsets.push_back(last);
  }
  return out;
}

}  // namespace cmio
