// The `_native` extension: each area registers its own bindings.
#include <pybind11/pybind11.h>

#include "bindings/register.h"

PYBIND11_MODULE(_native, m) {
  m.doc() = "cvmfs-modelio native engines";
  cmio::register_events(m);
  cmio::register_chunking(m);
  cmio::register_probe(m);
}
