// How the torch ops report a Status: a c10 error whose message starts with "[kvdump:CODE key=...]",
// which kvdump's Python wrappers turn back into the typed kvdump exception.
#pragma once

#include "kvdump/status.h"

namespace kvdump {

/// Throws c10::ValueError for INVALID_ARGUMENT/TOO_LARGE, c10::TypeError never (types are checked in
/// Python), c10::Error otherwise. Does nothing for OK.
void throwIfError(const Status& status);

}  // namespace kvdump
