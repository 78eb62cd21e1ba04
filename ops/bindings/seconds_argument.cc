#include "seconds_argument.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "status_to_python.h"

namespace kvdump::python {

std::optional<std::chrono::nanoseconds> secondsArgument(std::optional<double> seconds, const char* what) {
  if (!seconds) return std::nullopt;
  if (!std::isfinite(*seconds) || *seconds < 0) {
    throwStatus(Status::InvalidArgument(std::string(what) + " must be a finite number of seconds >= 0"));
  }
  // Past about 292 years the nanosecond count would overflow; such a deadline means "never" anyway.
  constexpr double kLongest = 9.0e9;
  return std::chrono::nanoseconds(static_cast<int64_t>(std::min(*seconds, kLongest) * 1e9));
}

}  // namespace kvdump::python
