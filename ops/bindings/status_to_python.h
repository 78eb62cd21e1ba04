// The binding boundary: the only place where a kvdump Status becomes a Python exception.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "kvdump/async_writer.h"
#include "kvdump/status.h"

namespace kvdump::python {

/// Raises the kvdump.errors class for `status` (KvdumpValueError, LifecycleError, ...). Needs the GIL.
[[noreturn]] void throwStatus(const Status& status);

/// Raises kvdump.KvdumpTypeError with `message` (an argument of the wrong type). Needs the GIL.
[[noreturn]] void throwTypeError(const std::string& message);

/// Raises kvdump.WriteError for a failed cycle, chaining a failed Python task's own exception.
/// `failed_requests` lists every request with a failed task, none of whose blocks was published.
[[noreturn]] void throwWriteError(const TaskFailure& failure, uint64_t failed, uint64_t submitted,
                                  const std::vector<std::string>& failed_requests);

/// Binds `status_codes()`: every StatusCode's name and value, so that a test can hold kvdump.errors'
/// table to the C++ one.
void bindStatusCodes(pybind11::module_& m);

/// Raises unless `status` is OK.
inline void check(const Status& status) {
  if (!status.ok()) throwStatus(status);
}

}  // namespace kvdump::python
