#include "python_store.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "python_exception_status.h"
#include "python_exit_guard.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

// A store failure raised as a plain Python exception is most likely I/O (a remote call, a file).
constexpr StatusCode kStoreErrorFallback = StatusCode::kIoError;

Status emptyKey() { return Status::InvalidArgument("empty key"); }

Status keyed(Status status, std::string_view key) {
  if (!status.ok() && status.key().empty()) status.withKey(std::string(key));
  return status;
}

// Lends C++ memory to a Python method as a memoryview and takes it back afterwards: after release()
// the view (and anything still holding it) raises on access instead of reading reused memory.
class LentView {
 public:
  LentView(const uint8_t* data, size_t size, bool readonly) {
    static uint8_t empty_backing = 0;  // a memoryview needs a non-null pointer even when empty
    void* ptr = data != nullptr ? const_cast<uint8_t*>(data) : &empty_backing;
    view_ = py::memoryview::from_memory(ptr, static_cast<py::ssize_t>(size), readonly);
  }
  const py::object& object() const { return view_; }

  /// INTERNAL when the store kept the memory past the call: a buffer exported from the view, or a
  /// view derived from it (a slice, numpy.frombuffer) that release() alone would not revoke.
  Status giveBack(std::string_view store_name) {
    auto* view = reinterpret_cast<PyMemoryViewObject*>(view_.ptr());
    // CPython counts every memoryview sharing the lent memory on the managed buffer behind them.
    py::handle managed(reinterpret_cast<PyObject*>(view->mbuf));
    py::object keep = py::reinterpret_borrow<py::object>(managed);
    std::string kept;
    try {
      view_.attr("release")();
    } catch (py::error_already_set& err) {
      kept = py::str(err.value());
    }
    if (kept.empty() && reinterpret_cast<_PyManagedBufferObject*>(keep.ptr())->exports > 0) {
      kept = "a view derived from it is still alive";
    }
    if (kept.empty()) return Status::Ok();
    return Status::Internal("Python store '" + std::string(store_name) +
                            "' kept lent memory past the call; copy it (bytes(view)) to keep the data: " + kept);
  }

 private:
  py::object view_;
};

std::string typeName(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

std::string storeLabel(std::string_view store) { return "Python store '" + std::string(store) + "'"; }

Result<std::vector<uint8_t>> copyBytes(const py::handle& value, std::string_view key) {
  if (!PyObject_CheckBuffer(value.ptr())) {
    return Status::Internal("Python store get() returned " + typeName(value) + ", expected bytes-like or None")
        .withKey(std::string(key));
  }
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(value).request();
  if (!PyBuffer_IsContiguous(info.view(), 'C')) {
    return Status::Internal("Python store get() returned a non-contiguous buffer").withKey(std::string(key));
  }
  const auto* data = static_cast<const uint8_t*>(info.ptr);
  return std::vector<uint8_t>(data, data + info.size * info.itemsize);
}

// The error an exception instance that a store returned (instead of raising) stands for.
Status returnedException(py::handle item, std::string_view key) {
  return keyed(statusFromPythonException(item, kStoreErrorFallback), key);
}

// Malformed results carry no payload: only an exception may ever be chained as a cause.
Status malformed(std::string_view store, const std::string& what, std::string_view key) {
  return Status::Internal(storeLabel(store) + " " + what).withKey(std::string(key));
}

Result<size_t> sizeFromItem(std::string_view store, const py::handle& item, std::string_view key, size_t capacity) {
  if (item.is_none()) return Status::NotFound("no such key").withKey(std::string(key));
  if (PyExceptionInstance_Check(item.ptr())) return returnedException(item, key);
  // bool is an int in Python, but True is no byte count.
  if (!PyLong_Check(item.ptr()) || PyBool_Check(item.ptr())) {
    return malformed(store,
                     "returned " + typeName(item) + " for a read, expected the number of bytes, None or an exception",
                     key);
  }
  const long long size = PyLong_AsLongLong(item.ptr());
  if (size == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (size < 0 || static_cast<size_t>(size) > capacity) {
    return malformed(store, "reported " + std::to_string(size) + " bytes read into a " + std::to_string(capacity) +
                                "-byte buffer",
                     key);
  }
  return static_cast<size_t>(size);
}

// put(): None or True stored the value; False is the store saying it did not.
Status putOutcome(std::string_view store, std::string_view key, py::handle result) {
  if (result.is_none() || result.ptr() == Py_True) return Status::Ok();
  if (result.ptr() == Py_False) {
    return Status::IoError(storeLabel(store) + " put() returned False: the value was not stored")
        .withKey(std::string(key));
  }
  return malformed(store, "put() returned " + typeName(result) + ", expected None, True or False", key);
}

Result<std::vector<py::object>> batchItems(std::string_view store, const char* method, py::handle result,
                                           size_t count) {
  const std::string where = storeLabel(store) + " " + method + "()";
  if (!PySequence_Check(result.ptr())) {
    return Status::Internal(where + " returned " + typeName(result) + "; expected a list with one result per key");
  }
  const Py_ssize_t size = PySequence_Size(result.ptr());
  if (size < 0) throw py::error_already_set();
  if (static_cast<size_t>(size) != count) {
    return Status::Internal(where + " returned " + std::to_string(size) + " results for " + std::to_string(count) +
                            " keys");
  }
  std::vector<py::object> items;
  items.reserve(count);
  for (Py_ssize_t i = 0; i < size; ++i) {
    PyObject* item = PySequence_GetItem(result.ptr(), i);
    if (item == nullptr) throw py::error_already_set();
    items.push_back(py::reinterpret_steal<py::object>(item));
  }
  return items;
}

std::vector<Status> batchPutOutcomes(std::string_view store, const std::vector<std::string>& keys, py::handle result) {
  std::vector<Status> out(keys.size());
  if (result.is_none()) return out;
  Result<std::vector<py::object>> items = batchItems(store, "batch_put", result, keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!items.ok()) {
      out[i] = Status(items.status()).withKey(keys[i]);
      continue;
    }
    py::handle item = items.value()[i];
    if (item.is_none()) continue;
    if (item.ptr() == Py_False) {
      out[i] = Status::IoError(storeLabel(store) + " batch_put() returned False for this key: the value was not stored")
                   .withKey(keys[i]);
    } else if (PyExceptionInstance_Check(item.ptr())) {
      out[i] = returnedException(item, keys[i]);
    } else {
      out[i] = malformed(store,
                         "batch_put() returned " + typeName(item) + " for a key, expected None, False or an exception",
                         keys[i]);
    }
  }
  return out;
}

Result<bool> existsFromItem(std::string_view store, py::handle item, std::string_view key) {
  if (PyBool_Check(item.ptr())) return item.ptr() == Py_True;
  if (PyExceptionInstance_Check(item.ptr())) return returnedException(item, key);
  return malformed(store,
                   "batch_exists() returned " + typeName(item) + " for a key, expected True, False or an exception",
                   key);
}

// Lends every buffer for one batch call; `views` keeps them to be given back after it.
template <typename View>
py::list lendAll(const std::vector<View>& buffers, bool readonly, std::vector<LentView>* views) {
  views->reserve(buffers.size());
  py::list list;
  for (const auto& b : buffers) {
    views->emplace_back(b.data, b.size, readonly);
    list.append(views->back().object());
  }
  return list;
}

bool anyEmpty(const std::vector<std::string>& keys) {
  return std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return k.empty(); });
}

// Python truthiness; a raising __bool__ surfaces as error_already_set like any other Python error.
bool truthy(const py::handle& value) {
  const int result = PyObject_IsTrue(value.ptr());
  if (result < 0) throw py::error_already_set();
  return result != 0;
}

py::list keyList(const std::vector<std::string>& keys) {
  py::list out;
  for (const auto& k : keys) out.append(py::str(k));
  return out;
}

// put and batch_put can report a failure in their result instead of raising. Code written for the
// CacheStore interface (commit records, for one) calls store.batch_put(...) and expects a failure
// to raise, as it does on every native store; so a subclass's own method is moved to implName()
// and replaced by a wrapper that raises. The trampoline calls the subclass's method itself, for
// one result per key.
bool isChecked(std::string_view method) { return method == "put" || method == "batch_put"; }

std::string implName(std::string_view method) { return "_kvdump_impl_" + std::string(method); }

std::string storeName(py::handle self) { return py::cast<std::string>(self.attr("name")); }

py::cpp_function checkedPut(py::object impl, py::handle cls, py::object doc) {
  return py::cpp_function(
      [impl](py::object self, const std::string& key, py::object value) {
        py::object result = impl(self, key, value);
        check(putOutcome(storeName(self), key, result));
        return result;
      },
      py::name("put"), py::is_method(cls), py::arg("key"), py::arg("value"),
      py::doc(doc.is_none() ? "" : std::string(py::str(doc)).c_str()));
}

py::cpp_function checkedBatchPut(py::object impl, py::handle cls, py::object doc) {
  return py::cpp_function(
      [impl](py::object self, const std::vector<std::string>& keys, py::object values) {
        py::object result = impl(self, keyList(keys), values);
        for (const Status& status : batchPutOutcomes(storeName(self), keys, result)) check(status);
        return result;
      },
      py::name("batch_put"), py::is_method(cls), py::arg("keys"), py::arg("values"),
      py::doc(doc.is_none() ? "" : std::string(py::str(doc)).c_str()));
}

void wrapCheckedMethods(py::handle cls) {
  py::object own = cls.attr("__dict__");
  for (const char* method : {"put", "batch_put"}) {
    py::object impl = own.attr("get")(method);
    // Only plain functions: a staticmethod or a wrapper assigned from another class keeps reaching
    // the trampoline through get_override, as before.
    if (!PyFunction_Check(impl.ptr())) continue;
    py::setattr(cls, implName(method).c_str(), impl);
    py::object doc = impl.attr("__doc__");
    py::setattr(cls, method,
                std::string_view(method) == "put" ? checkedPut(impl, cls, doc) : checkedBatchPut(impl, cls, doc));
  }
}

// What a store call returns when the interpreter is exiting and Python may no longer be entered.
Status interpreterExiting(std::string_view key = {}) {
  return Status::Cancelled("not called: the Python interpreter is exiting").withKey(std::string(key));
}

}  // namespace

py::function PythonStoreTrampoline::override(const char* method) const {
  const auto* store = static_cast<const PythonStore*>(this);
  if (!isChecked(method)) return py::get_override(store, method);
  // Looked up by hand: get_override would take the checking wrapper (a C++ function) for "not
  // overridden" and remember that per type, hiding a method later set on the instance (the
  // bandwidth benchmark times batch_put that way).
  py::handle self = py::detail::get_object_handle(store, py::detail::get_type_info(typeid(PythonStore)));
  if (!self) return py::function();
  py::object found = py::getattr(self, method, py::none());
  if (found.is_none()) return py::function();
  if (!py::reinterpret_borrow<py::function>(found).is_cpp_function()) return py::reinterpret_borrow<py::function>(found);
  // The checking wrapper, or CacheStore's own binding when the subclass defines no such method.
  py::object impl = py::getattr(self, implName(method).c_str(), py::none());
  return impl.is_none() ? py::function() : py::reinterpret_borrow<py::function>(impl);
}

Status PythonStoreTrampoline::putLocked(std::string_view key, ByteView value) {
  py::function fn = override("put");
  if (!fn) return Status::Unsupported("Python store '" + name() + "' does not implement put()");
  LentView view(value.data, value.size, /*readonly=*/true);
  Status status;
  try {
    status = putOutcome(name(), key, fn(py::str(key.data(), key.size()), view.object()));
  } catch (py::error_already_set& err) {
    status = keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
  Status returned = view.giveBack(name());
  return status.ok() ? keyed(returned, key) : status;
}

Status PythonStoreTrampoline::put(std::string_view key, ByteView value) {
  if (key.empty()) return emptyKey();
  PythonCall call;
  if (!call) return interpreterExiting(key);
  py::gil_scoped_acquire gil;
  return putLocked(key, value);
}

Result<std::vector<uint8_t>> PythonStoreTrampoline::get(std::string_view key) {
  if (key.empty()) return emptyKey();
  PythonCall call;
  if (!call) return interpreterExiting(key);
  py::gil_scoped_acquire gil;
  py::function fn = override("get");
  if (!fn) return Status::Unsupported("Python store '" + name() + "' does not implement get()");
  try {
    py::object value = fn(py::str(key.data(), key.size()));
    if (value.is_none()) return Status::NotFound("no such key").withKey(std::string(key));
    return copyBytes(value, key);
  } catch (py::error_already_set& err) {
    return keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
}

Result<bool> PythonStoreTrampoline::existsLocked(std::string_view key) {
  py::function fn = override("exists");
  if (!fn) return Status::Unsupported("Python store '" + name() + "' does not implement exists()");
  try {
    return truthy(fn(py::str(key.data(), key.size())));
  } catch (py::error_already_set& err) {
    return keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
}

Result<bool> PythonStoreTrampoline::exists(std::string_view key) {
  if (key.empty()) return emptyKey();
  PythonCall call;
  if (!call) return interpreterExiting(key);
  py::gil_scoped_acquire gil;
  return existsLocked(key);
}

Status PythonStoreTrampoline::remove(std::string_view key) {
  if (key.empty()) return emptyKey();
  PythonCall call;
  if (!call) return interpreterExiting(key);
  py::gil_scoped_acquire gil;
  py::function fn = override("remove");
  if (!fn) return Status::Unsupported("Python store '" + name() + "' does not implement remove()");
  try {
    py::object removed = fn(py::str(key.data(), key.size()));
    if (!removed.is_none() && !truthy(removed)) {
      return Status::NotFound("no such key").withKey(std::string(key));
    }
    return Status::Ok();
  } catch (py::error_already_set& err) {
    return keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
}

Result<size_t> PythonStoreTrampoline::getIntoLocked(std::string_view key, MutableByteView dst) {
  py::function fn = override("get_into");
  if (!fn) {
    // Optional method: fall back to get() plus one copy.
    py::function get_fn = override("get");
    if (!get_fn) return Status::Unsupported("Python store '" + name() + "' does not implement get()");
    try {
      py::object value = get_fn(py::str(key.data(), key.size()));
      if (value.is_none()) return Status::NotFound("no such key").withKey(std::string(key));
      Result<std::vector<uint8_t>> bytes = copyBytes(value, key);
      if (!bytes.ok()) return bytes.status();
      const size_t size = bytes.value().size();
      if (size > dst.size) return bufferTooSmall(key, size, dst.size);
      if (size > 0) std::memcpy(dst.data, bytes.value().data(), size);
      return size;
    } catch (py::error_already_set& err) {
      return keyed(statusFromPythonError(err, kStoreErrorFallback), key);
    }
  }
  LentView view(dst.data, dst.size, /*readonly=*/false);
  Result<size_t> got = Status::Internal("unset");
  try {
    got = sizeFromItem(name(), fn(py::str(key.data(), key.size()), view.object()), key, dst.size);
  } catch (py::error_already_set& err) {
    got = keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
  Status returned = view.giveBack(name());
  if (got.ok() && !returned.ok()) return keyed(returned, key);
  return got;
}

Result<size_t> PythonStoreTrampoline::getInto(std::string_view key, MutableByteView dst) {
  if (key.empty()) return emptyKey();
  PythonCall call;
  if (!call) return interpreterExiting(key);
  py::gil_scoped_acquire gil;
  return getIntoLocked(key, dst);
}

std::vector<Status> PythonStoreTrampoline::batchPut(const std::vector<std::string>& keys,
                                                    const std::vector<ByteView>& values) {
  if (keys.size() != values.size()) {
    return std::vector<Status>(keys.size(), Status::InvalidArgument("batchPut: keys and values differ in length"));
  }
  std::vector<Status> out(keys.size());
  PythonCall call;
  if (!call) return std::vector<Status>(keys.size(), interpreterExiting());
  py::gil_scoped_acquire gil;  // once for the whole batch
  py::function fn = override("batch_put");
  if (!fn) {
    for (size_t i = 0; i < keys.size(); ++i) out[i] = keys[i].empty() ? emptyKey() : putLocked(keys[i], values[i]);
    return out;
  }
  if (anyEmpty(keys)) return std::vector<Status>(keys.size(), emptyKey());
  std::vector<LentView> views;
  py::list view_list = lendAll(values, /*readonly=*/true, &views);
  try {
    out = batchPutOutcomes(name(), keys, fn(keyList(keys), view_list));
  } catch (py::error_already_set& err) {
    out.assign(keys.size(), statusFromPythonError(err, kStoreErrorFallback));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    Status returned = views[i].giveBack(name());
    if (out[i].ok()) out[i] = returned;
    out[i] = keyed(out[i], keys[i]);
  }
  return out;
}

std::vector<Result<size_t>> PythonStoreTrampoline::batchGetInto(const std::vector<std::string>& keys,
                                                                const std::vector<MutableByteView>& dsts) {
  if (keys.size() != dsts.size()) {
    return std::vector<Result<size_t>>(keys.size(),
                                       Status::InvalidArgument("batchGetInto: keys and buffers differ in length"));
  }
  std::vector<Result<size_t>> out(keys.size(), Status::Internal("unset"));
  PythonCall call;
  if (!call) return std::vector<Result<size_t>>(keys.size(), interpreterExiting());
  py::gil_scoped_acquire gil;
  py::function fn = override("batch_get_into");
  if (!fn) {
    for (size_t i = 0; i < keys.size(); ++i) out[i] = keys[i].empty() ? emptyKey() : getIntoLocked(keys[i], dsts[i]);
    return out;
  }
  if (anyEmpty(keys)) return std::vector<Result<size_t>>(keys.size(), emptyKey());
  std::vector<LentView> views;
  py::list view_list = lendAll(dsts, /*readonly=*/false, &views);
  try {
    auto items = batchItems(name(), "batch_get_into", fn(keyList(keys), view_list), keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i] = items.ok() ? sizeFromItem(name(), items.value()[i], keys[i], dsts[i].size) : items.status();
    }
  } catch (py::error_already_set& err) {
    out.assign(keys.size(), statusFromPythonError(err, kStoreErrorFallback));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    Status returned = views[i].giveBack(name());
    if (out[i].ok() && !returned.ok()) out[i] = returned;
    if (!out[i].ok()) out[i] = keyed(out[i].status(), keys[i]);
  }
  return out;
}

std::vector<Result<bool>> PythonStoreTrampoline::batchExists(const std::vector<std::string>& keys) {
  std::vector<Result<bool>> out(keys.size(), Status::Internal("unset"));
  PythonCall call;
  if (!call) return std::vector<Result<bool>>(keys.size(), interpreterExiting());
  py::gil_scoped_acquire gil;
  py::function fn = override("batch_exists");
  if (!fn) {
    for (size_t i = 0; i < keys.size(); ++i) out[i] = keys[i].empty() ? Result<bool>(emptyKey()) : existsLocked(keys[i]);
    return out;
  }
  if (anyEmpty(keys)) return std::vector<Result<bool>>(keys.size(), emptyKey());
  try {
    auto items = batchItems(name(), "batch_exists", fn(keyList(keys)), keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i] = items.ok() ? existsFromItem(name(), items.value()[i], keys[i]) : items.status();
    }
  } catch (py::error_already_set& err) {
    out.assign(keys.size(), statusFromPythonError(err, kStoreErrorFallback));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!out[i].ok()) out[i] = keyed(out[i].status(), keys[i]);
  }
  return out;
}

Status PythonStoreTrampoline::registerBuffer(uint8_t* data, size_t size) {
  PythonCall call;
  if (!call) return interpreterExiting();
  py::gil_scoped_acquire gil;
  py::function fn = override("register_buffer");
  if (!fn) return Status::Ok();
  try {
    fn(reinterpret_cast<uintptr_t>(data), size);
    return Status::Ok();
  } catch (py::error_already_set& err) {
    return statusFromPythonError(err, kStoreErrorFallback);
  }
}

Status PythonStoreTrampoline::unregisterBuffer(uint8_t* data) {
  PythonCall call;
  if (!call) return Status::Ok();
  py::gil_scoped_acquire gil;
  py::function fn = override("unregister_buffer");
  if (!fn) return Status::Ok();
  try {
    fn(reinterpret_cast<uintptr_t>(data));
    return Status::Ok();
  } catch (py::error_already_set& err) {
    return statusFromPythonError(err, kStoreErrorFallback);
  }
}

void PythonStoreTrampoline::discard(const std::vector<std::string>& keys) {
  PythonCall call;
  if (!call) return;
  py::gil_scoped_acquire gil;
  py::function fn = override("discard");
  if (!fn) return;
  try {
    fn(keyList(keys));
  } catch (py::error_already_set& err) {
    // Advice, as on every store: a failed discard leaves space unreclaimed, never data wrong. The
    // writer has no caller to give it to, so it is written where a Python failure normally goes.
    err.discard_as_unraisable(py::str("kvdump: discard() of Python store '" + name() + "'"));
  }
}

void bindPythonStore(py::module_& m) {
  auto cls = py::classh<PythonStore, CacheStore, PythonStoreTrampoline>(m, "PythonStore", R"doc(
Base class of a cache store written in Python; the writer's worker threads call it, taking the GIL
only while one of its methods runs. Call ``super().__init__(name)``, then implement:

- ``put(key: str, value: memoryview) -> None | bool`` (overwrites): None or True when stored,
  False when not (a failed put, reported as an I/O error naming the key),
- ``get(key: str) -> bytes-like | None`` (None when absent),
- ``exists(key: str) -> bool``, ``remove(key: str) -> bool`` (False when absent).

Optional, for fewer round trips or zero-copy transports:

- ``batch_put(keys, values) -> None | list[None | False | Exception]``: None when all were stored,
  or one item per key: None (stored), False (not stored, as from put) or an exception instance
  (that key's error, e.g. ``StoreFullError``),
- ``get_into(key, buffer: memoryview) -> int | None`` and
  ``batch_get_into(keys, buffers) -> list[int | None | Exception]`` (bytes written, None when absent),
- ``batch_exists(keys) -> list[bool | Exception]``,
- ``register_buffer(address: int, size: int)`` / ``unregister_buffer(address: int)``: the writer's
  staging buffers, announced before any value is lent from them,
- ``discard(keys: list[str]) -> None``: advice that the blocks under ``keys`` will never be committed
  (their request failed or their cycle was aborted); a store that evicts may reclaim them first, and
  a store that wraps another should pass it on. It must return promptly: ``abort()`` and ``close()``
  call it on their own thread. An exception it raises is reported as unraisable.

Any other result (True or 1 in a batch, a number from put, a batch result that is not one item per
key) is a bug in the store: every key concerned fails with an INTERNAL error naming the store and
the type it returned.

Called from Python, a subclass's ``put`` and ``batch_put`` raise the first failure their result
reports, as the same call on any other store does, and otherwise return that result; the writer's
workers still get one result per key.

Values and buffers are lent memoryviews, valid only during the call: copy what you keep. Raise a
``kvdump`` error (e.g. ``StoreFullError``, ``KeyNotFoundError``) to report its code; any other
exception is reported as an I/O error.)doc");
  cls.def(py::init<std::string>(), py::arg("name"));

  py::handle base = cls;  // the class lives as long as the module
  py::cpp_function hook(
      [base](py::handle subclass, py::kwargs kwargs) {
        py::module_::import("builtins").attr("super")(base, subclass).attr("__init_subclass__")(**kwargs);
        wrapCheckedMethods(subclass);
      },
      py::name("__init_subclass__"));
  cls.attr("__init_subclass__") = py::reinterpret_steal<py::object>(PyClassMethod_New(hook.ptr()));

  m.def(
      "buffer_address",
      [](const py::buffer& buffer) {
        py::buffer_info info = buffer.request();
        return reinterpret_cast<uintptr_t>(info.ptr);
      },
      py::arg("buffer"),
      "The address of a buffer's first byte (e.g. a lent memoryview), for zero-copy transports that take "
      "raw addresses. Valid only while the buffer is.");
}

}  // namespace kvdump::python
