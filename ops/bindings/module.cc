// kvdump._C: the private extension. This file only exports; each area binds itself.
#include <pybind11/pybind11.h>

#include "kvdump_ops/direct_write.h"

namespace kvdump::python {
void bindStores(pybind11::module_& m);
void bindWriter(pybind11::module_& m);
}  // namespace kvdump::python

PYBIND11_MODULE(_C, m) {
  m.doc() = "kvdump native core: lifecycle writer, stores, and the torch ops (torch.ops.kvdump.*)";
  kvdump::python::bindStores(m);
  kvdump::python::bindWriter(m);
  // Plain C-API functions: the hot path of write_cache_store skips pybind11's dispatch as well.
  static PyMethodDef direct[] = {
      {"write_cache_store_direct", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&kvdump::writeCacheStoreDirect)),
       METH_FASTCALL,
       "write_cache_store_direct(writer: object, layer: int, kv_cache: torch.Tensor, v_cache: torch.Tensor | None, "
       "block_ids: torch.Tensor, block_hashes: torch.Tensor, request: str) -> object\n\n"
       "The calling thread's share of kvdump.write_cache_store: None once queued, NotImplemented when declined."},
      {"direct_writer_handle", &kvdump::claimDirectWriterHandle, METH_O,
       "direct_writer_handle(ticket: int) -> object\n\n"
       "Claims a writer offered by Writer.offer_to_torch() for write_cache_store_direct."},
      {nullptr, nullptr, 0, nullptr}};
  if (PyModule_AddFunctions(m.ptr(), direct) != 0) throw pybind11::error_already_set();
}
