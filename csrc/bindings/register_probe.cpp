// Bindings of the probe engine: plan a pattern, run it into a numpy event array.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>

#include "bindings/register.h"
#include "common/event.h"
#include "probe/hints.h"
#include "probe/probe.h"

namespace py = pybind11;


namespace cmio {
namespace {

using probe::OpSpec;

std::vector<OpSpec> to_ops(const std::optional<py::array_t<std::int64_t, py::array::c_style>>& a) {
  std::vector<OpSpec> out;
  if (!a) return out;
  if (a->ndim() != 2 || a->shape(1) != 2)
    throw std::invalid_argument("ranges must be an (n, 2) array of (offset, length)");
  auto r = a->unchecked<2>();
  out.reserve(static_cast<std::size_t>(r.shape(0)));
  for (py::ssize_t i = 0; i < r.shape(0); ++i) out.push_back({r(i, 0), r(i, 1)});
  return out;
}

// The pattern parameters both probe_plan and probe_run take from Python.
probe::PatternParams pattern_params(std::int64_t block, std::int64_t stride, std::int64_t count,
                                    std::int64_t align, std::uint64_t seed,
                                    const std::optional<py::array_t<std::int64_t, py::array::c_style>>& ranges) {
  probe::PatternParams p;
  p.block = block;
  p.stride = stride;
  p.count = count;
  p.align = align;
  p.seed = seed;
  p.list = to_ops(ranges);
  return p;
}

py::array_t<std::int64_t> ops_array(const std::vector<OpSpec>& ops) {
  py::array_t<std::int64_t> a({static_cast<py::ssize_t>(ops.size()), py::ssize_t{2}});
  auto w = a.mutable_unchecked<2>();
  for (py::ssize_t i = 0; i < w.shape(0); ++i) {
    w(i, 0) = ops[static_cast<std::size_t>(i)].offset;
    w(i, 1) = ops[static_cast<std::size_t>(i)].length;
  }
  return a;
}

py::dict residency_dict(const probe::Residency& r) {
  py::dict d;
  d["trusted"] = r.trusted;
  d["pages"] = r.pages;
  d["dirty"] = r.dirty;
  d["total_pages"] = r.total_pages;
  d["method"] = r.method;
  return d;
}

probe::Verify parse_verify(const std::string& v) {
  if (v.empty() || v == "none") return probe::Verify::kNone;
  if (v == "file") return probe::Verify::kFile;
  if (v == "pattern") return probe::Verify::kPattern;
  throw std::invalid_argument("unknown verify mode '" + v + "' (valid: none, file, pattern)");
}

}  // namespace

void register_probe(py::module_& m) {
  PYBIND11_NUMPY_DTYPE(Event, t_start_ns, duration_ns, offset, length, result, aux, pid, tid, file_id, fd,
                       err, minflt, majflt, source, op);
  // OS errors keep their errno so Python can word them (FileNotFoundError, PermissionError, ...).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const probe::OsError& e) {
      const int err = e.code().value();
      const std::string& what = e.where();
      py::object exc = py::module_::import("builtins").attr("OSError")(err, std::strerror(err), what);
      PyErr_SetObject(PyExc_OSError, exc.ptr());
    }
  });

  m.def("probe_patterns", &probe::pattern_names, "Names of the registered access patterns.");
  m.def("probe_fadvise_hints", &probe::fadvise_names, "posix_fadvise hint names.");
  m.def("probe_madvise_hints", &probe::madvise_names, "madvise hint names.");
  m.def("probe_pattern_is_mmap", [](const std::string& name) {
    const probe::Pattern* p = probe::find_pattern(name);
    if (p == nullptr) throw std::invalid_argument("unknown pattern '" + name + "'");
    return p->access() == probe::Access::kTouch;
  });
  m.def(
      "probe_plan",
      [](const std::string& pattern, std::int64_t file_size, std::int64_t block, std::int64_t stride,
         std::int64_t count, std::int64_t align, std::uint64_t seed, std::int64_t page_size,
         const std::optional<py::array_t<std::int64_t, py::array::c_style>>& ranges) {
        probe::PatternParams p = pattern_params(block, stride, count, align, seed, ranges);
        p.file_size = file_size;
        p.page_size = page_size;
        return ops_array(probe::plan_pattern(pattern, p));
      },
      py::arg("pattern"), py::arg("file_size"), py::arg("block"), py::arg("stride"), py::arg("count"),
      py::arg("align"), py::arg("seed"), py::arg("page_size"), py::arg("ranges") = py::none(),
      "The (offset, length) operations a pattern makes for a file of file_size bytes.");
  m.def(
      "probe_run",
      [](const std::string& path, const std::string& pattern, std::int64_t block, std::int64_t stride,
         std::int64_t count, std::int64_t align, std::uint64_t seed,
         const std::optional<py::array_t<std::int64_t, py::array::c_style>>& ranges, int threads,
         const std::string& fadvise, const std::string& madvise, bool cold, bool faults,
         const std::string& verify, std::int32_t file_id, const std::string& residency) {
        probe::ProbeConfig cfg;
        cfg.path = path;
        cfg.pattern = pattern;
        cfg.params = pattern_params(block, stride, count, align, seed, ranges);
        cfg.threads = threads;
        cfg.fadvise = fadvise;
        cfg.madvise = madvise;
        cfg.cold = cold;
        cfg.faults = faults;
        cfg.verify = parse_verify(verify);
        cfg.file_id = file_id;
        if (residency != "auto" && residency != "mincore")
          throw std::invalid_argument("unknown residency method '" + residency + "' (valid: auto, mincore)");
        cfg.mincore = residency == "mincore";
        std::optional<probe::Probe> pr;
        {
          py::gil_scoped_release release;
          pr.emplace(std::move(cfg));
        }
        // The events go straight into the array's buffer: no per-row copy.
        py::array_t<Event> events(static_cast<py::ssize_t>(pr->op_count()));
        Event* out = events.mutable_data();
        probe::ProbeResult r;
        {
          py::gil_scoped_release release;
          r = pr->run(out);
        }
        py::dict d;
        d["t_begin_ns"] = r.t_begin_ns;
        d["t_end_ns"] = r.t_end_ns;
        d["residency_before"] = residency_dict(r.before);
        d["residency_after"] = residency_dict(r.after);
        d["ran"] = r.ran;
        d["cold_flush"] = r.cold_flush;
        d["cold_evicted"] = r.cold_evicted;
        d["cold_left_pages"] = r.cold_left;
        d["cold_dirty_pages"] = r.cold_dirty;
        d["hints"] = r.hints;
        d["verify_bad_ops"] = r.verify_bad_ops;
        d["verify_bad_bytes"] = r.verify_bad_bytes;
        d["failed_ops"] = r.failed_ops;
        d["ops_done"] = r.ops_done;
        d["threads"] = r.threads_used;
        d["file_size"] = pr->file_size();
        d["page_size"] = pr->page_size();
        d["mmap"] = pr->access() == probe::Access::kTouch;
        return py::make_tuple(events, d);
      },
      py::arg("path"), py::arg("pattern"), py::arg("block"), py::arg("stride"), py::arg("count"),
      py::arg("align"), py::arg("seed"), py::arg("ranges"), py::arg("threads"), py::arg("fadvise"),
      py::arg("madvise"), py::arg("cold"), py::arg("faults"), py::arg("verify"), py::arg("file_id"), py::arg("residency") = "auto",
      "Run one probe; returns (events, result dict).  The GIL is released while files are touched.");
  m.def(
      "probe_resident_pages",
      [](const std::string& path) {
        std::vector<bool> v;
        {
          py::gil_scoped_release release;
          struct stat st {};
          probe::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
          if (!fd.valid()) probe::throw_errno(errno, path);
          if (::fstat(fd.get(), &st) != 0) probe::throw_errno(errno, path);
          if (!S_ISREG(st.st_mode) || st.st_size == 0)
            throw std::invalid_argument(path + ": not a non-empty regular file");
          const long ps = ::sysconf(_SC_PAGESIZE);
          v = probe::resident_pages(fd.get(), st.st_size, ps, path);
        }
        py::array_t<bool> a(static_cast<py::ssize_t>(v.size()));
        bool* p = a.mutable_data();
        for (std::size_t i = 0; i < v.size(); ++i) p[i] = v[i];
        return a;
      },
      py::arg("path"), "Per page of the file: resident in the page cache (mincore).");
  m.def("probe_pattern_bytes", [](std::int64_t offset, std::int64_t n) {
    std::string s(static_cast<std::size_t>(n), '\0');
    for (std::int64_t i = 0; i < n; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(probe::pattern_byte(offset + i));
    return py::bytes(s);
  }, py::arg("offset"), py::arg("n"), "The verify-pattern bytes [offset, offset+n).");
}

}  // namespace cmio
