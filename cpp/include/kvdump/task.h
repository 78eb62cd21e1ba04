// What the writer runs: a unit of work plus the label that names it when it fails.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kvdump/status.h"

namespace kvdump {

/// A unit of work run on a worker thread; it owns everything it captured until it is destroyed,
/// which the writer does on the worker (after running) or on the cancelling thread (when cancelled).
using Task = std::function<Status()>;

/// Names a task in errors and in per-request cancellation; a plain value, copied once per submit.
struct TaskLabel {
  std::string label;    // free text, e.g. "layer 3 of req-17"
  int64_t layer = -1;   // model layer, or -1 when not layer-bound
  std::string request;  // request id, or empty
};

/// The first failure of a cycle: which task failed and the Status it returned; a plain value.
struct TaskFailure {
  TaskLabel label;
  Status status;
};

}  // namespace kvdump
