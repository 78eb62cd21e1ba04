// Python binding of WriterContext as kvdump._C.Writer. Every blocking call releases the GIL.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <limits>
#include <optional>

#include "arguments.h"
#include "context_owner.h"
#include "engine_reports.h"
#include "interruptible_wait.h"
#include "kvdump_ops/writer_context.h"
#include "python_exit_guard.h"
#include "python_task.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

// Python's layers=(begin, end), or None for every layer written.
using LayerPair = std::optional<std::pair<int64_t, int64_t>>;

LayerRange layerRange(const LayerPair& layers) {
  if (!layers) return {};
  const auto [begin, end] = *layers;
  if (begin < 0 || end <= begin || end > std::numeric_limits<int32_t>::max()) {
    throwStatus(Status::InvalidArgument("layers must be a non-empty range (begin, end) with 0 <= begin < end, got (" +
                                        std::to_string(begin) + ", " + std::to_string(end) + ")"));
  }
  return LayerRange{static_cast<uint32_t>(begin), static_cast<uint32_t>(end)};
}

std::shared_ptr<WriterContext> makeWriter(std::shared_ptr<CacheStore> store, EngineOptions options,
                                          const KeySpace& keys, const LayerPair& layers) {
  options.keys = keys;
  Result<std::shared_ptr<WriterContext>> made = WriterContext::create(releasedOnlyWhilePythonRuns(std::move(store)), options,
                                                                   layerRange(layers));
  check(made.status());
  return std::move(made).value();
}

/// Owner of one WriterContext on the Python side (kvdump._C.Writer). Thread-safe.
class PyWriter : public ContextOwner<WriterContext> {
 public:
  PyWriter(std::shared_ptr<CacheStore> store, const EngineOptions& options, const KeySpace& keys,
           const LayerPair& layers)
      : ContextOwner(makeWriter(std::move(store), options, keys, layers), "writer") {}

  void submit(py::function fn, std::string label, int64_t layer, std::string request, std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    Task task = pythonTask(std::move(fn));
    auto context = ctx();  // resolved with the GIL held: a closed writer raises here
    // A full queue blocks here, without the GIL.
    checkWithoutGil([&] {
      return context->pool().submit(std::move(task), TaskLabel{std::move(label), layer, std::move(request)}, deadline,
                                    pythonSignalRaised);
    });
  }

  uint64_t cancelRequest(const std::string& request) {
    auto context = ctx();
    py::gil_scoped_release release;
    return context->pool().cancelRequest(request);
  }
};

}  // namespace

void bindWriter(py::module_& m) {
  py::class_<PyWriter> c(m, "Writer");
  c.def(py::init<std::shared_ptr<CacheStore>, const EngineOptions&, const KeySpace&,
                 LayerPair>(),
        py::arg("store").none(false), py::arg("options"), py::arg("key_space"), py::arg("layers"))
      .def(
          "init",
          [](PyWriter& writer, bool full_queue_fails_request) {
            writer.openWith(CycleOptions{full_queue_fails_request});
          },
          py::arg("full_queue_fails_request") = false)
      .def("submit", &PyWriter::submit, py::arg("fn"), py::arg("label"), py::arg("layer"), py::arg("request"),
           py::arg("timeout"))
      .def("wait_all_done", &PyWriter::barrier, py::arg("timeout"))
      .def("cancel_request", &PyWriter::cancelRequest, py::arg("request"));
  bindContextOwner(c);
}

}  // namespace kvdump::python
