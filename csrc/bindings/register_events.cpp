#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/register.h"
#include "common/event.h"

namespace py = pybind11;

namespace cmio {

void register_events(py::module_& m) {
  m.attr("EVENT_VERSION") = kEventVersion;
  m.attr("EVENT_SIZE") = sizeof(Event);
  // (name, offset, size) of every field, so Python can check its dtype matches.
  std::vector<std::tuple<std::string, std::size_t, std::size_t>> fields = {
      {"t_start_ns", offsetof(Event, t_start_ns), 8}, {"duration_ns", offsetof(Event, duration_ns), 8},
      {"offset", offsetof(Event, offset), 8},         {"length", offsetof(Event, length), 8},
      {"result", offsetof(Event, result), 8},         {"aux", offsetof(Event, aux), 8},
      {"pid", offsetof(Event, pid), 4},               {"tid", offsetof(Event, tid), 4},
      {"file_id", offsetof(Event, file_id), 4},       {"fd", offsetof(Event, fd), 4},
      {"err", offsetof(Event, err), 4},               {"minflt", offsetof(Event, minflt), 4},
      {"majflt", offsetof(Event, majflt), 4},         {"source", offsetof(Event, source), 2},
      {"op", offsetof(Event, op), 2},
  };
  m.attr("EVENT_FIELDS") = fields;
  m.def("monotonic_ns", &monotonic_ns, "CLOCK_MONOTONIC now, in ns");
}

}  // namespace cmio
