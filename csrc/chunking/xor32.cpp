#include "chunking/xor32.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace cmio {

void validate(const ChunkParams& p) {
  if (p.min_size < 32) throw std::invalid_argument("min chunk size must be at least 32 bytes");
  if (!(p.min_size < p.avg_size && p.avg_size < p.max_size))
    throw std::invalid_argument("chunk sizes must satisfy min < avg < max");
}

Xor32Chunker::Xor32Chunker(const ChunkParams& p) : p_(p), threshold_(xor32_threshold(p.avg_size)) {
  validate(p);
}

void Xor32Chunker::feed(const std::uint8_t* data, std::size_t n) {
  // Between cuts the state only matters from `last + min - 32` on; bytes
  // before that are skipped.  Positions in [last+min, last+max) are tested.
  std::size_t i = 0;
  while (i < n) {
    const std::int64_t warm = last_ + p_.min_size - 32;
    const std::int64_t test_from = last_ + p_.min_size;
    const std::int64_t hard = last_ + p_.max_size;
    if (pos_ < warm) {
      const std::int64_t skip = std::min<std::int64_t>(warm - pos_, static_cast<std::int64_t>(n - i));
      pos_ += skip;
      i += static_cast<std::size_t>(skip);
      continue;
    }
    if (pos_ == hard) {  // no candidate in [last+min, last+max): hard cut
      cuts_.push_back(hard);
      last_ = hard;
      h_ = 0;
      continue;
    }
    std::uint32_t h = h_;
    const std::uint32_t thr = threshold_;
    if (pos_ < test_from) {
      const std::int64_t k = std::min<std::int64_t>(test_from - pos_, static_cast<std::int64_t>(n - i));
      for (std::int64_t j = 0; j < k; ++j) h = (h << 1) ^ data[i + static_cast<std::size_t>(j)];
      pos_ += k;
      i += static_cast<std::size_t>(k);
      h_ = h;
      continue;
    }
    const std::int64_t k = std::min<std::int64_t>(hard - pos_, static_cast<std::int64_t>(n - i));
    std::int64_t j = 0;
    bool cut = false;
    for (; j < k; ++j) {
      h = (h << 1) ^ data[i + static_cast<std::size_t>(j)];
      if (xor32_is_candidate(h, thr)) {
        cut = true;
        break;
      }
    }
    if (cut) {
      const std::int64_t p = pos_ + j;
      cuts_.push_back(p);
      last_ = p;
      // Byte p starts the next chunk.  It is part of that chunk's warm-up
      // window only when min == 32.
      h_ = p_.min_size == 32 ? data[i + static_cast<std::size_t>(j)] : 0u;
      pos_ = p + 1;
      i += static_cast<std::size_t>(j + 1);
    } else {
      pos_ += k;
      i += static_cast<std::size_t>(k);
      h_ = h;
    }
  }
}

Layout Xor32Chunker::finish() {
  Layout out;
  out.file_size = pos_;
  out.offsets.push_back(0);
  if (pos_ <= p_.min_size) return out;
  // A hard cut exactly at EOF is not a cut: the rest is the last chunk.
  while (!cuts_.empty() && cuts_.back() >= pos_) cuts_.pop_back();
  for (std::int64_t c : cuts_) out.offsets.push_back(c);
  return out;
}

Layout xor32_layout(const std::uint8_t* data, std::int64_t n, const ChunkParams& p) {
  Xor32Chunker c(p);
  c.feed(data, static_cast<std::size_t>(n));
  return c.finish();
}

}  // namespace cmio
