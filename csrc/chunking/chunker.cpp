#include "chunking/chunker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "chunking/others.h"
#include "chunking/xor32.h"
#include "common/unique_fd.h"

namespace cmio {

ChunkerKind parse_kind(const std::string& name) {
  if (name == "xor32") return ChunkerKind::kXor32;
  if (name == "fixed") return ChunkerKind::kFixed;
  if (name == "fastcdc") return ChunkerKind::kFastCdc;
  if (name == "layout-aware") return ChunkerKind::kLayoutAware;
  throw std::invalid_argument("unknown chunker '" + name + "'");
}

std::unique_ptr<Chunker> make_chunker(const ChunkerSpec& spec) {
  switch (spec.kind) {
    case ChunkerKind::kXor32:
      return std::make_unique<Xor32Chunker>(spec.params);
    case ChunkerKind::kFixed:
      return std::make_unique<FixedChunker>(spec.fixed_size);
    case ChunkerKind::kFastCdc:
      return std::make_unique<FastCdcChunker>(spec.params);
    case ChunkerKind::kLayoutAware:
      return std::make_unique<LayoutAwareChunker>(spec.params, spec.preferred);
  }
  throw std::invalid_argument("unknown chunker kind");
}

Layout chunk_buffer(const ChunkerSpec& spec, const std::uint8_t* data, std::int64_t n) {
  auto c = make_chunker(spec);
  c->feed(data, static_cast<std::size_t>(n));
  return c->finish();
}

namespace {
std::int64_t read_fd_blocks(int fd, const std::string& path,
                            const std::function<void(const std::uint8_t*, std::size_t)>& consume) {
  std::vector<std::uint8_t> buf(std::size_t{4} << 20);
  std::int64_t total = 0;
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), path);
    }
    if (r == 0) return total;
    consume(buf.data(), static_cast<std::size_t>(r));
    total += r;
  }
}
}  // namespace

Layout chunk_file(const ChunkerSpec& spec, const std::string& path) {
  auto chunker = make_chunker(spec);
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) throw std::system_error(errno, std::generic_category(), path);
  if (!chunker->needs_data()) {
    const off_t end = ::lseek(f.get(), 0, SEEK_END);
    if (end < 0) throw std::system_error(errno, std::generic_category(), path);
    chunker->skip(static_cast<std::size_t>(end));
    return chunker->finish();
  }
  read_fd_blocks(f.get(), path, [&](const std::uint8_t* d, std::size_t n) { chunker->feed(d, n); });
  return chunker->finish();
}

std::int64_t read_file_blocks(const std::string& path,
                              const std::function<void(const std::uint8_t*, std::size_t)>& consume) {
  UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.valid()) throw std::system_error(errno, std::generic_category(), path);
  return read_fd_blocks(f.get(), path, consume);
}

}  // namespace cmio
