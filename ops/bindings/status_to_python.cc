#include "status_to_python.h"

#include <pybind11/stl.h>

#include "python_object_payload.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

py::module_ errorsModule() { return py::module_::import("kvdump.errors"); }

[[noreturn]] void raise(py::object exc, const Status& status) {
  // Only an exception can be a cause; assigning anything else raises TypeError, which would
  // replace the error being reported.
  auto* original = pythonObjectOf(status);
  if (original != nullptr && PyExceptionInstance_Check(original->ptr())) {
    exc.attr("__cause__") = *original;
  }
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

}  // namespace

void throwStatus(const Status& status) {
  py::object exc = errorsModule().attr("error_for_code")(static_cast<int>(status.code()), status.message(),
                                                          status.key());
  raise(std::move(exc), status);
}

void throwTypeError(const std::string& message) {
  raise(errorsModule().attr("KvdumpTypeError")(message), Status::Ok());
}

void throwWriteError(const TaskFailure& failure, uint64_t failed, uint64_t submitted,
                     const std::vector<std::string>& failed_requests) {
  py::object layer = failure.label.layer >= 0 ? py::object(py::int_(failure.label.layer)) : py::object(py::none());
  py::object exc = errorsModule().attr("WriteError")(
      failure.status.message(), py::arg("code") = static_cast<int>(failure.status.code()),
      py::arg("key") = failure.status.key(), py::arg("label") = failure.label.text(), py::arg("layer") = layer,
      py::arg("request") = failure.label.request, py::arg("failed") = failed, py::arg("submitted") = submitted,
      py::arg("failed_requests") = py::tuple(py::cast(failed_requests)));
  raise(std::move(exc), failure.status);
}

void bindStatusCodes(py::module_& m) {
  m.def(
      "status_codes",
      [] {
        py::dict codes;
        for (int raw = 0; raw <= static_cast<int>(kLastStatusCode); ++raw) {
          codes[statusCodeName(static_cast<StatusCode>(raw))] = raw;
        }
        return codes;
      },
      "Every status code of the C++ core, name to value (kvdump.errors.StatusCode must match it).");
}

}  // namespace kvdump::python
