// Store keys of KV blocks: namespace + TP shard + content hash + layer (DESIGN.md §5).
#pragma once

#include <cstdint>
#include <string>

namespace kvdump {

/// Where a writer's blocks go and how they are named; a plain value.
struct KeySpace {
  std::string namespace_ = "kvdump";
  int tp_rank = 0;
  int tp_size = 1;
};

/// "<namespace>/tp<rank>of<size>/<hash as 16 hex digits>/L<layer>". Equal token prefixes give equal
/// hashes, hence equal keys across requests and workers. Pure function, thread-safe.
std::string blockKey(const KeySpace& space, uint64_t block_hash, int64_t layer);

/// "<namespace>/tp<rank>of<size>/<hash>/commit": written last, after every layer of the block.
std::string commitKey(const KeySpace& space, uint64_t block_hash);

}  // namespace kvdump
