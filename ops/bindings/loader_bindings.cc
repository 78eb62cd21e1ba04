// Python binding of LoaderContext as kvdump._C.Loader. Every blocking call releases the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <optional>

#include "arguments.h"
#include "context_owner.h"
#include "engine_reports.h"
#include "interruptible_wait.h"
#include "kvdump_ops/loader_context.h"
#include "python_exit_guard.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

std::shared_ptr<LoaderContext> makeLoader(std::shared_ptr<CacheStore> store, EngineOptions options,
                                          const KeySpace& keys) {
  options.keys = keys;
  Result<std::shared_ptr<LoaderContext>> made = LoaderContext::create(releasedOnlyWhilePythonRuns(std::move(store)), options);
  check(made.status());
  return std::move(made).value();
}

/// Owner of one LoaderContext on the Python side (kvdump._C.Loader). Thread-safe.
class PyLoader : public ContextOwner<LoaderContext> {
 public:
  PyLoader(std::shared_ptr<CacheStore> store, const EngineOptions& options, const KeySpace& keys)
      : ContextOwner(makeLoader(std::move(store), options, keys), "loader") {}

  void waitLayer(int64_t layer, std::optional<double> timeout) {
    auto deadline = secondsArgument(timeout, "timeout");
    std::shared_ptr<CompletionBoard> board = ctx()->board();
    std::shared_ptr<LoaderContext> context = ctx();
    checkWithoutGil([&] {
      Status waited =
          waitInterruptibly(deadline, [&](std::chrono::nanoseconds slice) { return board->wait(layer, slice); });
      if (waited.code() == StatusCode::kNotFound && !board->expected(layer) &&
          context->pool().state() == WriterState::kIdle) {
        return Status::Lifecycle("wait_layer() with no loading session open and nothing loaded for layer " +
                                 std::to_string(layer) + ": call start() and load_async() first");
      }
      return waited;
    });
  }
};

}  // namespace

void bindLoader(py::module_& m) {
  py::class_<PyLoader> c(m, "Loader");
  c.def(py::init<std::shared_ptr<CacheStore>, const EngineOptions&, const KeySpace&>(), py::arg("store").none(false),
        py::arg("options"), py::arg("key_space"))
      .def("open", &PyLoader::open)
      .def("finish", &PyLoader::barrier, py::arg("timeout"))
      .def("wait_layer", &PyLoader::waitLayer, py::arg("layer"), py::arg("timeout"));
  bindContextOwner(c);
}

}  // namespace kvdump::python
