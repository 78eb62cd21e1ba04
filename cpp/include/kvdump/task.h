// What the writer runs: a unit of work plus the label that names it when it fails.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kvdump/status.h"
#include "kvdump/task_control.h"

namespace kvdump {

/// A unit of work run on a worker thread; it owns everything it captured until it is destroyed,
/// which the writer does on the worker (after running) or on the cancelling thread (when cancelled).
using Task = std::function<Status()>;

/// A task that cooperates with deadlines: it brackets its use of caller memory through the
/// TaskControl, so the writer can abandon it while it waits on a store and still guarantee that
/// it never touches that memory afterwards. Ownership as for Task.
using ControlledTask = std::function<Status(TaskControl&)>;

/// Names a task in errors and in per-request cancellation; a plain value, moved once per submit.
/// The hot path leaves `label` empty and names only a static `kind`: the text is built by text()
/// when a failure or a report needs it, never on the submitting thread.
struct TaskLabel {
  std::string label;           // free text, e.g. "layer 3 of req-17"; empty: built from the rest
  int64_t layer = -1;          // model layer, or -1 when not layer-bound
  std::string request;         // request id, or empty
  const char* kind = nullptr;  // static text naming the work ("write", "load") when label is empty

  /// `label` when set, else "<kind> layer <layer>[ of request <request>]". Pure.
  std::string text() const;
};

/// The first failure of a cycle: which task failed and the Status it returned; a plain value.
struct TaskFailure {
  TaskLabel label;
  Status status;
};

}  // namespace kvdump
