// Fixed-width fields of the stored formats, read and written at byte offsets (the formats are
// little-endian, and so is every supported host).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvdump {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kvdump's stored formats assume a little-endian host");

/// Writes `value` at `out + offset`. Pure.
template <typename T>
void putField(uint8_t* out, size_t offset, T value) {
  std::memcpy(out + offset, &value, sizeof(T));
}

/// Reads a T at `in + offset`. Pure.
template <typename T>
T takeField(const uint8_t* in, size_t offset) {
  T value;
  std::memcpy(&value, in + offset, sizeof(T));
  return value;
}

}  // namespace kvdump
