#include "python_task.h"

#include "python_object_payload.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

Status statusFromException(py::error_already_set& err) {
  py::object value = err.value();
  StatusCode code = StatusCode::kTaskFailed;
  std::string key;
  if (py::hasattr(value, "code") && py::hasattr(value, "key")) {
    // A kvdump error raised inside the task (e.g. by a Python store) keeps its code and key.
    try {
      code = static_cast<StatusCode>(value.attr("code").cast<int>());
      key = value.attr("key").cast<std::string>();
    } catch (const py::cast_error&) {
      code = StatusCode::kTaskFailed;
    }
  }
  const std::string type_name = py::str(err.type().attr("__name__"));
  Status status(code, type_name + ": " + std::string(py::str(value)));
  if (!key.empty()) status.withKey(key);
  return withPythonObject(std::move(status), value);
}

}  // namespace

Task pythonTask(py::function fn) {
  auto shared = shareAcrossThreads(std::move(fn));
  return [shared]() -> Status {
    py::gil_scoped_acquire gil;
    try {
      (*shared)();
      return Status::Ok();
    } catch (py::error_already_set& err) {
      return statusFromException(err);
    }
  };
}

}  // namespace kvdump::python
