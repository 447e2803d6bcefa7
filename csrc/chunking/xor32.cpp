#include "chunking/xor32.h"

#include <algorithm>
#include <stdexcept>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CMIO_HAVE_AVX2_KERNEL 1
#endif

namespace cmio {

namespace {

// Window value of the 32 bytes ending at d[end - 1] (needs end >= 32).
inline std::uint32_t window_value(const std::uint8_t* d, std::size_t end) noexcept {
  std::uint32_t h = 0;
  for (std::size_t k = end - 32; k < end; ++k) h = (h << 1) ^ d[k];
  return h;
}

constexpr std::size_t kLanes = 8;
constexpr std::size_t kMinSimdSpan = 4096;

#ifdef CMIO_HAVE_AVX2_KERNEL
// Eight independent spans of `lane_len` positions (a multiple of 4) starting at
// d + start; d[start - 32 .. start) must be readable.  Candidates go to `hits`
// unsorted (span by span), with positions relative to d.
__attribute__((target("avx2"))) void kernel_avx2(const std::uint8_t* d, std::size_t start,
                                                 std::size_t lane_len, std::uint32_t thr,
                                                 std::vector<Xor32Candidate>& hits) {
  alignas(32) std::uint32_t init[kLanes];
  alignas(32) std::int32_t idx[kLanes];
  for (std::size_t j = 0; j < kLanes; ++j) {
    init[j] = window_value(d, start + j * lane_len);
    idx[j] = static_cast<std::int32_t>(j * lane_len);
  }
  __m256i h = _mm256_load_si256(reinterpret_cast<const __m256i*>(init));
  const __m256i vidx = _mm256_load_si256(reinterpret_cast<const __m256i*>(idx));
  // Candidate iff (h - lo) < width, unsigned: lo = M - thr + 1, width = 2 thr - 1.
  // AVX2 compares signed, so both sides are offset by 2^31.
  const std::uint32_t lo = kXor32Mid - thr + 1u;
  const std::uint32_t width = thr == 0 ? 0u : 2u * thr - 1u;
  const __m256i vlo = _mm256_set1_epi32(static_cast<int>(lo));
  const __m256i vwidth = _mm256_set1_epi32(static_cast<int>(width ^ 0x80000000u));
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i ones = _mm256_set1_epi32(-1);
  const __m256i bytemask = _mm256_set1_epi32(0xFF);
  const std::uint8_t* base = d + start;
  for (std::size_t t = 0; t < lane_len; t += 4) {
    const __m256i g = _mm256_i32gather_epi32(reinterpret_cast<const int*>(base + t), vidx, 1);
    const __m256i h0 = h;
    __m256i hit = _mm256_setzero_si256();
#define CMIO_STEP(SHIFT)                                                                   \
  {                                                                                        \
    const __m256i b = _mm256_and_si256(_mm256_srli_epi32(g, SHIFT), bytemask);             \
    h = _mm256_xor_si256(_mm256_slli_epi32(h, 1), b);                                      \
    const __m256i x = _mm256_xor_si256(_mm256_sub_epi32(h, vlo), sign);                    \
    hit = _mm256_or_si256(hit, _mm256_or_si256(_mm256_cmpgt_epi32(vwidth, x),              \
                                               _mm256_cmpeq_epi32(h, ones)));              \
  }
    CMIO_STEP(0)
    CMIO_STEP(8)
    CMIO_STEP(16)
    CMIO_STEP(24)
#undef CMIO_STEP
    if (!_mm256_testz_si256(hit, hit)) {
      alignas(32) std::uint32_t prev[kLanes];
      _mm256_store_si256(reinterpret_cast<__m256i*>(prev), h0);
      const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(hit));
      for (std::size_t j = 0; j < kLanes; ++j) {
        if (!(mask & (1 << j))) continue;
        std::uint32_t hh = prev[j];
        for (std::size_t s = 0; s < 4; ++s) {
          const std::size_t p = start + j * lane_len + t + s;
          hh = (hh << 1) ^ d[p];
          const std::uint32_t dist = xor32_distance(hh);
          if (dist < thr) hits.push_back({static_cast<std::int64_t>(p), dist});
        }
      }
    }
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") != 0;
  return has;
}
#endif

}  // namespace

void validate(const ChunkParams& p) {
  if (p.min_size < 32) throw std::invalid_argument("min chunk size must be at least 32 bytes");
  if (!(p.min_size < p.avg_size && p.avg_size < p.max_size))
    throw std::invalid_argument("chunk sizes must satisfy min < avg < max");
  if (p.max_size > (std::int64_t{1} << 61)) throw std::invalid_argument("max chunk size too large");
}

Xor32Scanner::Xor32Scanner(std::uint32_t threshold, bool allow_simd) : thr_(threshold), simd_(false) {
#ifdef CMIO_HAVE_AVX2_KERNEL
  simd_ = allow_simd && cpu_has_avx2();
#else
  (void)allow_simd;
#endif
}

void Xor32Scanner::scalar(const std::uint8_t* d, std::size_t from, std::size_t to,
                          std::vector<Xor32Candidate>& out) {
  std::uint32_t h = h_;
  const std::uint32_t thr = thr_;
  for (std::size_t i = from; i < to; ++i) {
    h = (h << 1) ^ d[i];
    const std::uint32_t dist = xor32_distance(h);
    if (dist < thr) out.push_back({pos_ + static_cast<std::int64_t>(i), dist});
  }
  h_ = h;
}

void Xor32Scanner::feed(const std::uint8_t* d, std::size_t n, std::vector<Xor32Candidate>& out) {
  std::size_t i = 0;
#ifdef CMIO_HAVE_AVX2_KERNEL
  if (simd_ && n >= 32 + kMinSimdSpan) {
    // Positions < 32 of this piece have windows reaching into the previous piece:
    // roll them on from the saved state.  The rest is split into 8 spans.
    scalar(d, 0, 32, out);
    // Blocks of 8 spans of at most 32 KiB each (256 KiB, within L2) keep the
    // gather's indices small; hits are sorted block by block.
    constexpr std::size_t kMaxLane = std::size_t{1} << 15;
    i = 32;
    while (n - i >= kMinSimdSpan) {
      std::size_t lane = std::min((n - i) / kLanes, kMaxLane) & ~std::size_t{3};
      lane_hits_.clear();
      kernel_avx2(d, i, lane, thr_, lane_hits_);
      std::sort(lane_hits_.begin(), lane_hits_.end(),
                [](const Xor32Candidate& a, const Xor32Candidate& b) { return a.pos < b.pos; });
      for (const auto& c : lane_hits_) out.push_back({pos_ + c.pos, c.distance});
      i += lane * kLanes;
    }
    h_ = window_value(d, i);
  }
#endif
  scalar(d, i, n, out);
  pos_ += static_cast<std::int64_t>(n);
}

std::vector<std::int64_t> xor32_cuts_from_candidates(const std::int64_t* cand, std::size_t n,
                                                     std::int64_t file_size, std::int64_t min_size,
                                                     std::int64_t max_size) {
  std::vector<std::int64_t> offsets{0};
  std::int64_t last = 0;
  const std::int64_t* it = cand;
  const std::int64_t* end = cand + n;
  for (;;) {
    const std::int64_t lo = last + min_size;
    if (lo >= file_size) break;
    it = std::lower_bound(it, end, lo);
    const std::int64_t limit = std::min(last + max_size, file_size);
    if (it != end && *it < limit) {
      last = *it;
    } else if (last + max_size < file_size) {
      last += max_size;  // no candidate in [last + min, last + max): hard cut
    } else {
      break;
    }
    offsets.push_back(last);
  }
  return offsets;
}

Xor32Chunker::Xor32Chunker(const ChunkParams& p, bool allow_simd)
    : p_(p), scan_(xor32_threshold(p.avg_size), allow_simd) {
  validate(p);
}

void Xor32Chunker::take(std::int64_t c) {
  for (;;) {
    if (c < last_ + p_.min_size) return;
    if (c < last_ + p_.max_size) {
      cuts_.push_back(c);
      last_ = c;
      return;
    }
    // A candidate at or past last + max: the file goes on beyond last + max and
    // nothing was found in [last + min, last + max), so cut hard there.
    last_ += p_.max_size;
    cuts_.push_back(last_);
  }
}

void Xor32Chunker::feed(const std::uint8_t* data, std::size_t n) {
  // Bytes before last + min - 32 cannot influence a tested window: skip them.
  // Scan in steps so that a cut found early in a step lets the rest of the
  // chunk's minimum be skipped.
  const std::size_t step = static_cast<std::size_t>(
      std::clamp<std::int64_t>((p_.max_size - p_.min_size) / 8, 64 << 10, 1 << 20));
  std::size_t i = 0;
  while (i < n) {
    const std::int64_t pos = scan_.position();
    const std::int64_t warm = last_ + p_.min_size - 32;
    const std::size_t left = n - i;
    if (pos < warm) {
      const auto k = static_cast<std::size_t>(std::min<std::int64_t>(warm - pos, static_cast<std::int64_t>(left)));
      scan_.skip(k);
      i += k;
      continue;
    }
    if (pos == last_ + p_.max_size) {  // more data follows, nothing found: hard cut
      last_ = pos;
      cuts_.push_back(pos);
      continue;
    }
    const auto k = static_cast<std::size_t>(std::min<std::int64_t>(
        {last_ + p_.max_size - pos, static_cast<std::int64_t>(left), static_cast<std::int64_t>(step)}));
    hits_.clear();
    scan_.feed(data + i, k, hits_);
    i += k;
    for (const auto& c : hits_) take(c.pos);
  }
}

Layout Xor32Chunker::finish() {
  Layout out;
  out.file_size = scan_.position();
  while (last_ + p_.max_size < out.file_size) {
    last_ += p_.max_size;
    cuts_.push_back(last_);
  }
  out.offsets.push_back(0);
  out.offsets.insert(out.offsets.end(), cuts_.begin(), cuts_.end());
  return out;
}

Layout xor32_layout(const std::uint8_t* data, std::int64_t n, const ChunkParams& p) {
  Xor32Chunker c(p);
  c.feed(data, static_cast<std::size_t>(n));
  return c.finish();
}

}  // namespace cmio
