#include "kvdump/stores/slab_arena.h"

#include <algorithm>
#include <utility>

namespace kvdump {

SlabArena::SlabArena(std::vector<HostAllocation> regions, size_t slab_bytes)
    : regions_(std::move(regions)), slab_bytes_(slab_bytes / kSlotAlignment * kSlotAlignment) {
  for (const HostAllocation& region : regions_) {
    const size_t count = slab_bytes_ == 0 || region.data == nullptr ? 0 : region.size / slab_bytes_;
    for (size_t i = 0; i < count; ++i) {
      slabs_.emplace_back();
      slabs_.back().base = region.data + i * slab_bytes_;
    }
  }
  free_slabs_.reserve(slabs_.size());
  // Highest first, so that pop_back() hands out slabs from the start of the arena.
  for (size_t i = slabs_.size(); i-- > 0;) free_slabs_.push_back(static_cast<uint32_t>(i));
}

SlabArena::~SlabArena() {
  for (HostAllocation& region : regions_) {
    if (region.release) region.release();
  }
}

size_t SlabArena::slotBytesFor(size_t bytes) const {
  const size_t rounded = (std::max<size_t>(bytes, 1) + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
  return rounded <= slab_bytes_ ? rounded : 0;
}

bool SlabArena::assignSlab(size_t slot_bytes) {
  if (free_slabs_.empty()) return false;
  const uint32_t id = free_slabs_.back();
  free_slabs_.pop_back();
  Slab& slab = slabs_[id];
  slab.slot_bytes = static_cast<uint32_t>(slot_bytes);
  slab.slots = static_cast<uint32_t>(slab_bytes_ / slot_bytes);
  slab.used = 0;
  slab.free_slots.clear();
  // Reversed so that slots are handed out in address order: a batch lands contiguously.
  for (uint32_t i = slab.slots; i-- > 0;) slab.free_slots.push_back(i);
  slab.has_room_listed = true;
  slabs_with_room_[slot_bytes].push_back(id);
  return true;
}

void SlabArena::unlistRoom(uint32_t id) {
  Slab& slab = slabs_[id];
  if (!slab.has_room_listed) return;
  auto& list = slabs_with_room_[slab.slot_bytes];
  list.erase(std::find(list.begin(), list.end(), id));
  slab.has_room_listed = false;
}

std::optional<SlabArena::Slot> SlabArena::allocate(size_t bytes) {
  const size_t slot_bytes = slotBytesFor(bytes);
  if (slot_bytes == 0) return std::nullopt;
  auto& room = slabs_with_room_[slot_bytes];
  if (room.empty() && !assignSlab(slot_bytes)) return std::nullopt;
  const uint32_t id = room.back();
  Slab& slab = slabs_[id];
  const uint32_t index = slab.free_slots.back();
  slab.free_slots.pop_back();
  ++slab.used;
  if (slab.free_slots.empty()) unlistRoom(id);
  allocated_bytes_ += slot_bytes;
  return Slot{id, index};
}

void SlabArena::free(Slot slot) {
  Slab& slab = slabs_[slot.slab];
  slab.free_slots.push_back(slot.index);
  --slab.used;
  allocated_bytes_ -= slab.slot_bytes;
  if (slab.used == 0) {
    unlistRoom(slot.slab);
    slab.slot_bytes = 0;
    free_slabs_.push_back(slot.slab);
    return;
  }
  if (!slab.has_room_listed) {
    slab.has_room_listed = true;
    slabs_with_room_[slab.slot_bytes].push_back(slot.slab);
  }
}

uint8_t* SlabArena::data(Slot slot) const {
  const Slab& slab = slabs_[slot.slab];
  return slab.base + static_cast<size_t>(slot.index) * slab.slot_bytes;
}

}  // namespace kvdump
