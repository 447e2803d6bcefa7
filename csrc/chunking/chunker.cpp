#include "chunking/chunker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "chunking/others.h"
#include "chunking/xor32.h"

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
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};
}  // namespace

Layout chunk_file(const ChunkerSpec& spec, const std::string& path) {
  auto chunker = make_chunker(spec);
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), path);
  if (!chunker->needs_data()) {
    const off_t end = ::lseek(f.fd, 0, SEEK_END);
    if (end < 0) throw std::system_error(errno, std::generic_category(), path);
    chunker->skip(static_cast<std::size_t>(end));
    return chunker->finish();
  }
  std::vector<std::uint8_t> buf(std::size_t{4} << 20);
  for (;;) {
    const ssize_t r = ::read(f.fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), path);
    }
    if (r == 0) break;
    chunker->feed(buf.data(), static_cast<std::size_t>(r));
  }
  return chunker->finish();
}

}  // namespace cmio
