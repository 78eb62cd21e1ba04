// SlabArena: one up-front block of host memory carved into equal slabs, each slab into slots of one
// size class, so that values of a few sizes share the memory without per-value allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kvdump/host_memory.h"

namespace kvdump {

/// Sub-allocates fixed-size slots from memory it owns. A slab serves one size class (the slot size,
/// a multiple of 64 bytes) from its first allocation until its last slot is freed, when it returns
/// to the free slabs and may serve another class: a size no model uses any more does not keep memory.
/// Not thread-safe: the owner serialises every call. Owns its memory regions and releases them on
/// destruction.
class SlabArena {
 public:
  /// One slot: slab number and index within the slab; a plain value.
  struct Slot {
    uint32_t slab = 0;
    uint32_t index = 0;
  };

  /// Slot sizes are multiples of this, so every slot starts on a cache line.
  static constexpr size_t kSlotAlignment = 64;

  /// Each region must be 64-byte aligned; it holds as many whole slabs as fit (a tail is unused).
  SlabArena(std::vector<HostAllocation> regions, size_t slab_bytes);
  ~SlabArena();
  SlabArena(const SlabArena&) = delete;
  SlabArena& operator=(const SlabArena&) = delete;

  /// The slot size a value of `bytes` occupies; 0 if it cannot fit a slab.
  size_t slotBytesFor(size_t bytes) const;
  /// A free slot of `bytes`' size class, or nullopt when that class is full and no slab is free.
  std::optional<Slot> allocate(size_t bytes);
  void free(Slot slot);

  uint8_t* data(Slot slot) const;
  size_t slotBytes(Slot slot) const { return slabs_[slot.slab].slot_bytes; }

  size_t slabBytes() const { return slab_bytes_; }
  size_t slabCount() const { return slabs_.size(); }
  size_t freeSlabs() const { return free_slabs_.size(); }
  /// Bytes of the slots handed out and not yet freed.
  size_t allocatedBytes() const { return allocated_bytes_; }

 private:
  struct Slab {
    uint8_t* base = nullptr;
    uint32_t slot_bytes = 0;  // 0: free
    uint32_t used = 0;
    uint32_t slots = 0;
    bool has_room_listed = false;
    std::vector<uint32_t> free_slots;
  };

  bool assignSlab(size_t slot_bytes);
  void unlistRoom(uint32_t slab);

  std::vector<HostAllocation> regions_;
  size_t slab_bytes_;
  std::vector<Slab> slabs_;
  std::vector<uint32_t> free_slabs_;
  std::unordered_map<size_t, std::vector<uint32_t>> slabs_with_room_;  // by slot size
  size_t allocated_bytes_ = 0;
};

}  // namespace kvdump
