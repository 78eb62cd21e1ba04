#include "python_task.h"

#include "python_exception_status.h"
#include "python_exit_guard.h"
#include "python_object_payload.h"

namespace py = pybind11;

namespace kvdump::python {

Task pythonTask(py::function fn) {
  auto shared = shareAcrossThreads(std::move(fn));
  return [shared]() -> Status {
    PythonCall call;
    if (!call) return Status::Cancelled("not run: the Python interpreter is exiting");
    py::gil_scoped_acquire gil;
    try {
      (*shared)();
      return Status::Ok();
    } catch (py::error_already_set& err) {
      return statusFromPythonError(err, StatusCode::kTaskFailed);
    }
  };
}

}  // namespace kvdump::python
