// kvdump._C.WriterOptions: EngineOptions as Python sees it. Every default a Python writer or
// loader uses is read from here, and each setter checks its value's type, naming the field; the
// rules across fields are validateEngineOptions', applied when an engine is built.
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include "arguments.h"
#include "kvdump_ops/transfer_engine.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

double seconds(std::chrono::milliseconds ms) { return std::chrono::duration<double>(ms).count(); }

constexpr int64_t kSizeMax = std::numeric_limits<int64_t>::max();

// A count whose "0" means "the default": spelled None in Python, and at least 1 otherwise.
py::object optionalCount(size_t value) { return value == 0 ? py::object(py::none()) : py::object(py::int_(value)); }

size_t countArgument(py::handle value, const char* what) {
  if (value.is_none()) return 0;
  return static_cast<size_t>(integerArgument(value, what, 1, kSizeMax));
}

template <typename Member>
void secondsProperty(py::class_<EngineOptions>& c, const char* name, Member getter, const char* doc) {
  c.def_property(
      name, [getter](const EngineOptions& o) { return seconds(getter(const_cast<EngineOptions&>(o))); },
      [getter, name](EngineOptions& o, py::handle v) {
        getter(o) = std::chrono::duration_cast<std::chrono::milliseconds>(durationArgument(v, name));
      },
      doc);
}

}  // namespace

void bindEngineOptions(py::module_& m) {
  py::class_<EngineOptions> c(m, "WriterOptions",
                              "The settings of a writer's or a loader's engine, with the library's defaults. "
                              "Each setter checks its value's type; the rules across settings are checked when "
                              "a writer or loader is built.");
  c.def(py::init<>());
  c.def_property(
      "num_threads", [](const EngineOptions& o) { return optionalCount(o.pool.num_threads); },
      [](EngineOptions& o, py::handle v) { o.pool.num_threads = countArgument(v, "num_threads"); },
      "Worker threads; None: the cores torch's intra-op threads leave free, 1 to 8.");
  c.def_property(
      "queue_capacity", [](const EngineOptions& o) { return o.pool.queue_capacity; },
      [](EngineOptions& o, py::handle v) {
        o.pool.queue_capacity = static_cast<size_t>(integerArgument(v, "queue_capacity", 0, kSizeMax));
      },
      "Tasks that may wait in the queue; submit blocks while it is full.");
  secondsProperty(
      c, "submit_timeout", [](EngineOptions& o) -> std::chrono::milliseconds& { return o.pool.submit_timeout; },
      "Seconds a submit may block on a full queue.");
  secondsProperty(
      c, "abort_timeout", [](EngineOptions& o) -> std::chrono::milliseconds& { return o.pool.abort_timeout; },
      "Seconds an abort (or close) lets running tasks finish before abandoning them.");
  c.def_property(
      "max_abandoned_threads", [](const EngineOptions& o) { return optionalCount(o.pool.max_abandoned_threads); },
      [](EngineOptions& o, py::handle v) {
        o.pool.max_abandoned_threads = countArgument(v, "max_abandoned_threads");
      },
      "Threads that may be left in abandoned store calls while replacements start; None: num_threads.");
  c.def_property(
      "worker_nice", [](const EngineOptions& o) { return o.pool.worker_nice; },
      [](EngineOptions& o, py::handle v) {
        o.pool.worker_nice = static_cast<int>(integerArgument(v, "worker_nice", std::numeric_limits<int>::min(),
                                                              std::numeric_limits<int>::max()));
      },
      "How far workers lower their priority (Linux: batch class and this nice increment, 0..19; 0 keeps "
      "the caller's).");
  c.def_property(
      "idle_poll",
      [](const EngineOptions& o) -> py::object {
        if (!o.pool.idle_poll) return py::none();
        return py::float_(std::chrono::duration<double>(*o.pool.idle_poll).count());
      },
      [](EngineOptions& o, py::handle v) {
        if (v.is_none()) {
          o.pool.idle_poll.reset();
          return;
        }
        o.pool.idle_poll = std::chrono::duration_cast<std::chrono::microseconds>(durationArgument(v, "idle_poll"));
      },
      "Seconds between an idle worker's looks at the queue while a cycle is open (at most 1; 0: each "
      "submit wakes a worker); None: default_idle_poll() when the writer or loader is built.");
  c.def_property(
      "staging_bytes", [](const EngineOptions& o) { return o.staging_bytes; },
      [](EngineOptions& o, py::handle v) {
        o.staging_bytes = static_cast<size_t>(integerArgument(v, "staging_bytes", 0, kSizeMax));
      },
      "Bytes of host memory that blocks may occupy between capture and store.");
  secondsProperty(
      c, "staging_timeout", [](EngineOptions& o) -> std::chrono::milliseconds& { return o.staging_timeout; },
      "Seconds a task may wait for staging memory.");
  c.def_property(
      "staging_device", [](const EngineOptions& o) { return o.staging_device; },
      [](EngineOptions& o, py::handle v) { o.staging_device = textArgument(v, "staging_device"); },
      "Whose pinned memory stages blocks ('cuda', 'npu', 'cpu' for pageable); 'auto': this process's "
      "accelerator when it has a device, else pageable.");
  c.def("validate", [](const EngineOptions& o) { check(validateEngineOptions(o)); },
        "Raises KvdumpValueError naming the setting at fault when no engine can run with these.");
  m.def("default_num_threads", &defaultEngineThreads,
        "Workers when num_threads is not given: the cores torch's intra-op threads leave free, 1 to 8.");
  m.def(
      "default_idle_poll", [] { return std::chrono::duration<double>(defaultEngineIdlePoll()).count(); },
      "Seconds between an idle worker's polls when idle_poll is not given: 0.0005 where torch's intra-op "
      "threads leave a core free, else 0 (each submit wakes a worker).");
}

}  // namespace kvdump::python
