#include "kvdump_ops/python_signals.h"

#include <Python.h>

namespace kvdump {

bool pythonSignalRaised() {
  const PyGILState_STATE gil = PyGILState_Ensure();
  const bool raised = PyErr_CheckSignals() != 0;
  PyGILState_Release(gil);
  return raised;
}

}  // namespace kvdump
