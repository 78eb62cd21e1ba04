// How the torch ops report a Status: a c10 error whose message starts with "[kvdump:CODE key=...]",
// which kvdump's Python wrappers turn back into the typed kvdump exception.
#pragma once

#include "kvdump/status.h"

namespace kvdump {

/// Throws `status` (not OK): c10::ValueError for INVALID_ARGUMENT/TOO_LARGE, c10::Error otherwise
/// (types are checked in Python, so never c10::TypeError). Out of line and cold, so the checks that
/// call throwIfError stay small on the caller's hot path.
[[noreturn, gnu::cold]] void throwStatus(const Status& status);

/// Throws `status` as throwStatus does; does nothing for OK.
inline void throwIfError(const Status& status) {
  if (__builtin_expect(!status.ok(), 0)) throwStatus(status);
}

}  // namespace kvdump
