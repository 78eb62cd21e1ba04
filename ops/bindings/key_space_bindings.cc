// kvdump._C.KeySpace: the (namespace, TP rank, TP size) every block and commit key lives in,
// validated once when made.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <string>

#include "arguments.h"
#include "kvdump/block_key.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

KeySpace makeKeySpace(py::handle ns, py::handle tp_rank, py::handle tp_size) {
  KeySpace space{textArgument(ns, "namespace"), static_cast<int>(integerArgument(tp_rank, "tp_rank", 0, kIntMax)),
                 static_cast<int>(integerArgument(tp_size, "tp_size", 1, kIntMax))};
  check(validateKeySpace(space));
  return space;
}

uint64_t hashArgument(py::handle value) {
  return static_cast<uint64_t>(integerArgument(value, "block_hash", std::numeric_limits<int64_t>::min(),
                                               std::numeric_limits<int64_t>::max()));
}

uint32_t layerArgument(py::handle value, const char* what) {
  return static_cast<uint32_t>(integerArgument(value, what, 0, kIntMax));
}

}  // namespace

void bindKeySpace(py::module_& m) {
  const KeySpace defaults;
  m.attr("MAX_TP_SIZE") = kMaxTpSize;  // TP rank and size are 16-bit fields of every record's header
  py::class_<KeySpace>(m, "KeySpace",
                       "Where blocks and commit records live: a namespace (the key prefix that keeps deployments "
                       "apart) and a tensor-parallel shard (tp_rank of tp_size). Checked once, when made; immutable.")
      .def(py::init(&makeKeySpace), py::arg("namespace") = defaults.namespace_, py::arg("tp_rank") = defaults.tp_rank,
           py::arg("tp_size") = defaults.tp_size)
      .def_property_readonly("namespace", [](const KeySpace& k) { return k.namespace_; })
      .def_property_readonly("tp_rank", [](const KeySpace& k) { return k.tp_rank; })
      .def_property_readonly("tp_size", [](const KeySpace& k) { return k.tp_size; })
      .def_property_readonly(
          "fingerprint", [](const KeySpace& k) { return keySpaceFingerprint(k); },
          "The 64-bit fingerprint every record of this key space carries.")
      .def(
          "block_key",
          [](const KeySpace& k, py::handle block_hash, py::handle layer) {
            return blockKey(k, hashArgument(block_hash), layerArgument(layer, "layer"));
          },
          py::arg("block_hash"), py::arg("layer"), "The store key of one layer of one block.")
      .def(
          "commit_key",
          [](const KeySpace& k, py::handle block_hash, py::handle layer_begin, py::handle layer_end) {
            const LayerRange layers{layerArgument(layer_begin, "layer_begin"), layerArgument(layer_end, "layer_end")};
            return commitKey(k, hashArgument(block_hash), layers);
          },
          py::arg("block_hash"), py::arg("layer_begin") = 0, py::arg("layer_end") = 0,
          "The store key of a block's commit record (layers (0, 0): a whole model).")
      .def(
          "__eq__",
          [](const KeySpace& a, const KeySpace& b) {
            return a.namespace_ == b.namespace_ && a.tp_rank == b.tp_rank && a.tp_size == b.tp_size;
          },
          py::is_operator())  // anything but a KeySpace: NotImplemented, so Python falls back to identity
      .def("__hash__", [](const KeySpace& k) { return keySpaceFingerprint(k); })
      .def("__repr__",
           [](const KeySpace& k) {
             return "KeySpace(namespace=" + std::string(py::repr(py::str(k.namespace_))) +
                    ", tp_rank=" + std::to_string(k.tp_rank) + ", tp_size=" + std::to_string(k.tp_size) + ")";
           })
      .def(py::pickle([](const KeySpace& k) { return py::make_tuple(k.namespace_, k.tp_rank, k.tp_size); },
                      [](const py::tuple& t) {
                        if (t.size() != 3) throwStatus(Status::InvalidArgument("a pickled KeySpace has 3 fields"));
                        return makeKeySpace(t[0], t[1], t[2]);
                      }));

}

}  // namespace kvdump::python
