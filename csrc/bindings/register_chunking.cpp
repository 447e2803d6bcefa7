#include <fcntl.h>
#include <unistd.h>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cerrno>
#include <algorithm>
#include <system_error>
#include <vector>

#include "bindings/register.h"
#include "chunking/xor32.h"

namespace py = pybind11;

namespace cmio {
namespace {

py::array_t<std::int64_t> to_array(const std::vector<std::int64_t>& v) {
  py::array_t<std::int64_t> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

Layout xor32_file(const std::string& path, const ChunkParams& p) {
  Xor32Chunker chunker(p);
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), path);
  std::vector<std::uint8_t> buf(1 << 20);
  for (;;) {
    const ssize_t r = ::read(f.fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), path);
    }
    if (r == 0) break;
    chunker.feed(buf.data(), static_cast<std::size_t>(r));
  }
  return chunker.finish();
}

}  // namespace

void register_chunking(py::module_& m) {
  m.def(
      "xor32_offsets_file",
      [](const std::string& path, std::int64_t min_size, std::int64_t avg_size, std::int64_t max_size) {
        const ChunkParams p{min_size, avg_size, max_size};
        validate(p);
        Layout l;
        {
          py::gil_scoped_release release;
          l = xor32_file(path, p);
        }
        return py::make_tuple(to_array(l.offsets), l.file_size);
      },
      py::arg("path"), py::arg("min_size"), py::arg("avg_size"), py::arg("max_size"),
      "CVMFS xor32 chunk start offsets of a file, and its size.");
  m.def(
      "xor32_offsets",
      [](py::buffer data, std::int64_t min_size, std::int64_t avg_size, std::int64_t max_size) {
        const ChunkParams p{min_size, avg_size, max_size};
        validate(p);
        py::buffer_info info = data.request();
        if (info.itemsize != 1) throw std::invalid_argument("data must be a bytes-like buffer");
        const auto* ptr = static_cast<const std::uint8_t*>(info.ptr);
        const auto n = static_cast<std::int64_t>(info.size);
        Layout l;
        {
          py::gil_scoped_release release;
          l = xor32_layout(ptr, n, p);
        }
        return to_array(l.offsets);
      },
      py::arg("data"), py::arg("min_size"), py::arg("avg_size"), py::arg("max_size"),
      "CVMFS xor32 chunk start offsets of a buffer.");
}

}  // namespace cmio
