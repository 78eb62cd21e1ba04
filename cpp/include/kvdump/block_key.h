// Store keys of KV blocks and commit records: namespace + TP shard + content hash + layer.
#pragma once

#include <cstdint>
#include <string>

#include "kvdump/status.h"

namespace kvdump {

/// Where a writer's blocks go and how they are named; a plain value.
struct KeySpace {
  std::string namespace_ = "kvdump";
  int tp_rank = 0;
  int tp_size = 1;
};

/// The largest TP size the stored format can name (16-bit fields).
constexpr int kMaxTpSize = 65535;

/// INVALID_ARGUMENT naming the bad field: the namespace must be non-empty printable ASCII with no
/// '/' or whitespace, and 0 <= tp_rank < tp_size <= kMaxTpSize. Pure.
Status validateKeySpace(const KeySpace& space);

/// A 64-bit fingerprint of (namespace, tp_rank, tp_size), stored in every block and commit record
/// so that a record read under another key space is refused. Pure, thread-safe.
uint64_t keySpaceFingerprint(const KeySpace& space);

/// Layers [begin, end) of a model; a plain value. end == 0 with begin == 0 means "unspecified".
struct LayerRange {
  uint32_t begin = 0;
  uint32_t end = 0;

  bool empty() const { return end <= begin; }
  /// True when every layer of `other` is in this range.
  bool covers(const LayerRange& other) const { return begin <= other.begin && end >= other.end; }
  std::string toString() const { return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")"; }
};

/// "<namespace>/tp<rank>of<size>/<hash as 16 hex digits>/L<layer>". Equal token prefixes give equal
/// hashes, hence equal keys across requests and workers. Pure function, thread-safe.
std::string blockKey(const KeySpace& space, uint64_t block_hash, int64_t layer);

/// The commit record of a block for layers `layers`: "<...>/<hash>/commit" when the range starts at
/// layer 0 (a whole model), "<...>/<hash>/commit/L<begin>-<end>" for a pipeline stage. Pure.
std::string commitKey(const KeySpace& space, uint64_t block_hash, LayerRange layers = {});

}  // namespace kvdump
