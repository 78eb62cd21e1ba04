// Status: the error currency of the kvdump core. Codes are stable: never renumber, only append.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace kvdump {

/// Stable error codes shared by C++, the Python bindings and every store; values never change.
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,
  kLifecycle = 2,
  kTimeout = 3,
  kCancelled = 4,
  kNotFound = 5,
  kStoreFull = 6,
  kIoError = 7,
  kChecksumMismatch = 8,
  kUnsupported = 9,
  kTaskFailed = 10,
  kLeaseHeld = 11,
  kTooLarge = 12,
  kInternal = 13,
  kKeySpaceMismatch = 14,
};

/// The highest code in use; codes above it come from a newer peer and read as INTERNAL.
constexpr StatusCode kLastStatusCode = StatusCode::kKeySpaceMismatch;

/// Upper-case name of a code ("STORE_FULL"); returns a static string, thread-safe.
const char* statusCodeName(StatusCode code);

/// An immutable-by-convention value describing success or one failure; copyable, not synchronised.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  // Cold: a call to one marks its branch unlikely, so the compiler moves the message building out
  // of the hot path of the checks on a caller's thread (write_cache_store's validation).
  [[gnu::cold]] static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  [[gnu::cold]] static Status Lifecycle(std::string m) { return {StatusCode::kLifecycle, std::move(m)}; }
  static Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status StoreFull(std::string m) { return {StatusCode::kStoreFull, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status ChecksumMismatch(std::string m) { return {StatusCode::kChecksumMismatch, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status TaskFailed(std::string m) { return {StatusCode::kTaskFailed, std::move(m)}; }
  static Status LeaseHeld(std::string m) { return {StatusCode::kLeaseHeld, std::move(m)}; }
  static Status TooLarge(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
  [[gnu::cold]] static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status KeySpaceMismatch(std::string m) { return {StatusCode::kKeySpaceMismatch, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  /// The store key this failure concerns, if any (empty otherwise).
  const std::string& key() const { return key_; }
  Status& withKey(std::string key) & {
    key_ = std::move(key);
    return *this;
  }
  Status&& withKey(std::string key) && {
    key_ = std::move(key);
    return std::move(*this);
  }

  /// Opaque object attached by a binding layer (e.g. the original Python exception); the core never
  /// inspects it. Shared ownership; the payload's deleter must be safe to run on any thread.
  const std::shared_ptr<void>& payload() const { return payload_; }
  Status& withPayload(std::shared_ptr<void> payload) & {
    payload_ = std::move(payload);
    return *this;
  }
  Status&& withPayload(std::shared_ptr<void> payload) && {
    payload_ = std::move(payload);
    return std::move(*this);
  }

  /// "STORE_FULL: message [key=...]".
  std::string toString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string key_;
  std::shared_ptr<void> payload_;
};

/// A value or the Status explaining why there is none; copyable, not synchronised.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design, like absl::StatusOr
  Result(Status status) : status_(std::move(status)) {
    if (status_.ok()) status_ = Status::Internal("Result constructed from an OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  const T& value() const& { return *value_; }
  T& value() & { return *value_; }
  T&& value() && { return std::move(*value_); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace kvdump
