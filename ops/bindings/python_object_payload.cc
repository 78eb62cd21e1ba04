#include "python_object_payload.h"

#include "python_exit_guard.h"

namespace py = pybind11;

namespace kvdump::python {
namespace {

// Payloads made here carry this tag next to the object, so a payload attached by some other layer
// is never mistaken for a Python object.
struct TaggedObject {
  static constexpr uint64_t kTag = 0x6b76647570707921ULL;
  uint64_t tag = kTag;
  py::object obj;
};

void dropWithGil(py::object* obj) {
  PythonCall call;
  if (!call) {
    obj->release();  // the interpreter is going away; touching the refcount now could crash
    return;
  }
  py::gil_scoped_acquire gil;
  *obj = py::object();
}

}  // namespace

std::shared_ptr<py::object> shareAcrossThreads(py::object obj) {
  return std::shared_ptr<py::object>(new py::object(std::move(obj)), [](py::object* p) {
    dropWithGil(p);
    delete p;
  });
}

Status withPythonObject(Status status, py::object obj) {
  auto tagged = std::shared_ptr<TaggedObject>(new TaggedObject{TaggedObject::kTag, std::move(obj)},
                                              [](TaggedObject* t) {
                                                dropWithGil(&t->obj);
                                                delete t;
                                              });
  return std::move(status).withPayload(std::static_pointer_cast<void>(tagged));
}

py::object* pythonObjectOf(const Status& status) {
  auto* tagged = static_cast<TaggedObject*>(status.payload().get());
  if (tagged == nullptr || tagged->tag != TaggedObject::kTag) return nullptr;
  return &tagged->obj;
}

}  // namespace kvdump::python
