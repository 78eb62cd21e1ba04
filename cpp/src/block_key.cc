#include "kvdump/block_key.h"

#include <cstdio>

namespace kvdump {
namespace {

std::string prefix(const KeySpace& space, uint64_t block_hash) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "/tp%dof%d/%016llx/", space.tp_rank, space.tp_size,
                static_cast<unsigned long long>(block_hash));
  return space.namespace_ + buf;
}

}  // namespace

std::string blockKey(const KeySpace& space, uint64_t block_hash, int64_t layer) {
  return prefix(space, block_hash) + "L" + std::to_string(layer);
}

std::string commitKey(const KeySpace& space, uint64_t block_hash) { return prefix(space, block_hash) + "commit"; }

}  // namespace kvdump
