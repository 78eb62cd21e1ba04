// Carrying Python objects through the torch- and Python-free core safely.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "kvdump/status.h"

namespace kvdump::python {

/// Shares ownership of a Python object from any thread: the deleter takes the GIL to drop the
/// reference, and leaks it instead when the interpreter is already finalizing.
std::shared_ptr<pybind11::object> shareAcrossThreads(pybind11::object obj);

/// Attaches a Python object (e.g. the exception a task raised) to a Status as its payload.
Status withPythonObject(Status status, pybind11::object obj);

/// The Python object attached by withPythonObject, or nullptr. Needs the GIL to use the result.
pybind11::object* pythonObjectOf(const Status& status);

}  // namespace kvdump::python
