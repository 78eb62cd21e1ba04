// Python arguments as C++ values, checked at the binding boundary: a wrong type raises
// KvdumpTypeError and a bad value KvdumpValueError, each naming the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace kvdump::python {

/// None stays nullopt (no deadline); a finite number of seconds >= 0 becomes nanoseconds; anything
/// else (negative, inf, nan) raises KvdumpValueError naming `what`. Needs the GIL.
std::optional<std::chrono::nanoseconds> secondsArgument(std::optional<double> seconds, const char* what);

/// `value` as a finite number of seconds >= 0 (an int or a float, not a bool). Needs the GIL.
std::chrono::nanoseconds durationArgument(pybind11::handle value, const char* what);

/// `value` as an int in [minimum, maximum] (an int, not a bool or a float). Needs the GIL.
int64_t integerArgument(pybind11::handle value, const char* what, int64_t minimum, int64_t maximum);

/// `value` as a str that UTF-8 can carry. Needs the GIL.
std::string textArgument(pybind11::handle value, const char* what);

/// `value` (a str or an os.PathLike naming a str path) as a path without NUL characters. Needs the GIL.
std::string pathArgument(pybind11::handle value, const char* what);

/// `value` as a double (an int or a float, not a bool); its range is the caller's to check. Needs the GIL.
double numberArgument(pybind11::handle value, const char* what);

/// `value` as a bool (True or False, not a number or a str). Needs the GIL.
bool flagArgument(pybind11::handle value, const char* what);

}  // namespace kvdump::python
