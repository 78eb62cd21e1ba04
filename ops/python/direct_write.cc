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

// Null when the writer has no direct handle (not a kvdump writer): the caller explains that.
Handle* handleOf(PyObject* writer) {
  PyObject* capsule = PyObject_GetAttr(writer, directAttributeName());
  if (capsule == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  auto* handle = static_cast<Handle*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  Py_DECREF(capsule);  // the writer keeps the capsule alive for this call
  if (handle == nullptr) PyErr_Clear();
  return handle;
}

// torch.Tensor and torch.nn.Parameter, looked up once when the module is loaded. Other subclasses
// may give their tensors other semantics (__torch_function__), so they are left to the op.
struct PlainTensorTypes {
  PyObject* tensor = nullptr;
  PyObject* parameter = nullptr;
  PyObject* cdata = nullptr;  // the attribute holding a tensor's TensorImpl address
};

const PlainTensorTypes* plain_tensor_types = nullptr;  // set once by addDirectWriteFunctions

bool isPlainTensor(PyObject* o) {
  auto* type = reinterpret_cast<PyObject*>(Py_TYPE(o));
  return type == plain_tensor_types->tensor || type == plain_tensor_types->parameter;
}

// A new reference to the tensor of a plain Python tensor (checked by isPlainTensor), read through
// torch's own `_cdata` attribute: this file needs none of torch's Python headers.
std::optional<at::Tensor> tensorOf(PyObject* o) {
  PyObject* address = PyObject_GetAttr(o, plain_tensor_types->cdata);
  if (address == nullptr) {
    PyErr_Clear();
    return std::nullopt;
  }
  void* impl = PyLong_AsVoidPtr(address);
  Py_DECREF(address);
  if (impl == nullptr) {
    PyErr_Clear();
    return std::nullopt;
  }
  return at::Tensor(c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>::reclaim_copy(
      static_cast<c10::TensorImpl*>(impl)));
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

}  // namespace

// [[gnu::hot]]: on the calling thread's path of a layer write (see layer_write_call.cc).
[[gnu::hot]] PyObject* writeCacheStoreDirect(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 7) {
    PyErr_Format(PyExc_TypeError, "write_cache_store_direct takes 7 arguments, got %zd", nargs);
    return nullptr;
  }
  PyObject* writer = args[0];
  PyObject* layer = args[1];
  PyObject* kv = args[2];
  PyObject* v = args[3];
  PyObject* ids = args[4];
  PyObject* hashes = args[5];
  PyObject* request = args[6];
  // Anything unusual goes through the registered op, where the dispatcher (modes, subclasses) and
  // the Python checks (conversions, typed errors naming the argument) take care of it.
  if (!PyLong_CheckExact(layer) || !isPlainTensor(kv) || (v != Py_None && !isPlainTensor(v)) || !isPlainTensor(ids) ||
      !isPlainTensor(hashes) || !PyUnicode_CheckExact(request) || c10::impl::TorchDispatchModeTLS::any_modes_set() ||
      at::impl::torch_function_mode_enabled()) {
    return declined();
  }
  int overflow = 0;
  const long long layer_index = PyLong_AsLongLongAndOverflow(layer, &overflow);
  if (overflow != 0) return declined();
  Py_ssize_t request_size = 0;
  const char* request_text = PyUnicode_AsUTF8AndSize(request, &request_size);
  if (request_text == nullptr) {
    PyErr_Clear();
    return declined();
  }
  Handle* handle = handleOf(writer);
  if (handle == nullptr) return declined();
  std::optional<at::Tensor> kv_cache = tensorOf(kv);
  std::optional<at::Tensor> block_ids = tensorOf(ids);
  std::optional<at::Tensor> block_hashes = tensorOf(hashes);
  std::optional<at::Tensor> v_cache;
  if (v != Py_None) {
    v_cache = tensorOf(v);
    if (!v_cache) return declined();
  }
  if (!kv_cache || !block_ids || !block_hashes) return declined();
  return raisingAsTorchOps([&]() -> PyObject* {
    queueLayerWrite(*holdContext(*handle), layer_index, *kv_cache, v_cache, *block_ids, *block_hashes,
                    std::string_view(request_text, static_cast<size_t>(request_size)));
    Py_RETURN_NONE;
  });
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
    if (capsule == nullptr) delete handle;
    return capsule;
  });
}

int addDirectWriteFunctions(PyObject* module) {
  static PyMethodDef functions[] = {
      {"write_cache_store_direct", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&writeCacheStoreDirect)),
       METH_FASTCALL,
       "write_cache_store_direct(writer: object, layer: int, kv_cache: torch.Tensor, v_cache: torch.Tensor | None, "
       "block_ids: torch.Tensor, block_hashes: torch.Tensor, request: str) -> object\n\n"
       "The calling thread's share of kvdump.write_cache_store: None once queued, NotImplemented when declined."},
      {"direct_writer_handle", &claimDirectWriterHandle, METH_O,
       "direct_writer_handle(ticket: int) -> object\n\n"
       "Claims a writer offered by Writer.offer_to_torch() for write_cache_store_direct."},
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
  return PyModule_AddFunctions(module, functions);
}

}  // namespace kvdump
