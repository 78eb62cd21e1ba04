// The direct Python entry of write_cache_store: the calling thread's whole cost of a layer write,
// without the generic torch.ops call path (which converts every argument against the schema and,
// for the writer object, imports modules on each call). Declared with Python's C API only, so the
// pybind11 module that exports it never sees libtorch.
#pragma once

#include <Python.h>

namespace kvdump {

/// kvdump._C.write_cache_store(writer, layer, kv_cache, block_ids, block_hashes, *, v_cache=None,
/// request=''): the public write_cache_store itself, so that a call pays for no Python frame. Queues
/// plain arguments exactly as torch.ops.kvdump.write_cache_store does (one shared implementation),
/// raises its errors as the typed kvdump exceptions made from their Status by the installed
/// kvdump.errors.error_for_code (as the bindings' are), and hands anything not in the exact form it
/// takes (a torch.Tensor, not a subclass; an int layer; a str request; a writer with a direct
/// handle), or any call while a torch function or dispatch mode is active, to the installed Python
/// path with the call's own arguments, which goes through the registered op.
/// METH_FASTCALL | METH_KEYWORDS; call with the GIL held; thread-safe as the writer is.
PyObject* writeCacheStore(PyObject* module, PyObject* const* args, size_t nargsf, PyObject* kwnames);

/// kvdump._C.install_write_fallbacks(write, error_for_code): what writeCacheStore calls for a call it
/// declines, and to make its typed errors. kvdump calls it once, at import; thread-safe
/// under the GIL.
PyObject* installWriteFallbacks(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

/// kvdump._C.direct_tensor_layout_checked(): whether plain tensors are read through their object
/// layout, confirmed on this torch when the module loaded. METH_NOARGS; thread-safe.
PyObject* directTensorLayoutChecked(PyObject* module, PyObject* unused);

/// kvdump._C.direct_writer_handle(ticket): claims the writer offered under `ticket` (see
/// TicketOffers) as a capsule holding a weak reference, which the writer keeps as its
/// `_direct` attribute. ValueError when the ticket names no writer. METH_O; thread-safe.
PyObject* claimDirectWriterHandle(PyObject* module, PyObject* ticket);

/// Adds these functions to `module` (kvdump._C) and looks up the tensor types they accept; imports
/// torch if needed. Call once, while the module loads. 0, or -1 with a Python error set.
int addDirectWriteFunctions(PyObject* module);

}  // namespace kvdump
