// kvdump._C: the private extension. This file only exports; each area binds itself.
#include <pybind11/pybind11.h>

#include <chrono>

#include "kvdump_ops/direct_write.h"
#include "python_exit_guard.h"

namespace kvdump::python {
void bindStores(pybind11::module_& m);
void bindKeySpace(pybind11::module_& m);
void bindCommitLookup(pybind11::module_& m);
void bindEngineOptions(pybind11::module_& m);
void bindWriter(pybind11::module_& m);
void bindLoader(pybind11::module_& m);
void bindStatusCodes(pybind11::module_& m);
}  // namespace kvdump::python

PYBIND11_MODULE(_C, m) {
  m.doc() = "kvdump native core: lifecycle writer, stores, and the torch ops (torch.ops.kvdump.*)";
  kvdump::python::bindStores(m);
  kvdump::python::bindKeySpace(m);
  kvdump::python::bindCommitLookup(m);
  kvdump::python::bindEngineOptions(m);
  kvdump::python::bindWriter(m);
  kvdump::python::bindLoader(m);
  kvdump::python::bindStatusCodes(m);
  m.def(
      "refuse_python_calls_at_exit",
      [](double timeout) { return kvdump::python::refusePythonCallsAndWait(std::chrono::duration<double>(timeout)); },
      pybind11::arg("timeout"),
      "From now on kvdump's threads make no call into Python (a Python store's method or task fails "
      "instead); waits up to timeout seconds for those inside to leave, and returns how many are still "
      "inside. kvdump calls it at interpreter exit, after closing its writers and loaders.");
  // Plain C-API functions: the hot path of write_cache_store skips pybind11's dispatch as well.
  if (kvdump::addDirectWriteFunctions(m.ptr()) != 0) throw pybind11::error_already_set();
}
