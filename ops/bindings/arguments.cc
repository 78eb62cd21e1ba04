#include "arguments.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

std::string describe(py::handle value) {
  return std::string(py::str(py::type::handle_of(value).attr("__name__"))) + " " + std::string(py::repr(value));
}

}  // namespace

std::optional<std::chrono::nanoseconds> secondsArgument(std::optional<double> seconds, const char* what) {
  if (!seconds) return std::nullopt;
  if (!std::isfinite(*seconds) || *seconds < 0) {
    throwStatus(Status::InvalidArgument(std::string(what) + " must be a finite number of seconds >= 0"));
  }
  // Past about 292 years the nanosecond count would overflow; such a deadline means "never" anyway.
  constexpr double kLongest = 9.0e9;
  return std::chrono::nanoseconds(static_cast<int64_t>(std::min(*seconds, kLongest) * 1e9));
}

std::chrono::nanoseconds durationArgument(py::handle value, const char* what) {
  if (PyBool_Check(value.ptr()) || !(PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr()))) {
    throwTypeError(std::string(what) + " must be a number of seconds, got " + describe(value));
  }
  return *secondsArgument(value.cast<double>(), what);
}

int64_t integerArgument(py::handle value, const char* what, int64_t minimum, int64_t maximum) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
    throwTypeError(std::string(what) + " must be an integer, got " + describe(value));
  }
  int overflow = 0;
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
  if (!index) throw py::error_already_set();
  const long long number = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0 || number < minimum || number > maximum) {
    throwStatus(Status::InvalidArgument(std::string(what) + " must be in [" + std::to_string(minimum) + ", " +
                                        std::to_string(maximum) + "], got " + std::string(py::str(index))));
  }
  return number;
}

std::string textArgument(py::handle value, const char* what) {
  if (!PyUnicode_Check(value.ptr())) throwTypeError(std::string(what) + " must be a str, got " + describe(value));
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(value.ptr(), &size);
  if (utf8 == nullptr) {
    PyErr_Clear();
    throwStatus(Status::InvalidArgument(std::string(what) + " must be text UTF-8 can encode"));
  }
  return std::string(utf8, static_cast<size_t>(size));
}

std::string pathArgument(py::handle value, const char* what) {
  PyObject* path = PyOS_FSPath(value.ptr());  // a str, bytes, or os.PathLike's own
  if (path == nullptr) {
    PyErr_Clear();
    throwTypeError(std::string(what) + " must be a str or an os.PathLike, got " + describe(value));
  }
  py::object owned = py::reinterpret_steal<py::object>(path);
  if (!PyUnicode_Check(path)) throwTypeError(std::string(what) + " must name a path as str, got " + describe(value));
  std::string text = textArgument(owned, what);
  if (text.find('\0') != std::string::npos) {
    throwStatus(Status::InvalidArgument(std::string(what) + " must not contain a NUL character"));
  }
  return text;
}

double numberArgument(py::handle value, const char* what) {
  if (PyBool_Check(value.ptr()) || !(PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr()))) {
    throwTypeError(std::string(what) + " must be a number, got " + describe(value));
  }
  return value.cast<double>();
}

bool flagArgument(py::handle value, const char* what) {
  if (!PyBool_Check(value.ptr())) throwTypeError(std::string(what) + " must be True or False, got " + describe(value));
  return value.ptr() == Py_True;
}

}  // namespace kvdump::python
