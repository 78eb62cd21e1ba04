// Ctrl-C for waits that released the GIL: a look at Python's pending signal handlers, declared with
// Python's C API only, so that both the direct write entry and the pybind11 bindings call one piece.
#pragma once

namespace kvdump {

/// Runs the pending Python signal handlers, taking the GIL; true when one raised (its exception is
/// then set for this thread). Call without the GIL, on a thread Python knows; thread-safe.
bool pythonSignalRaised();

}  // namespace kvdump
