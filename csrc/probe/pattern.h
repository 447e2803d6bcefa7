// Access patterns: each one is a small object that turns the file size and the
// parameters into the exact list of operations to run.  One pattern per file
// (pattern_*.cpp), each registering itself, so adding a pattern never edits the
// runner (the shape of fio's engines/).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cmio::probe {

// One operation: read (or touch) `length` bytes at `offset`.
struct OpSpec {
  std::int64_t offset;
  std::int64_t length;
};

// How an operation is carried out.
enum class Access {
  kPread,  // pread(2) into a buffer
  kTouch,  // load one byte of every page of [offset, offset+length) in a mapping
};

struct PatternParams {
  std::int64_t file_size = 0;  // bytes
  std::int64_t page_size = 4096;
  std::int64_t block = 0;   // bytes per operation
  std::int64_t stride = 0;  // bytes between operation starts (stride pattern)
  std::int64_t count = 0;   // operations (random patterns)
  std::int64_t align = 0;   // random offsets are multiples of this
  std::uint64_t seed = 0;
  std::vector<OpSpec> list;  // replay / mmap-list
};

class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual const char* name() const = 0;
  virtual Access access() const = 0;
  // Throws std::invalid_argument (message names the parameter) on bad parameters.
  virtual std::vector<OpSpec> plan(const PatternParams& p) const = 0;
};

// The registry.  Patterns register from static initialisers in their own file.
void register_pattern(std::unique_ptr<Pattern> p);
const Pattern* find_pattern(const std::string& name);  // nullptr if unknown
std::vector<std::string> pattern_names();

template <class P>
struct PatternRegistrar {
  PatternRegistrar() { register_pattern(std::make_unique<P>()); }
};

// Shared generators (so mmap-seq is exactly seq executed as touches, etc.).
std::vector<OpSpec> plan_sequential(std::int64_t file_size, std::int64_t block, std::int64_t stride);
std::vector<OpSpec> plan_random(const PatternParams& p, std::int64_t block, std::int64_t align);
std::vector<OpSpec> plan_list(const PatternParams& p);

// splitmix64: the random stream the random patterns draw from.  Python has the
// same function (cvmfs_modelio.probe_patterns) so plans can be checked exactly.
inline std::uint64_t splitmix64_mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__extension__ typedef unsigned __int128 U128;

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    state_ += 0x9e3779b97f4a7c15ULL;
    return splitmix64_mix(state_);
  }
  // Uniform in [0, n) by the multiply-shift map (no division; bias < n / 2^64).
  std::uint64_t below(std::uint64_t n) noexcept {
    return static_cast<std::uint64_t>((static_cast<U128>(next()) * n) >> 64);
  }

 private:
  std::uint64_t state_;
};

}  // namespace cmio::probe
