#include "python_task.h"

#include "python_object_payload.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

Status statusFromException(py::error_already_set& err) {
  py::object value = err.value();
  StatusCode code = StatusCode::kTaskFailed;
  std::string key;
  // Only a kvdump error (e.g. raised by a Python store) keeps its code and key; any other library's
  // `.code` means something else, and an OK code must never turn a failure into a success.
  py::object kvdump_error = py::module_::import("kvdump.errors").attr("KvdumpError");
  if (py::isinstance(value, kvdump_error)) {
    const int raw = value.attr("code").cast<int>();
    if (raw > static_cast<int>(StatusCode::kOk) && raw <= static_cast<int>(StatusCode::kInternal)) {
      code = static_cast<StatusCode>(raw);
    }
    key = py::str(value.attr("key"));
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
