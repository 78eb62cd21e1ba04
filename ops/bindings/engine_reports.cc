#include "engine_reports.h"

#include <string>
#include <vector>

#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

py::dict latencyDict(const LatencySummary& s) {
  py::dict d;
  d["count"] = s.count;
  d["mean_us"] = s.mean_us;
  d["p50_us"] = s.p50_us;
  d["p99_us"] = s.p99_us;
  d["max_us"] = s.max_us;
  return d;
}

py::object describe(const std::optional<TaskFailure>& failure) {
  if (!failure) return py::none();
  return py::str(failure->label.text() + ": " + failure->status.toString());
}

}  // namespace

py::dict engineStats(AsyncWriter& pool, StagingPool& staging_pool) {
  WriterStats s = pool.stats();
  StagingStats st = staging_pool.stats();
  py::dict d;
  d["submitted"] = s.submitted;
  d["completed"] = s.completed;
  d["failed"] = s.failed;
  d["cancelled"] = s.cancelled;
  d["rejected"] = s.rejected;
  d["abandoned"] = s.abandoned;
  d["cycles"] = s.cycles;
  d["aborts"] = s.aborts;
  d["queue_high_water"] = s.queue_high_water;
  d["queue_depth"] = s.queue_depth;
  d["running"] = s.running;
  d["threads_in_abandoned_calls"] = s.threads_in_abandoned_calls;
  d["threads_started"] = s.threads_started;
  d["num_threads"] = s.num_threads;
  d["queue_capacity"] = s.queue_capacity;
  d["idle_poll"] = std::chrono::duration<double>(s.idle_poll).count();
  d["submit_latency"] = latencyDict(s.submit_latency);
  d["queue_wait"] = latencyDict(s.queue_wait);
  d["task_latency"] = latencyDict(s.task_latency);
  d["barrier_wait"] = latencyDict(s.barrier_wait);
  py::dict staging;
  staging["capacity_bytes"] = st.capacity_bytes;
  staging["allocated_bytes"] = st.allocated_bytes;
  staging["leased_bytes"] = st.leased_bytes;
  staging["leased_high_water"] = st.leased_high_water;
  staging["leases"] = st.leases;
  staging["allocations"] = st.allocations;
  staging["waits"] = st.waits;
  staging["timeouts"] = st.timeouts;
  d["staging"] = staging;
  return d;
}

py::dict abortDict(const AbortReport& report) {
  py::dict out;
  out["cancelled"] = report.cancelled;
  out["finished_running"] = report.finished_running;
  out["abandoned"] = report.abandoned;
  out["failed"] = report.failed;
  out["first_failure"] = describe(report.first_failure);
  out["first_abandoned"] = describe(report.first_abandoned);
  return out;
}

py::dict barrierOutcome(const Status& status, const CycleReport& report) {
  if (report.first_failure) {
    std::vector<std::string> failed(report.failed_requests.begin(), report.failed_requests.end());
    throwWriteError(*report.first_failure, report.failed, report.submitted, failed);
  }
  check(status);
  py::dict out;
  out["submitted"] = report.submitted;
  out["completed"] = report.completed;
  out["failed"] = report.failed;
  out["cancelled"] = report.cancelled;
  return out;
}

}  // namespace kvdump::python
