// Turns a Python callable into a core Task that takes the GIL only while the callable runs.
#pragma once

#include <pybind11/pybind11.h>

#include "kvdump/task.h"

namespace kvdump::python {

/// The returned Task may be run, copied and destroyed on any thread without the GIL held. A raised
/// exception becomes a failed Status (code taken from a kvdump error's `.code`, else TASK_FAILED)
/// that carries the exception object for chaining at the barrier.
Task pythonTask(pybind11::function fn);

}  // namespace kvdump::python
