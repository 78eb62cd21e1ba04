// Turning a Python exception into a kvdump Status at the point where C++ called into Python.
#pragma once

#include <pybind11/pybind11.h>

#include "kvdump/status.h"

namespace kvdump::python {

/// A failed Status for a raised Python exception: a kvdump error keeps its code and key, any other
/// exception gets `fallback`. The exception object rides along as the payload so it can be chained
/// at the binding boundary. Needs the GIL.
Status statusFromPythonError(pybind11::error_already_set& err, StatusCode fallback);

/// The same for an exception object (e.g. one a Python store returned per key instead of raising).
Status statusFromPythonException(pybind11::handle exception, StatusCode fallback);

}  // namespace kvdump::python
