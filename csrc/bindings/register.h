#pragma once

#include <pybind11/pybind11.h>

namespace cmio {
void register_events(pybind11::module_& m);
void register_chunking(pybind11::module_& m);
void register_probe(pybind11::module_& m);
}  // namespace cmio
