#include "python_store.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "python_exception_status.h"
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

Result<std::vector<uint8_t>> copyBytes(const py::handle& value, std::string_view key) {
  if (!PyObject_CheckBuffer(value.ptr())) {
    return Status::Internal("Python store get() returned " + std::string(py::str(py::type::handle_of(value).attr("__name__"))) +
                            ", expected bytes-like or None").withKey(std::string(key));
  }
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(value).request();
  if (!PyBuffer_IsContiguous(info.view(), 'C')) {
    return Status::Internal("Python store get() returned a non-contiguous buffer").withKey(std::string(key));
  }
  const auto* data = static_cast<const uint8_t*>(info.ptr);
  return std::vector<uint8_t>(data, data + info.size * info.itemsize);
}

Result<size_t> sizeFromItem(const py::handle& item, std::string_view key, size_t capacity) {
  if (item.is_none()) return Status::NotFound("no such key").withKey(std::string(key));
  if (PyExceptionInstance_Check(item.ptr())) {
    return keyed(statusFromPythonException(item, kStoreErrorFallback), key);
  }
  if (!PyLong_Check(item.ptr())) {
    return Status::Internal("Python store returned " + std::string(py::str(py::type::handle_of(item).attr("__name__"))) +
                            " for a read, expected the number of bytes, None or an exception")
        .withKey(std::string(key));
  }
  const long long size = PyLong_AsLongLong(item.ptr());
  if (size == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (size < 0 || static_cast<size_t>(size) > capacity) {
    return Status::Internal("Python store reported " + std::to_string(size) + " bytes read into a " +
                            std::to_string(capacity) + "-byte buffer").withKey(std::string(key));
  }
  return static_cast<size_t>(size);
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

}  // namespace

py::function PythonStoreTrampoline::override(const char* method) const {
  return py::get_override(static_cast<const PythonStore*>(this), method);
}

Status PythonStoreTrampoline::putLocked(std::string_view key, ByteView value) {
  py::function fn = override("put");
  if (!fn) return Status::Unsupported("Python store '" + name() + "' does not implement put()");
  LentView view(value.data, value.size, /*readonly=*/true);
  Status status;
  try {
    fn(py::str(key.data(), key.size()), view.object());
  } catch (py::error_already_set& err) {
    status = keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
  Status returned = view.giveBack(name());
  return status.ok() ? keyed(returned, key) : status;
}

Status PythonStoreTrampoline::put(std::string_view key, ByteView value) {
  if (key.empty()) return emptyKey();
  py::gil_scoped_acquire gil;
  return putLocked(key, value);
}

Result<std::vector<uint8_t>> PythonStoreTrampoline::get(std::string_view key) {
  if (key.empty()) return emptyKey();
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
  py::gil_scoped_acquire gil;
  return existsLocked(key);
}

Status PythonStoreTrampoline::remove(std::string_view key) {
  if (key.empty()) return emptyKey();
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
    got = sizeFromItem(fn(py::str(key.data(), key.size()), view.object()), key, dst.size);
  } catch (py::error_already_set& err) {
    got = keyed(statusFromPythonError(err, kStoreErrorFallback), key);
  }
  Status returned = view.giveBack(name());
  if (got.ok() && !returned.ok()) return keyed(returned, key);
  return got;
}

Result<size_t> PythonStoreTrampoline::getInto(std::string_view key, MutableByteView dst) {
  if (key.empty()) return emptyKey();
  py::gil_scoped_acquire gil;
  return getIntoLocked(key, dst);
}

std::vector<Status> PythonStoreTrampoline::batchPut(const std::vector<std::string>& keys,
                                                    const std::vector<ByteView>& values) {
  if (keys.size() != values.size()) {
    return std::vector<Status>(keys.size(), Status::InvalidArgument("batchPut: keys and values differ in length"));
  }
  std::vector<Status> out(keys.size());
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
    py::object result = fn(keyList(keys), view_list);
    if (!result.is_none()) {
      auto items = py::reinterpret_borrow<py::sequence>(result);
      if (static_cast<size_t>(py::len(items)) != keys.size()) {
        out.assign(keys.size(), Status::Internal("Python store batch_put returned " + std::to_string(py::len(items)) +
                                                 " results for " + std::to_string(keys.size()) + " keys"));
      } else {
        for (size_t i = 0; i < keys.size(); ++i) {
          py::handle item = items[i];
          if (!item.is_none()) out[i] = statusFromPythonException(item, kStoreErrorFallback);
        }
      }
    }
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
    auto items = py::reinterpret_borrow<py::sequence>(fn(keyList(keys), view_list));
    if (static_cast<size_t>(py::len(items)) != keys.size()) {
      out.assign(keys.size(), Status::Internal("Python store batch_get_into returned " +
                                               std::to_string(py::len(items)) + " results for " +
                                               std::to_string(keys.size()) + " keys"));
    } else {
      for (size_t i = 0; i < keys.size(); ++i) out[i] = sizeFromItem(items[i], keys[i], dsts[i].size);
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
  py::gil_scoped_acquire gil;
  py::function fn = override("batch_exists");
  if (!fn) {
    for (size_t i = 0; i < keys.size(); ++i) out[i] = keys[i].empty() ? Result<bool>(emptyKey()) : existsLocked(keys[i]);
    return out;
  }
  if (anyEmpty(keys)) return std::vector<Result<bool>>(keys.size(), emptyKey());
  try {
    auto items = py::reinterpret_borrow<py::sequence>(fn(keyList(keys)));
    if (static_cast<size_t>(py::len(items)) != keys.size()) {
      out.assign(keys.size(), Status::Internal("Python store batch_exists returned the wrong number of results"));
    } else {
      for (size_t i = 0; i < keys.size(); ++i) out[i] = truthy(items[i]);
    }
  } catch (py::error_already_set& err) {
    out.assign(keys.size(), statusFromPythonError(err, kStoreErrorFallback));
  }
  return out;
}

Status PythonStoreTrampoline::registerBuffer(uint8_t* data, size_t size) {
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

void bindPythonStore(py::module_& m) {
  py::classh<PythonStore, CacheStore, PythonStoreTrampoline>(m, "PythonStore", R"doc(
Base class of a cache store written in Python; the writer's worker threads call it, taking the GIL
only while one of its methods runs. Call ``super().__init__(name)``, then implement:

- ``put(key: str, value: memoryview) -> None`` (overwrites),
- ``get(key: str) -> bytes-like | None`` (None when absent),
- ``exists(key: str) -> bool``, ``remove(key: str) -> bool`` (False when absent).

Optional, for fewer round trips or zero-copy transports:

- ``batch_put(keys, values) -> None | list[None | Exception]``,
- ``get_into(key, buffer: memoryview) -> int | None`` and
  ``batch_get_into(keys, buffers) -> list[int | None | Exception]`` (bytes written, None when absent),
- ``batch_exists(keys) -> list[bool]``,
- ``register_buffer(address: int, size: int)`` / ``unregister_buffer(address: int)``: the writer's
  staging buffers, announced before any value is lent from them.

Values and buffers are lent memoryviews, valid only during the call: copy what you keep. Raise a
``kvdump`` error (e.g. ``StoreFullError``, ``KeyNotFoundError``) to report its code; any other
exception is reported as an I/O error.)doc")
      .def(py::init<std::string>(), py::arg("name"));

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
