// Calls into Python from kvdump's own threads, refused once the interpreter is exiting. On this
// Python a thread that takes the GIL while the interpreter finalizes is ended in the middle of its
// call, unwinding C++ frames (destructors, pybind11's GIL guards) that cannot be unwound that way.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "kvdump/cache_store.h"

namespace kvdump::python {

/// One call into Python from a thread of kvdump's (a Python store's method, a Python task, the
/// release of a Python object). Converts to false once exit began, and then nothing may touch
/// Python. Made before taking the GIL, destroyed after giving it back. Thread-safe.
class PythonCall {
 public:
  PythonCall();
  ~PythonCall();
  PythonCall(const PythonCall&) = delete;
  PythonCall& operator=(const PythonCall&) = delete;
  explicit operator bool() const { return entered_; }

 private:
  bool entered_;
};

/// `store` as held by kvdump's threads: the last of them to let it go after exit began leaves it
/// alone instead of releasing it, since releasing a Python store takes the GIL. Thread-safe.
std::shared_ptr<CacheStore> releasedOnlyWhilePythonRuns(std::shared_ptr<CacheStore> store);

/// Refuses every later PythonCall, then waits up to `timeout` for the calls still inside Python to
/// leave, with the GIL released. For the interpreter's exit, after the writers were closed and
/// before it finalizes; needs the GIL. Returns how many calls were still inside.
size_t refusePythonCallsAndWait(std::chrono::duration<double> timeout);

}  // namespace kvdump::python
