// How the torch ops report a Status: a c10 error whose message starts with "[kvdump:CODE key=...]",
// which is all torch passes on to Python, and which also carries the Status itself, for kvdump's
// own entry points to raise the typed exception from without reading the message.
#pragma once

#include "kvdump/status.h"

namespace kvdump {

/// The Status a thrown c10 error carries (every error throwStatus throws is one). Immutable.
class StatusCarrier {
 public:
  explicit StatusCarrier(Status status) : status_(std::move(status)) {}
  virtual ~StatusCarrier() = default;
  const Status& status() const { return status_; }

 private:
  Status status_;
};

/// Throws `status` (not OK): c10::ValueError for INVALID_ARGUMENT/TOO_LARGE, c10::Error otherwise
/// (types are checked in Python, so never c10::TypeError). Out of line and cold, so the checks that
/// call throwIfError stay small on the caller's hot path.
[[noreturn, gnu::cold]] void throwStatus(const Status& status);

/// Throws `status` as throwStatus does; does nothing for OK.
inline void throwIfError(const Status& status) {
  if (__builtin_expect(!status.ok(), 0)) throwStatus(status);
}

}  // namespace kvdump
