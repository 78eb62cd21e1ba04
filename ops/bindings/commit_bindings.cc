// kvdump._C.lookup: how many leading blocks a store has committed, read under one key space.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "kvdump/block_key.h"
#include "kvdump/cache_store.h"
#include "kvdump/commit_record.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {

void bindCommitLookup(py::module_& m) {
  m.def(
      "lookup",
      [](const std::shared_ptr<CacheStore>& store, const KeySpace& space, const std::vector<int64_t>& hashes,
         uint32_t layer_begin, uint32_t layer_end) {
        std::vector<uint64_t> unsigned_hashes(hashes.begin(), hashes.end());
        Result<size_t> found = Status::Internal("unset");
        {
          py::gil_scoped_release release;
          found = lookupCommitted(*store, space, unsigned_hashes, LayerRange{layer_begin, layer_end});
        }
        check(found.status());
        return found.value();
      },
      py::arg("store").none(false), py::arg("key_space"), py::arg("block_hashes"), py::arg("layer_begin"),
      py::arg("layer_end"),
      "How many leading blocks have a commit record covering layers [layer_begin, layer_end) "
      "(0, 0: any whole-model record); one batched read, every record checked.");
}

}  // namespace kvdump::python
