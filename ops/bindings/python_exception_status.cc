#include "python_exception_status.h"

#include "python_object_payload.h"

namespace py = pybind11;

namespace kvdump::python {

Status statusFromPythonError(py::error_already_set& err, StatusCode fallback) {
  return statusFromPythonException(err.value(), fallback);
}

namespace {

Status describe(py::handle exception, StatusCode fallback) {
  py::object value = py::reinterpret_borrow<py::object>(exception);
  StatusCode code = fallback;
  std::string key;
  // Only a kvdump error keeps its code and key; any other library's `.code` means something else,
  // and an OK code must never turn a failure into a success.
  py::object kvdump_error = py::module_::import("kvdump.errors").attr("KvdumpError");
  const bool is_kvdump_error = py::isinstance(value, kvdump_error);
  if (is_kvdump_error) {
    const int raw = value.attr("code").cast<int>();
    if (raw > static_cast<int>(StatusCode::kOk) && raw <= static_cast<int>(kLastStatusCode)) {
      code = static_cast<StatusCode>(raw);
    }
    key = py::str(value.attr("key"));
  }
  // A kvdump error already names its kind through its code and its key separately; anything else
  // keeps its type name, the only hint of what went wrong.
  const std::string message = is_kvdump_error
                                  ? std::string(py::str(value.attr("message")))
                                  : std::string(py::str(py::type::handle_of(value).attr("__name__"))) + ": " +
                                        std::string(py::str(value));
  Status status(code, message);
  if (!key.empty()) status.withKey(key);
  return withPythonObject(std::move(status), value);
}

}  // namespace

Status statusFromPythonException(py::handle exception, StatusCode fallback) {
  // Runs inside catch handlers and on worker threads: it must not throw itself, whatever the
  // exception object looks like (e.g. a KvdumpError subclass that skipped super().__init__).
  try {
    return describe(exception, fallback);
  } catch (const std::exception& err) {  // py::error_already_set included
    return Status(fallback, "Python exception that could not be described: " + std::string(err.what()));
  }
}

}  // namespace kvdump::python
