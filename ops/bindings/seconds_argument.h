// Python seconds (floats) as C++ durations, checked at the binding boundary.
#pragma once

#include <chrono>
#include <optional>

namespace kvdump::python {

/// None stays nullopt (no deadline); a finite number of seconds >= 0 becomes nanoseconds; anything
/// else (negative, inf, nan) raises KvdumpValueError naming `what`. Needs the GIL.
std::optional<std::chrono::nanoseconds> secondsArgument(std::optional<double> seconds, const char* what);

}  // namespace kvdump::python
