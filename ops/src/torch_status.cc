#include "torch_status.h"

#include <c10/util/Exception.h>

namespace kvdump {

void throwStatus(const Status& status) {
  std::string message = std::string("[kvdump:") + statusCodeName(status.code());
  if (!status.key().empty()) message += " key=" + status.key();
  message += "] " + status.message();
  if (status.code() == StatusCode::kInvalidArgument || status.code() == StatusCode::kTooLarge) {
    TORCH_CHECK_VALUE(false, message);
  }
  TORCH_CHECK(false, message);
}

}  // namespace kvdump
