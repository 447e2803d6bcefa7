#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "bindings/register.h"
#include "chunking/chunker.h"
#include "chunking/others.h"
#include "chunking/xor32.h"

namespace py = pybind11;

namespace cmio {
namespace {

using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

py::array_t<std::int64_t> to_array(const std::vector<std::int64_t>& v) {
  py::array_t<std::int64_t> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

ChunkerSpec make_spec(const std::string& kind, std::int64_t min_size, std::int64_t avg_size,
                      std::int64_t max_size, std::int64_t fixed_size,
                      std::vector<std::int64_t> preferred) {
  ChunkerSpec s;
  s.kind = parse_kind(kind);
  s.params = {min_size, avg_size, max_size};
  s.fixed_size = fixed_size;
  s.preferred = std::move(preferred);
  return s;
}

struct BytesView {
  const std::uint8_t* ptr;
  std::size_t n;
};

BytesView view(const py::buffer_info& info) {
  if (info.itemsize != 1) throw std::invalid_argument("data must be a bytes-like buffer");
  return {static_cast<const std::uint8_t*>(info.ptr), static_cast<std::size_t>(info.size)};
}

// Every xor32 candidate of a file for the smallest avg of a sweep, with its
// distance, so the candidates of any larger avg are a filter away.
std::int64_t scan_file(const std::string& path, std::uint32_t thr,
                       std::vector<Xor32Candidate>& out) {
  Xor32Scanner scan(thr);
  read_file_blocks(path, [&](const std::uint8_t* d, std::size_t n) { scan.feed(d, n, out); });
  return scan.position();
}

py::tuple candidates_tuple(const std::vector<Xor32Candidate>& c, std::int64_t size) {
  py::array_t<std::int64_t> pos(static_cast<py::ssize_t>(c.size()));
  py::array_t<std::uint32_t> dist(static_cast<py::ssize_t>(c.size()));
  auto* p = pos.mutable_data();
  auto* d = dist.mutable_data();
  for (std::size_t i = 0; i < c.size(); ++i) {
    p[i] = c[i].pos;
    d[i] = c[i].distance;
  }
  return py::make_tuple(pos, dist, size);
}

// Run an I/O call without the GIL; a failed syscall becomes Python's OSError
// (errno, strerror, filename) rather than pybind11's generic RuntimeError.
template <class F>
auto without_gil_io(const std::string& path, F&& f) -> decltype(f()) {
  int err = 0;
  {
    py::gil_scoped_release release;
    try {
      return f();
    } catch (const std::system_error& e) {
      err = e.code().value();
    }
  }
  errno = err;
  PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
  throw py::error_already_set();
}

class PyChunker {
 public:
  explicit PyChunker(const ChunkerSpec& s) : c_(make_chunker(s)) {}
  void feed(const py::buffer& data) {
    if (!c_) throw std::runtime_error("chunker already finished");
    py::buffer_info info = data.request();
    const BytesView v = view(info);
    py::gil_scoped_release release;
    c_->feed(v.ptr, v.n);
  }
  py::tuple finish() {
    if (!c_) throw std::runtime_error("chunker already finished");
    Layout l = c_->finish();
    c_.reset();
    return py::make_tuple(to_array(l.offsets), l.file_size);
  }

 private:
  std::unique_ptr<Chunker> c_;
};

}  // namespace

void register_chunking(py::module_& m) {
  m.def(
      "xor32_offsets_file",
      [](const std::string& path, std::int64_t min_size, std::int64_t avg_size, std::int64_t max_size) {
        ChunkerSpec s;
        s.params = {min_size, avg_size, max_size};
        validate(s.params);
        const Layout l = without_gil_io(path, [&] { return chunk_file(s, path); });
        return py::make_tuple(to_array(l.offsets), l.file_size);
      },
      py::arg("path"), py::arg("min_size"), py::arg("avg_size"), py::arg("max_size"),
      "CVMFS xor32 chunk start offsets of a file, and its size.");
  m.def(
      "xor32_offsets",
      [](const py::buffer& data, std::int64_t min_size, std::int64_t avg_size, std::int64_t max_size,
         bool simd) {
        const ChunkParams p{min_size, avg_size, max_size};
        validate(p);
        py::buffer_info info = data.request();
        const BytesView v = view(info);
        Layout l;
        {
          py::gil_scoped_release release;
          Xor32Chunker c(p, simd);
          c.feed(v.ptr, v.n);
          l = c.finish();
        }
        return to_array(l.offsets);
      },
      py::arg("data"), py::arg("min_size"), py::arg("avg_size"), py::arg("max_size"),
      py::arg("simd") = true, "CVMFS xor32 chunk start offsets of a buffer.");
  m.def(
      "chunk_offsets",
      [](const py::buffer& data, const std::string& kind, std::int64_t min_size, std::int64_t avg_size,
         std::int64_t max_size, std::int64_t fixed_size, std::vector<std::int64_t> preferred) {
        const ChunkerSpec s = make_spec(kind, min_size, avg_size, max_size, fixed_size, std::move(preferred));
        py::buffer_info info = data.request();
        const BytesView v = view(info);
        Layout l;
        {
          py::gil_scoped_release release;
          l = chunk_buffer(s, v.ptr, static_cast<std::int64_t>(v.n));
        }
        return to_array(l.offsets);
      },
      py::arg("data"), py::arg("kind"), py::arg("min_size") = 4 << 20, py::arg("avg_size") = 8 << 20,
      py::arg("max_size") = 16 << 20, py::arg("fixed_size") = std::int64_t{24} << 20,
      py::arg("preferred") = std::vector<std::int64_t>{},
      "Chunk start offsets of a buffer with any chunker (xor32, fixed, fastcdc, layout-aware).");
  m.def(
      "chunk_offsets_file",
      [](const std::string& path, const std::string& kind, std::int64_t min_size, std::int64_t avg_size,
         std::int64_t max_size, std::int64_t fixed_size, std::vector<std::int64_t> preferred) {
        const ChunkerSpec s = make_spec(kind, min_size, avg_size, max_size, fixed_size, std::move(preferred));
        (void)make_chunker(s);  // validate with the GIL held
        const Layout l = without_gil_io(path, [&] { return chunk_file(s, path); });
        return py::make_tuple(to_array(l.offsets), l.file_size);
      },
      py::arg("path"), py::arg("kind"), py::arg("min_size") = 4 << 20, py::arg("avg_size") = 8 << 20,
      py::arg("max_size") = 16 << 20, py::arg("fixed_size") = std::int64_t{24} << 20,
      py::arg("preferred") = std::vector<std::int64_t>{},
      "Chunk start offsets of a file with any chunker, and the file size.");
  py::class_<PyChunker>(m, "Chunker", "Streaming chunker: feed() pieces, then finish().")
      .def(py::init([](const std::string& kind, std::int64_t min_size, std::int64_t avg_size,
                       std::int64_t max_size, std::int64_t fixed_size, std::vector<std::int64_t> preferred) {
             return PyChunker(make_spec(kind, min_size, avg_size, max_size, fixed_size, std::move(preferred)));
           }),
           py::arg("kind"), py::arg("min_size") = 4 << 20, py::arg("avg_size") = 8 << 20,
           py::arg("max_size") = 16 << 20, py::arg("fixed_size") = std::int64_t{24} << 20,
           py::arg("preferred") = std::vector<std::int64_t>{})
      .def("feed", &PyChunker::feed, py::arg("data"))
      .def("finish", &PyChunker::finish);
  m.def(
      "xor32_scan",
      [](const py::buffer& data, std::int64_t avg_size) {
        if (avg_size < 2) throw std::invalid_argument("avg must be at least 2");
        py::buffer_info info = data.request();
        const BytesView v = view(info);
        std::vector<Xor32Candidate> out;
        {
          py::gil_scoped_release release;
          Xor32Scanner s(xor32_threshold(avg_size));
          s.feed(v.ptr, v.n, out);
        }
        return candidates_tuple(out, static_cast<std::int64_t>(v.n));
      },
      py::arg("data"), py::arg("avg_size"),
      "xor32 candidates of a buffer for avg: (positions, distances |h - 0x7FFFFFFF|, size).");
  m.def(
      "xor32_scan_file",
      [](const std::string& path, std::int64_t avg_size) {
        if (avg_size < 2) throw std::invalid_argument("avg must be at least 2");
        std::vector<Xor32Candidate> out;
        const std::int64_t size =
            without_gil_io(path, [&] { return scan_file(path, xor32_threshold(avg_size), out); });
        return candidates_tuple(out, size);
      },
      py::arg("path"), py::arg("avg_size"),
      "xor32 candidates of a file for avg: (positions, distances, file size).");
  m.def(
      "xor32_threshold", [](std::int64_t avg) { return xor32_threshold(avg); }, py::arg("avg_size"),
      "floor((2^32 - 1) / avg): a candidate's distance is below it.");
  m.def(
      "xor32_cuts",
      [](const I64& candidates, std::int64_t file_size, std::int64_t min_size, std::int64_t max_size) {
        if (min_size < 1 || max_size <= min_size) throw std::invalid_argument("need 1 <= min < max");
        const auto* p = candidates.data();
        const auto n = static_cast<std::size_t>(candidates.size());
        if (!std::is_sorted(p, p + n)) throw std::invalid_argument("candidates must be sorted");
        std::vector<std::int64_t> out;
        {
          py::gil_scoped_release release;
          out = xor32_cuts_from_candidates(p, n, file_size, min_size, max_size);
        }
        return to_array(out);
      },
      py::arg("candidates"), py::arg("file_size"), py::arg("min_size"), py::arg("max_size"),
      "xor32 chunk start offsets from the sorted candidate positions of one avg.");
}

}  // namespace cmio
