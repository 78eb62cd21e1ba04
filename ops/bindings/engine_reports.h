// What a writer's and a loader's engine report to Python, in one shape for both: counters, the
// outcome of an abort, and the outcome of a barrier.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <optional>

#include "kvdump_ops/transfer_engine.h"

namespace kvdump::python {

/// The pool's and the staging pool's cumulative counters. Needs the GIL.
pybind11::dict engineStats(AsyncWriter& pool, StagingPool& staging);

/// An AbortReport as a dict (cancelled, finished_running, abandoned, failed, first_failure,
/// first_abandoned). Needs the GIL.
pybind11::dict abortDict(const AbortReport& report);

/// A successful barrier's CycleReport as a dict; raises WriteError for a cycle with a failure, then
/// the status's error for anything else. Needs the GIL.
pybind11::dict barrierOutcome(const Status& status, const CycleReport& report);

}  // namespace kvdump::python
