// Chunkers behind one interface, as the CVMFS publisher's ChunkDetector: feed the
// file in any pieces, then finish() returns the layout.  Cut positions never depend
// on how the data was split into pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cmio {

struct ChunkParams {
  std::int64_t min_size;
  std::int64_t avg_size;
  std::int64_t max_size;
};

// Throws std::invalid_argument unless 32 <= min < avg < max.
void validate(const ChunkParams& p);

// A layout: chunk start offsets (first is 0) plus the file size.  A single chunk
// means "not chunked" (stored as one whole object).
struct Layout {
  std::vector<std::int64_t> offsets;
  std::int64_t file_size = 0;
};

class Chunker {
 public:
  virtual ~Chunker() = default;
  // Feed the next n bytes of the file.
  virtual void feed(const std::uint8_t* data, std::size_t n) = 0;
  // Call once after the last byte.
  virtual Layout finish() = 0;
  // False for chunkers whose cuts depend only on the file size (fixed,
  // layout-aware): callers may then feed a size without reading the data.
  virtual bool needs_data() const { return true; }
  // Account for n bytes without their content (only when !needs_data()).
  virtual void skip(std::size_t n) { (void)n; }
};

enum class ChunkerKind { kXor32, kFixed, kFastCdc, kLayoutAware };

struct ChunkerSpec {
  ChunkerKind kind = ChunkerKind::kXor32;
  ChunkParams params{4 << 20, 8 << 20, 16 << 20};
  std::int64_t fixed_size = std::int64_t{24} << 20;
  std::vector<std::int64_t> preferred;  // layout-aware: preferred cut offsets
};

ChunkerKind parse_kind(const std::string& name);  // xor32, fixed, fastcdc, layout-aware

// Validates the spec (std::invalid_argument) and builds its chunker.
std::unique_ptr<Chunker> make_chunker(const ChunkerSpec& spec);

// Chunk a whole buffer / a file (read with read(2) in 4 MiB pieces).
Layout chunk_buffer(const ChunkerSpec& spec, const std::uint8_t* data, std::int64_t n);
Layout chunk_file(const ChunkerSpec& spec, const std::string& path);

// Read the file at `path` from start to end in 4 MiB pieces, calling
// `consume(data, n)` for each; returns the bytes read.  std::system_error on a
// failed open/read (EINTR retried).
std::int64_t read_file_blocks(const std::string& path,
                              const std::function<void(const std::uint8_t*, std::size_t)>& consume);

}  // namespace cmio
