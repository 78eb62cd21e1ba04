#include "kvdump/task.h"

namespace kvdump {

std::string TaskLabel::text() const {
  if (!label.empty()) return label;
  std::string s = kind ? kind : "task";
  if (layer >= 0) s += " layer " + std::to_string(layer);
  if (!request.empty()) s += " of request " + request;
  return s;
}

}  // namespace kvdump
