// What a store can tell from a key alone: which block a kvdump key belongs to, and whether it is a
// layer of the block or its commit record. Lets a store evict a block's layers and commit together.
#pragma once

#include <cstdint>
#include <string_view>

namespace kvdump {

/// How a key is named by the key scheme (see block_key.h); a plain value.
struct StoredKeyKind {
  enum class Kind { kOpaque, kBlockLayer, kCommitRecord };
  Kind kind = Kind::kOpaque;
  /// "<namespace>/tp<r>of<n>/<hash>" for the two kvdump kinds (a view into the parsed key); the whole
  /// key for an opaque one.
  std::string_view block;
  /// The layer of a block-layer key; 0 for the other kinds.
  uint32_t layer = 0;
};

/// Parses `key`: "<ns>/tp<r>of<n>/<16 hex>/L<layer>" is a block layer, ".../<16 hex>/commit" and
/// ".../<16 hex>/commit/L<b>-<e>" are commit records, anything else is opaque. Pure.
StoredKeyKind parseStoredKey(std::string_view key);

}  // namespace kvdump
