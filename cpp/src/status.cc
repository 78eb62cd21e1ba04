#include "kvdump/status.h"

namespace kvdump {

const char* statusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kLifecycle: return "LIFECYCLE";
    case StatusCode::kTimeout: return "TIMEOUT";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kStoreFull: return "STORE_FULL";
    case StatusCode::kIoError: return "IO_ERROR";
    case StatusCode::kChecksumMismatch: return "CHECKSUM_MISMATCH";
    case StatusCode::kUnsupported: return "UNSUPPORTED";
    case StatusCode::kTaskFailed: return "TASK_FAILED";
    case StatusCode::kLeaseHeld: return "LEASE_HELD";
    case StatusCode::kTooLarge: return "TOO_LARGE";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kKeySpaceMismatch: return "KEY_SPACE_MISMATCH";
  }
  return "UNKNOWN";
}

std::string Status::toString() const {
  std::string out = statusCodeName(code_);
  if (!message_.empty()) out += ": " + message_;
  if (!key_.empty()) out += " [key=" + key_ + "]";
  return out;
}

}  // namespace kvdump
