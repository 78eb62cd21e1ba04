#include "torch_status.h"

#include <c10/util/Exception.h>

namespace kvdump {

namespace {

// A c10 error of type Base (what torch turns into the Python exception type) carrying its Status.
template <typename Base>
class StatusError final : public Base, public StatusCarrier {
 public:
  StatusError(const Status& status, const std::string& message)
      : Base(c10::SourceLocation{__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, message),
        StatusCarrier(status) {}
};

// The key travels in a one-line prefix that Python splits at whitespace and ']': percent-encode
// those (and '%' itself), so any key a store names comes back intact.
std::string encodeKey(const std::string& key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(key.size());
  for (unsigned char c : key) {
    if (c <= ' ' || c == '%' || c == ']' || c >= 0x7F) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

void throwStatus(const Status& status) {
  std::string message = std::string("[kvdump:") + statusCodeName(status.code());
  if (!status.key().empty()) message += " key=" + encodeKey(status.key());
  message += "] " + status.message();
  if (status.code() == StatusCode::kInvalidArgument || status.code() == StatusCode::kTooLarge) {
    throw StatusError<c10::ValueError>(status, message);
  }
  throw StatusError<c10::Error>(status, message);
}

}  // namespace kvdump
