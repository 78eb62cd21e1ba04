#include "kvdump_ops/direct_write.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/Tensor.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "../src/held_context.h"
#include "../src/layer_write_call.h"
#include "../src/torch_status.h"
#include "kvdump_ops/python_signals.h"

namespace kvdump {
namespace {

constexpr const char* kCapsuleName = "kvdump.DirectWriterHandle";

using Handle = std::weak_ptr<WriterContext>;

PyObject* directAttributeName() {
  static PyObject* name = PyUnicode_InternFromString("_direct");  // interned once, never freed
  return name;
}

void destroyHandle(PyObject* capsule) {
  delete static_cast<Handle*>(PyCapsule_GetPointer(capsule, kCapsuleName));
}

// Null when the writer has no direct handle (not a kvdump writer): the caller explains that. The
// handle lives in the writer's instance dict, and is read from there directly: a generic attribute
// lookup first walks the class's MRO, which after a layer's matmuls is a row of cache misses. The
// capsule is ours when its name is our very name pointer; its context is the handle, read without
// the name comparison PyCapsule_GetPointer makes.
Handle* handleOf(PyObject* writer) {
  PyObject** dict = _PyObject_GetDictPtr(writer);
  if (dict == nullptr || *dict == nullptr) return nullptr;
  PyObject* capsule = PyDict_GetItemWithError(*dict, directAttributeName());  // borrowed
  if (capsule == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  if (!PyCapsule_CheckExact(capsule) || PyCapsule_GetName(capsule) != kCapsuleName) {
    PyErr_Clear();
    return nullptr;
  }
  return static_cast<Handle*>(PyCapsule_GetContext(capsule));
}

// torch.Tensor and torch.nn.Parameter, looked up once when the module is loaded. Other subclasses
// may give their tensors other semantics (__torch_function__), so they are left to the op.
struct PlainTensorTypes {
  PyObject* tensor = nullptr;
  PyObject* parameter = nullptr;
  PyObject* cdata = nullptr;  // the attribute holding a tensor's TensorImpl address
  // Whether a plain tensor's at::Tensor sits right after its object header (PythonTensorLayout), as
  // checked on real tensors when the module loads; otherwise every call reads `_cdata`.
  bool layout_checked = false;
};

const PlainTensorTypes* plain_tensor_types = nullptr;  // set once by addDirectWriteFunctions

bool isPlainTensor(PyObject* o) {
  auto* type = reinterpret_cast<PyObject*>(Py_TYPE(o));
  return type == plain_tensor_types->tensor || type == plain_tensor_types->parameter;
}

// How torch lays out a Python tensor: its at::Tensor right after the object header. Declared here,
// not included, so that this file needs none of torch's Python headers; relied on only after
// tensorLayoutHolds() confirmed it on this torch.
struct PythonTensorLayout {
  PyObject_HEAD
  at::Tensor cdata;
};

// The TensorImpl address a tensor's `_cdata` attribute gives; nullptr with no error set when it
// gives none.
void* cdataAddress(PyObject* o) {
  PyObject* address = PyObject_GetAttr(o, plain_tensor_types->cdata);
  if (address == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  void* impl = PyLong_AsVoidPtr(address);
  Py_DECREF(address);
  if (impl == nullptr) PyErr_Clear();
  return impl;
}

// The tensor of a plain Python tensor (checked by isPlainTensor), for the length of a call: a
// reference into the Python object where its layout was confirmed (no reference count touched),
// else a new reference read through torch's own `_cdata` attribute. Not thread-safe; one per call.
class PlainTensor {
 public:
  bool take(PyObject* o) {
    if (plain_tensor_types->layout_checked) {
      ref_ = &reinterpret_cast<PythonTensorLayout*>(o)->cdata;
      return ref_->defined();
    }
    void* impl = cdataAddress(o);
    if (impl == nullptr) return false;
    owned_ = at::Tensor(c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>::reclaim_copy(
        static_cast<c10::TensorImpl*>(impl)));
    ref_ = &*owned_;
    return true;
  }
  const at::Tensor& get() const { return *ref_; }

 private:
  std::optional<at::Tensor> owned_;
  const at::Tensor* ref_ = nullptr;
};

// Whether PythonTensorLayout holds for tensors of each plain type, a view and one that requires
// grad: the at::Tensor read from the layout must be the one `_cdata` names. Needs the GIL.
bool tensorLayoutHolds(PyObject* torch) {
  PyObject* made = PyRun_String(
      "lambda t: [t.empty(3), t.empty(4)[1:], t.ones(2, requires_grad=True), t.nn.Parameter(t.empty(2))]",
      Py_eval_input, PyModule_GetDict(torch), PyModule_GetDict(torch));
  if (made == nullptr) {
    PyErr_Clear();
    return false;
  }
  PyObject* samples = PyObject_CallOneArg(made, torch);
  Py_DECREF(made);
  if (samples == nullptr) {
    PyErr_Clear();
    return false;
  }
  bool holds = PyList_Check(samples);
  for (Py_ssize_t i = 0; holds && i < PyList_GET_SIZE(samples); ++i) {
    PyObject* sample = PyList_GET_ITEM(samples, i);
    void* named = cdataAddress(sample);
    const at::Tensor& laid = reinterpret_cast<PythonTensorLayout*>(sample)->cdata;
    holds = isPlainTensor(sample) && named != nullptr && laid.unsafeGetTensorImpl() == named;
  }
  Py_DECREF(samples);
  return holds;
}

PyObject* declined() { Py_RETURN_NOTIMPLEMENTED; }

// Runs `fn`, turning the c10 errors the shared implementation raises into the Python exceptions
// torch.ops would raise: nullptr with the error set, or `fn`'s result.
template <typename Fn>
PyObject* raisingAsTorchOps(Fn&& fn) {
  try {
    return fn();
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// The GIL released for a scope, and taken back when it ends, however it ends.
class GilReleased {
 public:
  GilReleased() : state_(PyEval_SaveThread()) {}
  ~GilReleased() { PyEval_RestoreThread(state_); }
  GilReleased(const GilReleased&) = delete;
  GilReleased& operator=(const GilReleased&) = delete;

 private:
  PyThreadState* state_;
};

// What the fast path did with a call.
enum class Outcome { kQueued, kDeclined, kFailed };

// Python callables kvdump installs once, at import (see installWriteFallbacks); leaked with the module.
struct Fallbacks {
  PyObject* write = nullptr;           // the Python path of write_cache_store, for what the fast path declines
  PyObject* error_for_code = nullptr;  // (code, message, key) -> the typed kvdump exception
};
Fallbacks fallbacks;

// [[gnu::hot]]: on the calling thread's path of a layer write (see layer_write_call.cc). Queues the
// write, declines (nothing done, no error set) what the registered op must handle, or fails: with a
// kvdump Status in `*failure` (no Python error set), or with any other error set as torch.ops would
// raise it.
[[gnu::hot]] Outcome writeIfPlain(PyObject* writer, PyObject* layer, PyObject* kv, PyObject* v, PyObject* ids,
                                  PyObject* hashes, PyObject* request, Status* failure) {
  // Anything unusual goes through the registered op, where the dispatcher (modes, subclasses) and
  // the Python checks (conversions, typed errors naming the argument) take care of it.
  if (!PyLong_CheckExact(layer) || !isPlainTensor(kv) || (v != Py_None && !isPlainTensor(v)) || !isPlainTensor(ids) ||
      !isPlainTensor(hashes) || !PyUnicode_CheckExact(request) || c10::impl::TorchDispatchModeTLS::any_modes_set() ||
      at::impl::torch_function_mode_enabled()) {
    return Outcome::kDeclined;
  }
  int overflow = 0;
  const long long layer_index = PyLong_AsLongLongAndOverflow(layer, &overflow);
  if (overflow != 0) return Outcome::kDeclined;
  std::string_view request_text;
  if (PyUnicode_IS_COMPACT_ASCII(request)) {  // the usual request id: its bytes are its UTF-8
    request_text = std::string_view(static_cast<const char*>(PyUnicode_DATA(request)),
                                    static_cast<size_t>(PyUnicode_GET_LENGTH(request)));
  } else {
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(request, &size);
    if (utf8 == nullptr) {
      PyErr_Clear();
      return Outcome::kDeclined;
    }
    request_text = std::string_view(utf8, static_cast<size_t>(size));
  }
  Handle* handle = handleOf(writer);
  if (handle == nullptr) return Outcome::kDeclined;
  PlainTensor kv_cache, block_ids, block_hashes, v_part;
  if (!kv_cache.take(kv) || !block_ids.take(ids) || !block_hashes.take(hashes)) return Outcome::kDeclined;
  std::optional<at::Tensor> v_cache;
  if (v != Py_None) {
    if (!v_part.take(v)) return Outcome::kDeclined;
    v_cache = v_part.get();
  }
  PyObject* done = raisingAsTorchOps([&]() -> PyObject* {
    try {
      // Without the GIL: a full queue blocks the submit, and the worker that would make room may be
      // running a Python store that needs the GIL. Everything used here is alive through the call's
      // own arguments, and none of it is Python's.
      GilReleased released;
      queueLayerWrite(*holdContext(*handle), layer_index, kv_cache.get(), v_cache, block_ids.get(),
                      block_hashes.get(), request_text, pythonSignalRaised);
    } catch (const StatusCarrier& e) {
      *failure = e.status();
      return nullptr;  // no Python error set: the caller raises the Status
    }
    Py_RETURN_NONE;
  });
  if (done == nullptr) {
    if (PyErr_Occurred()) *failure = Status();  // a signal handler raised (Ctrl-C): that exception stands
    return Outcome::kFailed;
  }
  Py_DECREF(done);
  return Outcome::kQueued;
}

// Raises the typed kvdump exception of `status`, made by kvdump.errors.error_for_code as the
// bindings' errors are: from the Status itself, not from a message. Always nullptr.
[[gnu::cold]] PyObject* raiseTyped(const Status& status) {
  auto text = [](const std::string& s) {  // a store's key or message need not be valid UTF-8
    return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
  };
  PyObject* code = PyLong_FromLong(static_cast<long>(status.code()));
  PyObject* message = text(status.message());
  PyObject* key = text(status.key());
  PyObject* typed = code != nullptr && message != nullptr && key != nullptr
                        ? PyObject_CallFunctionObjArgs(fallbacks.error_for_code, code, message, key, nullptr)
                        : nullptr;
  Py_XDECREF(code);
  Py_XDECREF(message);
  Py_XDECREF(key);
  if (typed == nullptr) return nullptr;  // making it failed: that error stands
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(typed)), typed);
  Py_DECREF(typed);
  return nullptr;
}

// Reads a vectorcall's keywords into `*v_cache` and `*request` (left as they are when absent);
// false when a keyword is neither (the Python path then raises the TypeError Python would).
bool writeKeywords(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** v_cache,
                   PyObject** request) {
  if (kwnames == nullptr) return true;
  const Py_ssize_t count = PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_CompareWithASCIIString(key, "v_cache") == 0) {
      *v_cache = args[nargs + i];
    } else if (PyUnicode_CompareWithASCIIString(key, "request") == 0) {
      *request = args[nargs + i];
    } else {
      return false;
    }
  }
  return true;
}

PyObject* emptyRequest() {
  static PyObject* empty = PyUnicode_InternFromString("");  // interned once, never freed
  return empty;
}

}  // namespace

[[gnu::hot]] PyObject* writeCacheStore(PyObject* /*module*/, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (fallbacks.write == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "kvdump._C.write_cache_store is used before kvdump installed it");
    return nullptr;
  }
  PyObject* v = Py_None;
  PyObject* request = emptyRequest();
  if (nargs == 5 && writeKeywords(args, nargs, kwnames, &v, &request)) {
    Status failure;
    switch (writeIfPlain(args[0], args[1], args[2], v, args[3], args[4], request, &failure)) {
      case Outcome::kQueued:
        Py_RETURN_NONE;
      case Outcome::kFailed:
        return failure.ok() ? nullptr : raiseTyped(failure);  // ok: not a kvdump error, already set
      case Outcome::kDeclined:
        break;
    }
  }
  return PyObject_Vectorcall(fallbacks.write, args, nargsf, kwnames);
}

PyObject* installWriteFallbacks(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyCallable_Check(args[0]) || !PyCallable_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "install_write_fallbacks(write, error_for_code) takes two callables");
    return nullptr;
  }
  Py_INCREF(args[0]);
  Py_INCREF(args[1]);
  Py_XSETREF(fallbacks.write, args[0]);
  Py_XSETREF(fallbacks.error_for_code, args[1]);
  Py_RETURN_NONE;
}

PyObject* directTensorLayoutChecked(PyObject* /*module*/, PyObject* /*unused*/) {
  return PyBool_FromLong(plain_tensor_types != nullptr && plain_tensor_types->layout_checked);
}

PyObject* claimDirectWriterHandle(PyObject* /*module*/, PyObject* ticket) {
  if (!PyLong_Check(ticket)) {
    PyErr_SetString(PyExc_TypeError, "direct_writer_handle takes the int ticket of Writer.offer_to_torch()");
    return nullptr;
  }
  const long long number = PyLong_AsLongLong(ticket);
  if (number == -1 && PyErr_Occurred()) return nullptr;
  return raisingAsTorchOps([&] {
    auto* handle = new Handle(claimOffered<WriterContext>(number));
    PyObject* capsule = PyCapsule_New(handle, kCapsuleName, &destroyHandle);
    if (capsule == nullptr) {
      delete handle;
      return capsule;
    }
    if (PyCapsule_SetContext(capsule, handle) != 0) {  // what handleOf reads
      Py_DECREF(capsule);  // destroyHandle frees the handle
      return static_cast<PyObject*>(nullptr);
    }
    return capsule;
  });
}

int addDirectWriteFunctions(PyObject* module) {
  static PyMethodDef functions[] = {
      {"write_cache_store", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&writeCacheStore)),
       METH_FASTCALL | METH_KEYWORDS,
       "write_cache_store(writer, layer, kv_cache, block_ids, block_hashes, *, v_cache=None, request='')\n--\n\n"
       "Queue one layer's blocks for the store and return at once.\n\n"
       "kv_cache is [2, num_blocks, block_size, num_kv_heads, head_dim] (K then V), K with v_cache given\n"
       "separately, or an MLA latent cache [num_blocks, block_size, head_size] (no V: v_cache must be None;\n"
       "each block is stored as its latent bytes alone). Blocks block_ids are stored under keys made from\n"
       "block_hashes. The tensors are captured by reference (no copy, no device sync): do not modify those\n"
       "blocks until wait_all_done returns. Bad input raises kvdump.KvdumpValueError (KvdumpTypeError for a\n"
       "wrong type), naming the argument, before anything is queued.\n\n"
       "Plain tensors and a kvdump.AsyncWriter are handled here, in C++; anything else (tensor subclasses,\n"
       "dispatch modes, lists of ids) goes through torch.ops.kvdump.write_cache_store."},
      {"install_write_fallbacks", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&installWriteFallbacks)),
       METH_FASTCALL,
       "install_write_fallbacks(write: Callable, error_for_code: Callable) -> None\n\n"
       "What write_cache_store calls for what it declines, and to make its typed errors; kvdump installs them."},
      {"direct_tensor_layout_checked", &directTensorLayoutChecked, METH_NOARGS,
       "direct_tensor_layout_checked() -> bool\n\n"
       "Whether write_cache_store reads plain tensors through their confirmed object layout (else "
       "through their _cdata attribute)."},
      {"direct_writer_handle", &claimDirectWriterHandle, METH_O,
       "direct_writer_handle(ticket: int) -> object\n\n"
       "Claims a writer offered by Writer.offer_to_torch() for write_cache_store."},
      {nullptr, nullptr, 0, nullptr}};
  PyObject* torch = PyImport_ImportModule("torch");
  if (torch == nullptr) return -1;
  PyObject* nn = PyImport_ImportModule("torch.nn");
  auto* types = new PlainTensorTypes();  // kept for the life of the process, as the modules are
  types->tensor = PyObject_GetAttrString(torch, "Tensor");
  types->parameter = nn != nullptr ? PyObject_GetAttrString(nn, "Parameter") : nullptr;
  types->cdata = PyUnicode_InternFromString("_cdata");
  Py_DECREF(torch);
  Py_XDECREF(nn);
  if (types->tensor == nullptr || types->parameter == nullptr || types->cdata == nullptr) return -1;
  plain_tensor_types = types;
  PyObject* torch_module = PyImport_ImportModule("torch");
  if (torch_module == nullptr) return -1;
  types->layout_checked = tensorLayoutHolds(torch_module);
  Py_DECREF(torch_module);
  return PyModule_AddFunctions(module, functions);
}

}  // namespace kvdump
