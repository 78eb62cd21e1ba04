// Python binding of WriterContext as kvdump._C.Writer. Every blocking call releases the GIL.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <optional>

#include "kvdump_ops/host_allocator.h"
#include "kvdump_ops/writer_context.h"
#include "python_task.h"
#include "seconds_argument.h"
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

/// Owner of one WriterContext on the Python side. Not thread-safe to close() concurrently with use;
/// every other method is as thread-safe as AsyncWriter.
class PyWriter {
 public:
  PyWriter(std::shared_ptr<CacheStore> store, size_t num_threads, size_t queue_capacity, double submit_timeout,
           size_t staging_bytes, double staging_timeout, std::string key_namespace, int tp_rank, int tp_size,
           std::string staging_device) {
    if (!store) throwStatus(Status::InvalidArgument("store must not be None"));
    WriterContextOptions options;
    options.writer.num_threads = num_threads;
    options.writer.queue_capacity = queue_capacity;
    options.writer.submit_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(*secondsArgument(submit_timeout, "submit_timeout"));
    check(validateWriterOptions(options.writer));
    if (staging_bytes == 0) throwStatus(Status::InvalidArgument("staging_bytes must be positive"));
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) {
      throwStatus(Status::InvalidArgument("need 0 <= tp_rank < tp_size, got tp_rank=" + std::to_string(tp_rank) +
                                          " tp_size=" + std::to_string(tp_size)));
    }
    if (key_namespace.empty() || key_namespace.find('/') != std::string::npos) {
      throwStatus(Status::InvalidArgument("namespace must be non-empty and contain no '/'"));
    }
    options.staging_bytes = staging_bytes;
    options.staging_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(*secondsArgument(staging_timeout, "staging_timeout"));
    options.keys = KeySpace{std::move(key_namespace), tp_rank, tp_size};
    try {
      options.staging_allocator = hostAllocatorFor(staging_device);
    } catch (const std::exception& e) {
      throwStatus(Status::InvalidArgument("staging device '" + staging_device + "': " + e.what()));
    }
    ctx_ = WriterContext::create(std::move(store), std::move(options));
  }

  ~PyWriter() { close(); }

  void close() {
    if (!ctx_) return;
    // Destruction joins the workers, and a worker may be waiting for the GIL to run a Python task.
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      ctx_.reset();
    } else {
      ctx_.reset();
    }
  }

  WriterContext& ctx() {
    if (!ctx_) throwStatus(Status::Lifecycle("the writer is closed"));
    return *ctx_;
  }

  void init() { check(ctx().writer().init()); }

  void submit(py::function fn, std::string label, int64_t layer, std::string request, std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    Task task = pythonTask(std::move(fn));
    AsyncWriter& writer = ctx().writer();  // resolved with the GIL held: a closed writer raises here
    Status status;
    {
      py::gil_scoped_release release;  // a full queue blocks here
      status = writer.submit(std::move(task), TaskLabel{std::move(label), layer, std::move(request)}, deadline);
    }
    check(status);
  }

  py::dict waitAllDone(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    CycleReport report;
    AsyncWriter& writer = ctx().writer();
    Status status;
    {
      py::gil_scoped_release release;
      status = writer.waitAllDone(deadline, &report);
    }
    if (report.first_failure) throwWriteError(*report.first_failure, report.failed, report.submitted);
    check(status);
    py::dict out;
    out["submitted"] = report.submitted;
    out["completed"] = report.completed;
    out["failed"] = report.failed;
    out["cancelled"] = report.cancelled;
    return out;
  }

  py::dict abort() {
    AbortReport report;
    WriterContext& context = ctx();
    Status status;
    {
      py::gil_scoped_release release;
      status = context.writer().abort(&report);
      context.loads().cancelPending("the load was cancelled by abort()");
    }
    check(status);
    py::dict out;
    out["cancelled"] = report.cancelled;
    out["finished_running"] = report.finished_running;
    out["failed"] = report.failed;
    if (report.first_failure) {
      out["first_failure"] = report.first_failure->label.label + ": " + report.first_failure->status.toString();
    } else {
      out["first_failure"] = py::none();
    }
    return out;
  }

  uint64_t cancelRequest(const std::string& request) {
    AsyncWriter& writer = ctx().writer();
    py::gil_scoped_release release;
    return writer.cancelRequest(request);
  }

  std::string state() { return writerStateName(ctx().writer().state()); }

  py::dict stats() {
    WriterStats s = ctx().writer().stats();
    StagingStats st = ctx().staging().stats();
    py::dict d;
    d["submitted"] = s.submitted;
    d["completed"] = s.completed;
    d["failed"] = s.failed;
    d["cancelled"] = s.cancelled;
    d["rejected"] = s.rejected;
    d["cycles"] = s.cycles;
    d["aborts"] = s.aborts;
    d["queue_high_water"] = s.queue_high_water;
    d["queue_depth"] = s.queue_depth;
    d["running"] = s.running;
    d["num_threads"] = s.num_threads;
    d["queue_capacity"] = s.queue_capacity;
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

  void waitLayerLoaded(int64_t layer, std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    CompletionBoard& loads = ctx().loads();
    Status status;
    {
      py::gil_scoped_release release;
      status = loads.wait(layer, deadline);
    }
    check(status);
  }

  int64_t handle() { return ctx().handle(); }
  bool closed() const { return ctx_ == nullptr; }

 private:
  std::shared_ptr<WriterContext> ctx_;
};

}  // namespace

void bindWriter(py::module_& m) {
  py::class_<PyWriter>(m, "Writer")
      .def(py::init<std::shared_ptr<CacheStore>, size_t, size_t, double, size_t, double, std::string, int, int,
                    std::string>(),
           py::arg("store"), py::arg("num_threads"), py::arg("queue_capacity"), py::arg("submit_timeout"),
           py::arg("staging_bytes"), py::arg("staging_timeout"), py::arg("namespace"), py::arg("tp_rank"),
           py::arg("tp_size"), py::arg("staging_device"))
      .def("init", &PyWriter::init)
      .def("submit", &PyWriter::submit, py::arg("fn"), py::arg("label"), py::arg("layer"), py::arg("request"),
           py::arg("timeout"))
      .def("wait_all_done", &PyWriter::waitAllDone, py::arg("timeout"))
      .def("abort", &PyWriter::abort)
      .def("cancel_request", &PyWriter::cancelRequest, py::arg("request"))
      .def("wait_layer_loaded", &PyWriter::waitLayerLoaded, py::arg("layer"), py::arg("timeout"))
      .def("close", &PyWriter::close)
      .def_property_readonly("state", &PyWriter::state)
      .def_property_readonly("handle", &PyWriter::handle)
      .def_property_readonly("closed", &PyWriter::closed)
      .def("stats", &PyWriter::stats);
  m.def("default_num_threads", &defaultNumThreads);
  m.def(
      "block_key",
      [](const std::string& ns, int tp_rank, int tp_size, int64_t hash, int64_t layer) {
        return blockKey(KeySpace{ns, tp_rank, tp_size}, static_cast<uint64_t>(hash), layer);
      },
      py::arg("namespace"), py::arg("tp_rank"), py::arg("tp_size"), py::arg("block_hash"), py::arg("layer"));
  m.def(
      "commit_key",
      [](const std::string& ns, int tp_rank, int tp_size, int64_t hash) {
        return commitKey(KeySpace{ns, tp_rank, tp_size}, static_cast<uint64_t>(hash));
      },
      py::arg("namespace"), py::arg("tp_rank"), py::arg("tp_size"), py::arg("block_hash"));
}

}  // namespace kvdump::python
