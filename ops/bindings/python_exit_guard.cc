#include "python_exit_guard.h"

#include <Python.h>

#include <pthread.h>

#include <condition_variable>
#include <mutex>

namespace kvdump::python {
namespace {

struct Calls {
  std::mutex mu;
  std::condition_variable left;
  size_t inside = 0;
  bool refused = false;
};

// Leaked: threads of abandoned calls may still ask after static destructors ran.
Calls*& callsPointer() {
  static Calls* c = new Calls();
  return c;
}

Calls& calls() {
  static const bool registered = [] {
    // A forked child has none of its parent's threads: it starts with no call inside, and with a
    // lock no parent thread can be holding.
    pthread_atfork(nullptr, nullptr, [] { callsPointer() = new Calls(); });
    return true;
  }();
  (void)registered;
  return *callsPointer();
}

}  // namespace

PythonCall::PythonCall() {
  Calls& c = calls();
  std::lock_guard<std::mutex> lock(c.mu);
  entered_ = !c.refused && Py_IsInitialized() && !_Py_IsFinalizing();
  if (entered_) ++c.inside;
}

PythonCall::~PythonCall() {
  if (!entered_) return;
  Calls& c = calls();
  std::lock_guard<std::mutex> lock(c.mu);
  if (--c.inside == 0) c.left.notify_all();
}

std::shared_ptr<CacheStore> releasedOnlyWhilePythonRuns(std::shared_ptr<CacheStore> store) {
  if (!store) return store;
  CacheStore* raw = store.get();
  return std::shared_ptr<CacheStore>(raw, [held = std::move(store)](CacheStore*) mutable {
    PythonCall call;
    if (!call) {
      new std::shared_ptr<CacheStore>(std::move(held));  // NOLINT: left to the process's end on purpose
      return;
    }
    held.reset();  // a Python store's holder takes the GIL itself, inside this call
  });
}

size_t refusePythonCallsAndWait(std::chrono::duration<double> timeout) {
  Calls& c = calls();
  PyThreadState* saved = PyEval_SaveThread();  // the calls inside need the GIL to come back out
  size_t inside;
  {
    std::unique_lock<std::mutex> lock(c.mu);
    c.refused = true;
    c.left.wait_for(lock, timeout, [&] { return c.inside == 0; });
    inside = c.inside;
  }
  PyEval_RestoreThread(saved);
  return inside;
}

}  // namespace kvdump::python
