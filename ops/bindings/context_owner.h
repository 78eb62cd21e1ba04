// The Python side's hold on a writer's or a loader's context, and what both bind alike: their
// cycle (a writer's cycle, a loader's session), abort, state, counters and close. Every method takes
// its own reference to the context while it runs, so close() from another thread never frees what a
// waiter uses; the waiter gets a typed error instead.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "interruptible_wait.h"
#include "arguments.h"
#include "engine_reports.h"
#include "kvdump_ops/ticket_offers.h"
#include "status_to_python.h"

namespace kvdump::python {

/// Runs `call` with the GIL released and raises its Status unless OK. Needs the GIL.
template <typename Call>
void checkWithoutGil(Call&& call) {
  Status status;
  {
    pybind11::gil_scoped_release release;
    status = call();
  }
  if (PyErr_Occurred()) throw pybind11::error_already_set();  // a signal handler raised meanwhile
  check(status);
}

/// Owns one context of type Context (WriterContext or LoaderContext) until close(). Thread-safe.
template <typename Context>
class ContextOwner {
 public:
  ContextOwner(std::shared_ptr<Context> context, std::string what) : ctx_(std::move(context)), what_(std::move(what)) {}

  ~ContextOwner() {
    if (!ctx_) return;
    // Destruction joins idle workers, and a worker may be waiting for the GIL to run a Python task.
    if (PyGILState_Check()) {
      pybind11::gil_scoped_release release;
      ctx_.reset();
    } else {
      ctx_.reset();
    }
  }
  ContextOwner(const ContextOwner&) = delete;
  ContextOwner& operator=(const ContextOwner&) = delete;

  /// The context, held for the caller's call; LIFECYCLE once closed. Needs the GIL.
  std::shared_ptr<Context> ctx() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ctx_) throwStatus(Status::Lifecycle("the " + what_ + " is closed"));
    return ctx_;
  }

  /// Opens a cycle (a writer's) or a session (a loader's).
  void open() { openWith({}); }
  /// Opens a cycle with `options`.
  void openWith(CycleOptions options) { check(ctx()->pool().init(options)); }

  /// Closes the cycle: waits for every task, up to `timeout` seconds; raises the first failure.
  pybind11::dict barrier(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    CycleReport report;
    auto context = ctx();
    Status status;
    {
      pybind11::gil_scoped_release release;
      status = context->pool().waitAllDone(deadline, &report, pythonSignalRaised);
    }
    if (PyErr_Occurred()) throw pybind11::error_already_set();  // Ctrl-C: the cycle stays open
    return barrierOutcome(status, report);
  }

  /// Aborts the open cycle within `timeout` seconds (None: abort_timeout); what it did, as a dict.
  pybind11::dict abort(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    AbortReport report;
    auto context = ctx();
    checkWithoutGil([&] { return context->abort(&report, deadline); });
    return abortDict(report);
  }

  std::string state() { return writerStateName(ctx()->pool().state()); }

  pybind11::dict stats() {
    auto context = ctx();
    return engineStats(context->pool(), context->staging());
  }

  /// Shuts the context down within `timeout` seconds (GIL released) and lets go of it. Idempotent.
  void close(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    std::shared_ptr<Context> ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ctx_ && ctx_->pool().calledFromOwnTask()) {
        // Closing waits for the pool's threads, this one among them; and a barrier waiting
        // meanwhile would wait for a commit no thread is left to run.
        throwStatus(Status::Lifecycle("close() called from one of the " + what_ +
                                      "'s own tasks or store calls: close it from another thread"));
      }
      ctx.swap(ctx_);
    }
    if (!ctx) return;
    pybind11::gil_scoped_release release;
    ctx->shutdown(deadline);
    ctx.reset();  // the last reference may be a waiter's; it frees the context when it returns
  }

  bool closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return ctx_ == nullptr;
  }

  /// A one-shot ticket from which the torch custom class takes this context.
  int64_t offerToTorch() { return TicketOffers<Context>::offer(ctx()); }

 private:
  std::mutex mu_;
  std::shared_ptr<Context> ctx_;
  const std::string what_;
};

/// Binds what every context owner has, under the names both Python classes use. Call once, while the
/// module loads, with the GIL held.
template <typename Owner>
void bindContextOwner(pybind11::class_<Owner>& c) {
  c.def("abort", &Owner::abort, pybind11::arg("timeout"))
      .def("close", &Owner::close, pybind11::arg("timeout"))
      .def_property_readonly("state", &Owner::state)
      .def_property_readonly("closed", &Owner::closed)
      .def("stats", &Owner::stats)
      .def("offer_to_torch", &Owner::offerToTorch,
           "A one-shot ticket from which its torch custom class (torch.classes.kvdump.Writer or Loader) "
           "takes this object.");
}

}  // namespace kvdump::python
