#include "kvdump/block_key.h"

#include <charconv>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kvdump {
namespace {

void appendDecimal(std::string& out, int64_t value) {
  char digits[24];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
}

// "<namespace>/tp<rank>of<size>/<hash as 16 hex digits>/", formatted by hand: a key is built per
// block and layer on the workers, where snprintf's format parsing was a measurable share.
std::string prefix(const KeySpace& space, uint64_t block_hash) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key;
  key.reserve(space.namespace_.size() + 64);
  key.append(space.namespace_).append("/tp");
  appendDecimal(key, space.tp_rank);
  key.append("of");
  appendDecimal(key, space.tp_size);
  key += '/';
  for (int shift = 60; shift >= 0; shift -= 4) key += kHex[(block_hash >> shift) & 0xf];
  key += '/';
  return key;
}

}  // namespace

Status validateKeySpace(const KeySpace& space) {
  if (space.namespace_.empty()) return Status::InvalidArgument("namespace must not be empty");
  for (unsigned char c : space.namespace_) {
    if (c <= 0x20 || c >= 0x7f || c == '/') {
      return Status::InvalidArgument("namespace must be printable ASCII without '/' or whitespace, got '" +
                                     space.namespace_ + "'");
    }
  }
  if (space.tp_size < 1 || space.tp_size > kMaxTpSize) {
    return Status::InvalidArgument("tp_size must be in [1, " + std::to_string(kMaxTpSize) + "], got " +
                                   std::to_string(space.tp_size));
  }
  if (space.tp_rank < 0 || space.tp_rank >= space.tp_size) {
    return Status::InvalidArgument("tp_rank must be in [0, tp_size), got tp_rank=" + std::to_string(space.tp_rank) +
                                   " tp_size=" + std::to_string(space.tp_size));
  }
  return Status::Ok();
}

uint64_t keySpaceFingerprint(const KeySpace& space) {
  // The namespace's length is hashed in, so no (namespace, rank) pair can imitate another.
  std::string bytes;
  const uint32_t fields[3] = {static_cast<uint32_t>(space.namespace_.size()), static_cast<uint32_t>(space.tp_rank),
                              static_cast<uint32_t>(space.tp_size)};
  bytes.append(reinterpret_cast<const char*>(fields), sizeof fields);
  bytes += space.namespace_;
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::string blockKey(const KeySpace& space, uint64_t block_hash, int64_t layer) {
  std::string key = prefix(space, block_hash);
  key += 'L';
  appendDecimal(key, layer);
  return key;
}

std::string commitKey(const KeySpace& space, uint64_t block_hash, LayerRange layers) {
  std::string key = prefix(space, block_hash) + "commit";
  if (layers.begin != 0) key += "/L" + std::to_string(layers.begin) + "-" + std::to_string(layers.end);
  return key;
}

}  // namespace kvdump
