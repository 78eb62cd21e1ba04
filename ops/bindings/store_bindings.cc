// Python binding of the CacheStore interface and the native stores. Store calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>

#include "arguments.h"
#include "kvdump/cache_store.h"
#include "kvdump/stores/delayed_store.h"
#include "kvdump/stores/file_store.h"
#include "kvdump/stores/memory_store.h"
#include "kvdump_ops/host_allocator.h"
#include "python_store.h"
#include "status_to_python.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

void put(CacheStore& store, const std::string& key, const py::buffer& data) {
  py::buffer_info info = data.request();
  if (!PyBuffer_IsContiguous(info.view(), 'C')) {
    throwStatus(Status::InvalidArgument("data must be a C-contiguous buffer").withKey(key));
  }
  const ByteView view{static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size * info.itemsize)};
  Status status;
  {
    py::gil_scoped_release release;  // `info` keeps the buffer alive and pinned meanwhile
    status = store.put(key, view);
  }
  check(status);
}

py::object get(CacheStore& store, const std::string& key) {
  Result<std::vector<uint8_t>> value = Status::Internal("unset");
  {
    py::gil_scoped_release release;
    value = store.get(key);
  }
  if (!value.ok()) {
    if (value.status().code() == StatusCode::kNotFound) return py::none();
    throwStatus(value.status());
  }
  const auto& bytes = value.value();
  return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void batchPut(CacheStore& store, const std::vector<std::string>& keys, const std::vector<py::bytes>& values) {
  if (keys.size() != values.size()) {
    throwStatus(Status::InvalidArgument("batch_put: " + std::to_string(keys.size()) + " keys but " +
                                        std::to_string(values.size()) + " values"));
  }
  std::vector<ByteView> views;
  views.reserve(values.size());
  for (const auto& v : values) {
    char* data = nullptr;
    Py_ssize_t size = 0;
    PyBytes_AsStringAndSize(v.ptr(), &data, &size);
    views.push_back({reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(size)});
  }
  std::vector<Status> statuses;
  {
    py::gil_scoped_release release;  // `values` keeps the bytes alive meanwhile
    statuses = store.batchPut(keys, views);
  }
  for (size_t i = 0; i < statuses.size(); ++i) {
    if (!statuses[i].ok()) {
      Status s = statuses[i];
      if (s.key().empty()) s.withKey(keys[i]);
      throwStatus(s);
    }
  }
}

size_t getInto(CacheStore& store, const std::string& key, const py::buffer& buffer) {
  py::buffer_info info = buffer.request(/*writable=*/true);
  if (!PyBuffer_IsContiguous(info.view(), 'C')) {
    throwStatus(Status::InvalidArgument("buffer must be C-contiguous").withKey(key));
  }
  const MutableByteView dst{static_cast<uint8_t*>(info.ptr), static_cast<size_t>(info.size * info.itemsize)};
  Result<size_t> got = Status::Internal("unset");
  {
    py::gil_scoped_release release;  // `info` keeps the buffer alive and pinned meanwhile
    got = store.getInto(key, dst);
  }
  check(got.status());
  return got.value();
}

std::vector<bool> batchExists(CacheStore& store, const std::vector<std::string>& keys) {
  std::vector<Result<bool>> found;
  {
    py::gil_scoped_release release;
    found = store.batchExists(keys);
  }
  std::vector<bool> out;
  out.reserve(found.size());
  for (auto& f : found) {
    check(f.status());
    out.push_back(f.value());
  }
  return out;
}

bool exists(CacheStore& store, const std::string& key) {
  Result<bool> found = Status::Internal("unset");
  {
    py::gil_scoped_release release;
    found = store.exists(key);
  }
  check(found.status());
  return found.value();
}

void discard(CacheStore& store, const std::vector<std::string>& keys) {
  py::gil_scoped_release release;
  store.discard(keys);
}

bool remove(CacheStore& store, const std::string& key) {
  Status status;
  {
    py::gil_scoped_release release;
    status = store.remove(key);
  }
  if (status.code() == StatusCode::kNotFound) return false;
  check(status);
  return true;
}

}  // namespace

void bindStores(py::module_& m) {
  // smart_holder throughout: a store written in Python (PythonStore) stays alive while C++ holds it.
  py::classh<CacheStore>(m, "CacheStore",
                         "The interface every kvdump store implements (thread-safe). Calling these methods "
                         "on the class (kvdump.CacheStore.put(store, ...)) goes through the C++ interface, "
                         "exactly as the writer's workers do.")
      .def_property_readonly("name", &CacheStore::name)
      .def("put", &put, py::arg("key"), py::arg("data"), "Store bytes under key (overwrites).")
      .def("get", &get, py::arg("key"), "The bytes under key, or None when absent.")
      .def("batch_put", &batchPut, py::arg("keys"), py::arg("values"),
           "Store many values in one call (one round trip for stores with a native batch path); raises the "
           "first failure.")
      .def("get_into", &getInto, py::arg("key"), py::arg("buffer"),
           "Copy the value under key into a writable buffer and return its size; KeyNotFoundError when absent, "
           "KvdumpValueError (TOO_LARGE) when the buffer is too small.")
      .def("exists", &exists, py::arg("key"))
      .def("batch_exists", &batchExists, py::arg("keys"), "exists() for many keys in one call.")
      .def("remove", &remove, py::arg("key"), "Remove key; False when it was absent.")
      .def("discard", &discard, py::arg("keys"),
           "Advice from a writer: the blocks under keys will never be committed (their request failed or "
           "their cycle was aborted), so an evicting store may reclaim them first. Missing keys are ignored; "
           "stores that do not evict ignore the call.");

  py::classh<MemoryStore, CacheStore>(
      m, "MemoryStore",
      "In-process store over one arena of capacity_bytes, allocated (pinned when an accelerator is present) "
      "and touched when the store is made. eviction='evict' (default) evicts least-recently-used committed "
      "blocks, a block's layers and commit record together, when a put would pass high_watermark * capacity, "
      "down to low_watermark * capacity; eviction='refuse' keeps every committed block and fails the put with "
      "StoreFullError. Either way, blocks of failed or aborted cycles are reclaimed first, and a block under "
      "a read or in a cycle not yet committed is never evicted.")
      .def(py::init([](py::handle capacity_bytes, py::handle eviction_policy, py::handle high_watermark,
                       py::handle low_watermark, py::handle slab_bytes, py::handle pin_memory_arg) {
             // Taken as Python objects so a bad value is a typed error naming it, not an overload list.
             MemoryStoreOptions o;
             o.capacity_bytes = static_cast<size_t>(integerArgument(capacity_bytes, "capacity_bytes", 0, int64_t{1} << 62));
             const std::string eviction = textArgument(eviction_policy, "eviction");
             const std::string pin_memory = textArgument(pin_memory_arg, "pin_memory");
             if (eviction == "evict") {
               o.eviction = EvictionPolicy::kEvict;
             } else if (eviction == "refuse") {
               o.eviction = EvictionPolicy::kRefuse;
             } else {
               throwStatus(Status::InvalidArgument("eviction must be 'evict' or 'refuse', got '" + eviction + "'"));
             }
             o.high_watermark = numberArgument(high_watermark, "high_watermark");
             o.low_watermark = numberArgument(low_watermark, "low_watermark");
             o.slab_bytes = static_cast<size_t>(integerArgument(slab_bytes, "slab_bytes", 0, int64_t{1} << 30));
             if (pin_memory != "auto" && pin_memory != "no") {
               Result<HostAllocator> pinned = hostAllocatorFor(pin_memory, "pin_memory");
               check(pinned.status());
               if (pin_memory != "cpu") o.allocator = pinned.value();
             } else if (pin_memory == "auto") {
               o.allocator = acceleratorHostAllocator();  // empty without an accelerator: pageable memory
             }
             Result<std::shared_ptr<MemoryStore>> store = Status::Internal("unset");
             {
               py::gil_scoped_release release;  // touching a large arena takes a while
               store = MemoryStore::create(std::move(o));
             }
             check(store.status());
             return store.value();
           }),
           py::arg("capacity_bytes") = py::int_(size_t{1} << 30), py::kw_only(), py::arg("eviction") = "evict",
           py::arg("high_watermark") = 0.9, py::arg("low_watermark") = 0.8, py::arg("slab_bytes") = py::int_(0),
           py::arg("pin_memory") = "auto")
      .def("stats", [](const MemoryStore& s) {
        MemoryStoreStats st = s.stats();
        py::dict d;
        d["capacity_bytes"] = st.capacity_bytes;
        d["used_bytes"] = st.used_bytes;
        d["entries"] = st.entries;
        d["hits"] = st.hits;
        d["misses"] = st.misses;
        d["evictions"] = st.evictions;
        d["reclaimed"] = st.reclaimed;
        d["leased"] = st.leased;
        d["lent"] = st.lent;
        d["rejected_full"] = st.rejected_full;
        d["slab_bytes"] = st.slab_bytes;
        d["eviction"] = evictionPolicyName(st.eviction);
        d["high_watermark"] = st.high_watermark;
        d["low_watermark"] = st.low_watermark;
        return d;
      }, "Counters: capacity_bytes, used_bytes, entries, hits, misses, evictions, reclaimed, leased, lent, "
         "rejected_full, slab_bytes, and the policy (eviction, high_watermark, low_watermark).");

  py::classh<FileStore, CacheStore>(
      m, "FileStore",
      "One file per key under root (local or shared filesystem). Writes go to a temporary file and are "
      "renamed into place, so readers in any process never see a partial value.")
      .def(py::init([](py::handle root, py::handle fsync) {
             auto store = FileStore::open(pathArgument(root, "root"), FileStoreOptions{flagArgument(fsync, "fsync")});
             check(store.status());
             return store.value();
           }),
           py::arg("root"), py::arg("fsync") = false)
      .def_property_readonly("root", &FileStore::root)
      .def(
          "remove_orphan_temporaries",
          [](FileStore& store) {
            Result<size_t> removed = Status::Internal("unset");
            {
              py::gil_scoped_release release;
              removed = store.removeOrphanTemporaries();
            }
            check(removed.status());
            return removed.value();
          },
          "Delete temporaries left by dead writers (also done when the store is opened); returns how many.");

  py::classh<DelayedStore, CacheStore>(
      m, "DelayedStore",
      "Wraps a native store and sleeps put_delay seconds per put call (one per batch, after the bytes are "
      "handed over, as a network store waits for its acknowledgment) and get_delay per get call (before "
      "the copy): a stand-in for a remote store's round trip in benchmarks and tests.")
      .def(py::init([](py::handle inner, py::handle put_delay, py::handle get_delay) {
             if (!py::isinstance<CacheStore>(inner)) {
               throwTypeError("inner must be a kvdump store, got " +
                              std::string(py::str(py::type::handle_of(inner).attr("__name__"))));
             }
             return std::make_shared<DelayedStore>(inner.cast<std::shared_ptr<CacheStore>>(),
                                                   durationArgument(put_delay, "put_delay"),
                                                   durationArgument(get_delay, "get_delay"));
           }),
           py::arg("inner"), py::arg("put_delay") = 0.0, py::arg("get_delay") = 0.0);

  bindPythonStore(m);
}

}  // namespace kvdump::python
