// Python binding of WriterContext as kvdump._C.Writer. Every blocking call releases the GIL.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <limits>
#include <mutex>
#include <optional>

#include "kvdump/commit_record.h"
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

std::chrono::milliseconds millis(std::optional<double> seconds, const char* what) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(*secondsArgument(seconds, what));
}

/// Owner of one WriterContext on the Python side. Every method holds its own reference to the
/// context while it runs, so close() from another thread never frees what a waiter uses: the waiter
/// gets a typed error instead. Thread-safe.
class PyWriter {
 public:
  PyWriter(std::shared_ptr<CacheStore> store, size_t num_threads, size_t queue_capacity, double submit_timeout,
           size_t staging_bytes, double staging_timeout, std::string key_namespace, int tp_rank, int tp_size,
           std::string staging_device, double abort_timeout, size_t max_abandoned_threads, int64_t layer_begin,
           int64_t layer_end, int worker_nice, double idle_poll) {
    if (!store) throwStatus(Status::InvalidArgument("store must not be None"));
    WriterContextOptions options;
    options.writer.num_threads = num_threads;
    options.writer.queue_capacity = queue_capacity;
    options.writer.submit_timeout = millis(submit_timeout, "submit_timeout");
    options.writer.abort_timeout = millis(abort_timeout, "abort_timeout");
    options.writer.max_abandoned_threads = max_abandoned_threads;
    options.writer.worker_nice = worker_nice;
    // The upper bound (1 s) is validateWriterOptions'.
    options.writer.idle_poll =
        std::chrono::duration_cast<std::chrono::microseconds>(*secondsArgument(idle_poll, "idle_poll"));
    check(validateWriterOptions(options.writer));
    if (staging_bytes == 0) throwStatus(Status::InvalidArgument("staging_bytes must be positive"));
    options.staging_bytes = staging_bytes;
    options.staging_timeout = millis(staging_timeout, "staging_timeout");
    options.keys = KeySpace{std::move(key_namespace), tp_rank, tp_size};
    check(validateKeySpace(options.keys));
    if (layer_begin != 0 || layer_end != 0) {
      if (layer_begin < 0 || layer_end <= layer_begin || layer_end > std::numeric_limits<int32_t>::max()) {
        throwStatus(Status::InvalidArgument("layers must be a non-empty range (begin, end) with 0 <= begin < end, got (" +
                                            std::to_string(layer_begin) + ", " + std::to_string(layer_end) + ")"));
      }
      options.layers = LayerRange{static_cast<uint32_t>(layer_begin), static_cast<uint32_t>(layer_end)};
    }
    Result<HostAllocator> allocator = hostAllocatorFor(staging_device);
    check(allocator.status());
    options.staging_allocator = std::move(allocator).value();
    ctx_ = WriterContext::create(std::move(store), std::move(options));
  }

  ~PyWriter() {
    if (!ctx_) return;
    // Destruction joins idle workers, and a worker may be waiting for the GIL to run a Python task.
    if (PyGILState_Check()) {
      py::gil_scoped_release release;
      ctx_.reset();
    } else {
      ctx_.reset();
    }
  }

  void close(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    std::shared_ptr<WriterContext> ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ctx.swap(ctx_);
    }
    if (!ctx) return;
    py::gil_scoped_release release;
    ctx->shutdown(deadline);
    ctx.reset();  // the last reference may be a waiter's; it frees the context when it returns
  }

  std::shared_ptr<WriterContext> ctx() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ctx_) throwStatus(Status::Lifecycle("the writer is closed"));
    return ctx_;
  }

  void init() { check(ctx()->init()); }

  void submit(py::function fn, std::string label, int64_t layer, std::string request, std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    Task task = pythonTask(std::move(fn));
    auto context = ctx();  // resolved with the GIL held: a closed writer raises here
    Status status;
    {
      py::gil_scoped_release release;  // a full queue blocks here
      status = context->writer().submit(std::move(task), TaskLabel{std::move(label), layer, std::move(request)},
                                        deadline);
    }
    check(status);
  }

  py::dict waitAllDone(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    CycleReport report;
    auto context = ctx();
    Status status;
    {
      py::gil_scoped_release release;
      status = context->writer().waitAllDone(deadline, &report);
    }
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

  py::dict abort(std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    AbortReport report;
    auto context = ctx();
    Status status;
    {
      py::gil_scoped_release release;
      status = context->abort(&report, deadline);
    }
    check(status);
    auto describe = [](const std::optional<TaskFailure>& f) -> py::object {
      if (!f) return py::none();
      return py::str(f->label.text() + ": " + f->status.toString());
    };
    py::dict out;
    out["cancelled"] = report.cancelled;
    out["finished_running"] = report.finished_running;
    out["abandoned"] = report.abandoned;
    out["failed"] = report.failed;
    out["first_failure"] = describe(report.first_failure);
    out["first_abandoned"] = describe(report.first_abandoned);
    return out;
  }

  uint64_t cancelRequest(const std::string& request) {
    auto context = ctx();
    py::gil_scoped_release release;
    return context->writer().cancelRequest(request);
  }

  std::string state() { return writerStateName(ctx()->writer().state()); }

  py::dict stats() {
    auto context = ctx();
    WriterStats s = context->writer().stats();
    StagingStats st = context->staging().stats();
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
    std::shared_ptr<CompletionBoard> loads = ctx()->loads();
    Status status;
    {
      py::gil_scoped_release release;
      status = loads->wait(layer, deadline);
    }
    check(status);
  }

  int64_t offerToTorch() { return WriterContext::offer(ctx()); }
  bool closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return ctx_ == nullptr;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<WriterContext> ctx_;
};

std::vector<uint64_t> hashList(const std::vector<int64_t>& hashes) {
  return std::vector<uint64_t>(hashes.begin(), hashes.end());
}

}  // namespace

void bindWriter(py::module_& m) {
  py::class_<PyWriter>(m, "Writer")
      .def(py::init<std::shared_ptr<CacheStore>, size_t, size_t, double, size_t, double, std::string, int, int,
                    std::string, double, size_t, int64_t, int64_t, int, double>(),
           py::arg("store"), py::arg("num_threads"), py::arg("queue_capacity"), py::arg("submit_timeout"),
           py::arg("staging_bytes"), py::arg("staging_timeout"), py::arg("namespace"), py::arg("tp_rank"),
           py::arg("tp_size"), py::arg("staging_device"), py::arg("abort_timeout"), py::arg("max_abandoned_threads"),
           py::arg("layer_begin"), py::arg("layer_end"), py::arg("worker_nice"), py::arg("idle_poll"))
      .def("init", &PyWriter::init)
      .def("submit", &PyWriter::submit, py::arg("fn"), py::arg("label"), py::arg("layer"), py::arg("request"),
           py::arg("timeout"))
      .def("wait_all_done", &PyWriter::waitAllDone, py::arg("timeout"))
      .def("abort", &PyWriter::abort, py::arg("timeout"))
      .def("cancel_request", &PyWriter::cancelRequest, py::arg("request"))
      .def("wait_layer_loaded", &PyWriter::waitLayerLoaded, py::arg("layer"), py::arg("timeout"))
      .def("close", &PyWriter::close, py::arg("timeout"))
      .def_property_readonly("state", &PyWriter::state)
      .def("offer_to_torch", &PyWriter::offerToTorch,
           "A one-shot ticket from which torch.classes.kvdump.Writer takes this writer.")
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
      [](const std::string& ns, int tp_rank, int tp_size, int64_t hash, uint32_t layer_begin, uint32_t layer_end) {
        return commitKey(KeySpace{ns, tp_rank, tp_size}, static_cast<uint64_t>(hash), LayerRange{layer_begin, layer_end});
      },
      py::arg("namespace"), py::arg("tp_rank"), py::arg("tp_size"), py::arg("block_hash"), py::arg("layer_begin") = 0,
      py::arg("layer_end") = 0);
  m.def(
      "lookup",
      [](const std::shared_ptr<CacheStore>& store, const std::string& ns, int tp_rank, int tp_size,
         const std::vector<int64_t>& hashes, uint32_t layer_begin, uint32_t layer_end) {
        if (!store) throwStatus(Status::InvalidArgument("store must not be None"));
        KeySpace space{ns, tp_rank, tp_size};
        check(validateKeySpace(space));
        std::vector<uint64_t> unsigned_hashes = hashList(hashes);
        Result<size_t> found = Status::Internal("unset");
        {
          py::gil_scoped_release release;
          found = lookupCommitted(*store, space, unsigned_hashes, LayerRange{layer_begin, layer_end});
        }
        check(found.status());
        return found.value();
      },
      py::arg("store"), py::arg("namespace"), py::arg("tp_rank"), py::arg("tp_size"), py::arg("block_hashes"),
      py::arg("layer_begin"), py::arg("layer_end"),
      "How many leading blocks have a commit record covering layers [layer_begin, layer_end) "
      "(0, 0: any whole-model record); one batched read, every record checked.");
}

}  // namespace kvdump::python
