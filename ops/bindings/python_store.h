// kvdump.PythonStore: the base class a store written in Python subclasses.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "kvdump/cache_store.h"

namespace kvdump::python {

/// A CacheStore whose operations are methods of a Python subclass. Holds only its name; the
/// subclass holds everything else. Thread-safe as far as the Python methods are: each C++ call takes
/// the GIL only while one Python method runs.
class PythonStore : public CacheStore {
 public:
  explicit PythonStore(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }

 private:
  std::string name_;
};

/// The pybind11 trampoline behind PythonStore: forwards each CacheStore call to the Python method of
/// the same meaning (put, get, exists, remove, and the optional get_into, batch_put, batch_get_into,
/// batch_exists, register_buffer, unregister_buffer, discard). Values are lent as memoryviews that are
/// released when the method returns. Python exceptions become Statuses, never C++ exceptions.
/// Owned by its Python object, which stays alive while C++ holds a shared_ptr to it.
class PythonStoreTrampoline : public PythonStore, public pybind11::trampoline_self_life_support {
 public:
  using PythonStore::PythonStore;

  Status put(std::string_view key, ByteView value) override;
  Result<std::vector<uint8_t>> get(std::string_view key) override;
  Result<bool> exists(std::string_view key) override;
  Status remove(std::string_view key) override;
  Result<size_t> getInto(std::string_view key, MutableByteView dst) override;
  std::vector<Status> batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) override;
  std::vector<Result<size_t>> batchGetInto(const std::vector<std::string>& keys,
                                           const std::vector<MutableByteView>& dsts) override;
  std::vector<Result<bool>> batchExists(const std::vector<std::string>& keys) override;
  Status registerBuffer(uint8_t* data, size_t size) override;
  Status unregisterBuffer(uint8_t* data) override;
  void discard(const std::vector<std::string>& keys) override;

 private:
  pybind11::function override(const char* method) const;
  Status putLocked(std::string_view key, ByteView value);
  Result<size_t> getIntoLocked(std::string_view key, MutableByteView dst);
  Result<bool> existsLocked(std::string_view key);
};

/// Binds PythonStore (as kvdump._C.PythonStore) and the buffer_address helper.
void bindPythonStore(pybind11::module_& m);

}  // namespace kvdump::python
