#include "kvdump/stores/memory_store.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "kvdump/commit_record.h"
#include "kvdump/stored_key.h"

namespace kvdump {
namespace {

constexpr uint32_t kNone = UINT32_MAX;
constexpr size_t kInlineBytes = 64;
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kMaxSlabBytes = size_t{1} << 30;

size_t defaultSlabBytes(size_t capacity) {
  const size_t small = std::min<size_t>(capacity, size_t{256} << 10);
  return std::min<size_t>(size_t{4} << 20, std::max(capacity / 8, small));
}

size_t roundUp(size_t n, size_t to) { return (std::max<size_t>(n, 1) + to - 1) / to * to; }

// Whole slabs covering the capacity: the arena may exceed it by less than one slab.
size_t arenaBytes(size_t capacity, size_t slab) { return capacity == 0 ? 0 : roundUp(capacity, slab); }

// Huge-page aligned and advised, so touching the arena up front is fast and copies into it miss
// the TLB less; released with free().
HostAllocator arenaAllocator() {
  return [](size_t bytes) -> Result<HostAllocation> {
    const size_t rounded = (std::max<size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(kHugePage, rounded));
    if (p == nullptr) return Status::IoError("out of host memory allocating a " + std::to_string(bytes) + "-byte arena");
#ifdef MADV_HUGEPAGE
    (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return HostAllocation{p, bytes, [p] { std::free(p); }};
  };
}

Status checkOptions(const MemoryStoreOptions& o) {
  if (!(o.low_watermark > 0.0) || !(o.high_watermark <= 1.0) || !(o.low_watermark <= o.high_watermark)) {
    return Status::InvalidArgument("watermarks must satisfy 0 < low_watermark <= high_watermark <= 1, got low_watermark=" +
                                   std::to_string(o.low_watermark) + " high_watermark=" + std::to_string(o.high_watermark));
  }
  if (o.eviction != EvictionPolicy::kEvict && o.eviction != EvictionPolicy::kRefuse) {
    return Status::InvalidArgument("eviction must be 'evict' or 'refuse'");
  }
  if (o.slab_bytes != 0 && (o.slab_bytes < SlabArena::kSlotAlignment || o.slab_bytes > kMaxSlabBytes)) {
    return Status::InvalidArgument("slab_bytes must be 0 (automatic) or in [64, 1 GiB], got " +
                                   std::to_string(o.slab_bytes));
  }
  return Status::Ok();
}

}  // namespace

const char* evictionPolicyName(EvictionPolicy policy) {
  return policy == EvictionPolicy::kRefuse ? "refuse" : "evict";
}

struct MemoryStore::Entry {
  enum class State : uint8_t { kFree, kLent, kVisible, kDetached };
  std::string key;
  State state = State::kFree;
  bool is_commit = false;
  bool unsettled = false;  // a block layer its writer has neither committed nor discarded
  bool inline_value = false;
  uint32_t generation = 0;
  uint32_t group = kNone;
  uint32_t layer = 0;  // of a block layer
  uint32_t leases = 0;
  size_t size = 0;  // also what the entry counts in `used`: capacity counts value bytes
  SlabArena::Slot slot;
  alignas(64) uint8_t inline_bytes[kInlineBytes];
};

// All the keys of one block hash (its layers and commit records), or one opaque key.
struct MemoryStore::Group {
  enum List : uint8_t { kUnlisted = 0, kReclaim = 1, kLru = 2 };
  std::string name;
  std::vector<uint32_t> members;
  uint32_t commits = 0;
  uint32_t unsettled = 0;
  uint32_t leases = 0;
  bool opaque = false;
  List list = kUnlisted;
  uint32_t prev = kNone;
  uint32_t next = kNone;
};

struct MemoryStore::Impl {
  using Index = std::unordered_map<std::string_view, uint32_t>;
  struct ListEnds {
    uint32_t head = kNone;  // least recently used
    uint32_t tail = kNone;
  };

  Impl(const MemoryStoreOptions& o, std::vector<HostAllocation> memory)
      : options(o),
        arena(std::move(memory), o.slab_bytes),
        high_bytes(static_cast<size_t>(std::floor(o.high_watermark * static_cast<double>(o.capacity_bytes)))),
        low_bytes(static_cast<size_t>(std::floor(o.low_watermark * static_cast<double>(o.capacity_bytes)))) {}

  const MemoryStoreOptions options;
  mutable std::mutex mu;
  SlabArena arena;
  const size_t high_bytes;
  const size_t low_bytes;
  std::deque<Entry> entries;  // a deque: entries never move, so index keys may view them
  std::vector<uint32_t> free_entries;
  std::deque<Group> groups;
  std::vector<uint32_t> free_groups;
  Index index;        // readable entries by key
  Index block_groups;   // groups of kvdump block keys, by "<ns>/tp<r>of<n>/<hash>"
  Index opaque_groups;  // one group per other key, by the key (kept apart: the names may coincide)
  std::vector<Index::node_type> spare_nodes;  // recycled map nodes: steady state allocates nothing
  ListEnds lists[3];
  size_t used = 0;
  size_t visible = 0;
  size_t lent = 0;
  size_t leased = 0;
  uint64_t hits = 0, misses = 0, evictions = 0, reclaimed = 0, rejected_full = 0;

  // ---- index maps with node reuse
  void indexInsert(Index& map, std::string_view key, uint32_t id) {
    if (!spare_nodes.empty()) {
      Index::node_type node = std::move(spare_nodes.back());
      spare_nodes.pop_back();
      node.key() = key;
      node.mapped() = id;
      map.insert(std::move(node));
      return;
    }
    map.emplace(key, id);
  }
  void indexErase(Index& map, std::string_view key) {
    auto node = map.extract(key);
    if (!node.empty()) spare_nodes.push_back(std::move(node));
  }

  // ---- group lists
  void unlink(uint32_t g) {
    Group& group = groups[g];
    if (group.list == Group::kUnlisted) return;
    ListEnds& ends = lists[group.list];
    if (group.prev != kNone) groups[group.prev].next = group.next; else ends.head = group.next;
    if (group.next != kNone) groups[group.next].prev = group.prev; else ends.tail = group.prev;
    group.prev = group.next = kNone;
    group.list = Group::kUnlisted;
  }
  void linkTail(uint32_t g, Group::List list) {
    Group& group = groups[g];
    ListEnds& ends = lists[list];
    group.list = list;
    group.prev = ends.tail;
    group.next = kNone;
    if (ends.tail != kNone) groups[ends.tail].next = g; else ends.head = g;
    ends.tail = g;
  }

  // Puts a group on the list its state calls for; `touch` makes it the most recently used.
  void place(uint32_t g, bool touch) {
    Group& group = groups[g];
    if (group.members.empty()) {
      unlink(g);
      indexErase(group.opaque ? opaque_groups : block_groups, group.name);
      group = Group{std::move(group.name), std::move(group.members)};
      group.members.clear();
      free_groups.push_back(g);
      return;
    }
    Group::List target = Group::kUnlisted;
    if (group.unsettled == 0) target = group.opaque || group.commits > 0 ? Group::kLru : Group::kReclaim;
    if (target != group.list || (touch && target != Group::kUnlisted)) {
      unlink(g);
      if (target != Group::kUnlisted) linkTail(g, target);
    }
  }

  uint32_t groupFor(const StoredKeyKind& kind) {
    const bool opaque = kind.kind == StoredKeyKind::Kind::kOpaque;
    Index& groups_by_name = opaque ? opaque_groups : block_groups;
    auto it = groups_by_name.find(kind.block);
    if (it != groups_by_name.end()) return it->second;
    uint32_t g;
    if (!free_groups.empty()) {
      g = free_groups.back();
      free_groups.pop_back();
    } else {
      g = static_cast<uint32_t>(groups.size());
      groups.emplace_back();
    }
    Group& group = groups[g];
    group.name.assign(kind.block);
    group.opaque = opaque;
    indexInsert(groups_by_name, group.name, g);
    return g;
  }

  // ---- entries
  uint32_t newEntry(std::string_view key) {
    uint32_t id;
    if (!free_entries.empty()) {
      id = free_entries.back();
      free_entries.pop_back();
    } else {
      id = static_cast<uint32_t>(entries.size());
      entries.emplace_back();
    }
    entries[id].key.assign(key);
    return id;
  }
  uint8_t* bytesOf(Entry& e) { return e.inline_value ? e.inline_bytes : arena.data(e.slot); }
  void freeEntry(uint32_t id) {
    Entry& e = entries[id];
    if (!e.inline_value) arena.free(e.slot);
    used -= e.size;
    e.size = 0;
    e.state = Entry::State::kFree;
    e.group = kNone;
    e.is_commit = e.unsettled = e.inline_value = false;
    ++e.generation;
    free_entries.push_back(id);
  }
  // Takes a readable entry out of the index and its group; frees it unless a reader still holds it.
  // Returns its former group, for place().
  uint32_t detach(uint32_t id) {
    Entry& e = entries[id];
    indexErase(index, e.key);
    --visible;
    const uint32_t g = e.group;
    Group& group = groups[g];
    group.members.erase(std::find(group.members.begin(), group.members.end(), id));
    if (e.is_commit) --group.commits;
    if (e.unsettled) --group.unsettled;
    group.leases -= e.leases;
    e.group = kNone;
    if (e.leases > 0) {
      e.state = Entry::State::kDetached;
    } else {
      freeEntry(id);
    }
    return g;
  }

  // ---- room
  bool evictOne() {
    for (Group::List list : {Group::kReclaim, Group::kLru}) {
      if (list == Group::kLru && options.eviction == EvictionPolicy::kRefuse) break;
      for (uint32_t g = lists[list].head; g != kNone; g = groups[g].next) {
        if (groups[g].leases > 0) continue;
        evictGroup(g, list == Group::kReclaim);
        return true;
      }
    }
    return false;
  }
  void evictGroup(uint32_t g, bool reclaim) {
    // The whole block goes under the one lock, commit records and layers together: no reader ever
    // sees a commit whose layers are gone. A copy, since detach() edits the member list.
    const std::vector<uint32_t> members = groups[g].members;
    (reclaim ? reclaimed : evictions) += members.size();
    for (uint32_t id : members) detach(id);
    place(g, false);
  }
  // Makes room for a value of `size` bytes (and a slot for it unless inline); false when nothing more
  // may be evicted.
  bool makeRoom(std::string_view key, size_t size, bool inline_value, SlabArena::Slot* slot) {
    // An overwrite counts on the bytes of the value it replaces, unless a reader holds them; looked
    // up again after each eviction, which may have taken that value.
    auto creditFor = [&] {
      auto old = index.find(key);
      return old != index.end() && entries[old->second].leases == 0 ? entries[old->second].size : size_t{0};
    };
    size_t credit = creditFor();
    auto needed = [&] { return used + size - std::min(used + size, credit); };
    auto evict = [&] {
      if (!evictOne()) return false;
      credit = creditFor();
      return true;
    };
    // Watermarks pace eviction for slot values; an inline value (a commit record) takes no slot
    // and evicts only when the capacity itself is reached, so a commit never evicts its own blocks.
    if (!inline_value && needed() > high_bytes) {
      while (needed() > low_bytes && evict()) {
      }
    }
    for (;;) {
      if (needed() <= options.capacity_bytes) {
        if (inline_value) return true;
        if (auto s = arena.allocate(size)) {
          *slot = *s;
          return true;
        }
      }
      if (!evict()) return false;
    }
  }

  Result<LentSlot> lend(std::string_view key, size_t size) {
    if (key.empty()) return Status::InvalidArgument("empty key");
    const bool inline_value = size <= kInlineBytes;
    if (!inline_value && arena.slotBytesFor(size) == 0) {
      if (size > options.capacity_bytes) {
        ++rejected_full;
        return Status::StoreFull("value of " + std::to_string(size) + " bytes exceeds the store's capacity of " +
                                 std::to_string(options.capacity_bytes))
            .withKey(std::string(key));
      }
      return Status::TooLarge("value of " + std::to_string(size) + " bytes is larger than the store's slab of " +
                              std::to_string(arena.slabBytes()) + " bytes (raise slab_bytes)")
          .withKey(std::string(key));
    }
    // The entry first: if making it throws, no slot has been taken yet.
    const uint32_t id = newEntry(key);
    SlabArena::Slot slot;
    if (!makeRoom(key, size, inline_value, &slot)) {
      free_entries.push_back(id);
      ++rejected_full;
      return Status::StoreFull("memory store full (policy " + std::string(evictionPolicyName(options.eviction)) + "): " +
                               std::to_string(used) + " of " + std::to_string(options.capacity_bytes) +
                               " bytes used by blocks that are committed, under a read lease, or in a cycle not yet "
                               "committed; the value needs " + std::to_string(size))
          .withKey(std::string(key));
    }
    Entry& e = entries[id];
    e.state = Entry::State::kLent;
    e.inline_value = inline_value;
    e.slot = slot;
    e.size = size;
    used += size;
    ++lent;
    return LentSlot{bytesOf(e), size, (uint64_t{e.generation} << 32) | id};
  }

  Entry* lentEntry(uint64_t token) {
    const auto id = static_cast<uint32_t>(token & 0xffffffffu);
    if (id >= entries.size()) return nullptr;
    Entry& e = entries[id];
    if (e.state != Entry::State::kLent || e.generation != static_cast<uint32_t>(token >> 32)) return nullptr;
    return &e;
  }

  // Whether every layer the commit record `e` holds covers is held in `kind`'s block group. A value
  // that is not a commit record is left to the reader, which refuses it.
  Status coveredLayersHeld(const StoredKeyKind& kind, Entry& e) {
    Result<CommitRecord> record = decodeCommitRecord(bytesOf(e), e.size);
    if (!record.ok()) return Status::Ok();
    const LayerRange layers = record.value().layers;
    // The group's layers in the range, sorted: the first gap is the first layer missing.
    std::vector<uint32_t> held;
    auto found = block_groups.find(kind.block);
    if (found != block_groups.end()) {
      for (uint32_t m : groups[found->second].members) {
        const Entry& member = entries[m];
        if (!member.is_commit && member.layer >= layers.begin && member.layer < layers.end) held.push_back(member.layer);
      }
    }
    std::sort(held.begin(), held.end());
    uint32_t missing = layers.begin;
    for (uint32_t layer : held) {
      if (layer < missing) continue;  // one layer under two spellings ("L1", "L01")
      if (layer != missing) break;
      ++missing;
    }
    if (missing == layers.end) return Status::Ok();
    return Status::NotFound("not published: this commit record covers layers " + layers.toString() +
                            " of its block, and the store does not hold layer " +
                            std::to_string(missing) + " (evicted, reclaimed or never stored)");
  }

  Status publish(const LentSlot& slot) {
    Entry* e = lentEntry(slot.token);
    if (e == nullptr) return Status::InvalidArgument("publishSlots: the slot was not lent by this store, or is no longer lent");
    const auto id = static_cast<uint32_t>(slot.token & 0xffffffffu);
    const StoredKeyKind kind = parseStoredKey(e->key);
    if (kind.kind == StoredKeyKind::Kind::kCommitRecord) {
      // A record published over missing layers would tell lookup a block loads when it does not.
      // Another put of the same block (a writer's stale discard, a second writer) can make a block
      // reclaimable before its record lands; checked here, under the lock that eviction takes.
      Status held = coveredLayersHeld(kind, *e);
      if (!held.ok()) {
        std::string key = e->key;
        abandon(slot);
        return held.withKey(std::move(key));
      }
    }
    --lent;
    auto old = index.find(e->key);
    if (old != index.end()) place(detach(old->second), false);
    const uint32_t g = groupFor(kind);
    Group& group = groups[g];
    e->state = Entry::State::kVisible;
    e->group = g;
    e->is_commit = kind.kind == StoredKeyKind::Kind::kCommitRecord;
    e->unsettled = kind.kind == StoredKeyKind::Kind::kBlockLayer;
    e->layer = kind.layer;
    indexInsert(index, e->key, id);
    ++visible;
    group.members.push_back(id);
    if (e->unsettled) ++group.unsettled;
    if (e->is_commit) {
      ++group.commits;
      // A commit record settles its block: every layer it covers is now the reader's.
      for (uint32_t m : group.members) entries[m].unsettled = false;
      group.unsettled = 0;
    }
    place(g, true);
    return Status::Ok();
  }

  void abandon(const LentSlot& slot) {
    if (lentEntry(slot.token) == nullptr) return;
    --lent;
    freeEntry(static_cast<uint32_t>(slot.token & 0xffffffffu));
  }

  // Under the lock: finds `key` and takes a read lease on it; its entry's id, or kNone.
  uint32_t lease(std::string_view key) {
    auto it = index.find(key);
    if (it == index.end()) {
      ++misses;
      return kNone;
    }
    ++hits;
    Entry& e = entries[it->second];
    if (e.leases++ == 0) ++leased;
    ++groups[e.group].leases;
    place(e.group, true);
    return it->second;
  }
  void release(Entry& e, uint32_t id) {
    if (--e.leases == 0) --leased;
    if (e.state == Entry::State::kVisible) {
      --groups[e.group].leases;
    } else if (e.state == Entry::State::kDetached && e.leases == 0) {
      freeEntry(id);
    }
  }
};

namespace {

// A custom (pinned) allocator gets the arena in pieces of whole slabs of about 256 MiB: a caching
// host allocator rounds each request up to a power of two, which for one piece the size of a large
// store could nearly double it.
constexpr size_t kPinnedPieceBytes = size_t{256} << 20;

void releaseAll(std::vector<HostAllocation>& regions) {
  for (HostAllocation& region : regions) {
    if (region.release) region.release();
  }
  regions.clear();
}

// Allocates the arena for `o` (slab_bytes already set) and touches every page, so no put ever
// faults one in or waits for the kernel to zero it.
Result<std::vector<HostAllocation>> allocateArena(const MemoryStoreOptions& o) {
  const size_t total = arenaBytes(o.capacity_bytes, o.slab_bytes);
  const bool custom = static_cast<bool>(o.allocator);
  const HostAllocator allocator = custom ? o.allocator : arenaAllocator();
  const size_t piece = custom ? o.slab_bytes * std::max<size_t>(1, kPinnedPieceBytes / o.slab_bytes) : total;
  std::vector<HostAllocation> regions;
  for (size_t done = 0; done < total;) {
    const size_t bytes = std::min(piece, total - done);
    Result<HostAllocation> memory = Status::Internal("allocator threw");
    try {
      memory = allocator(bytes);
    } catch (const std::exception& e) {
      memory = Status::IoError(std::string("allocating the memory store's arena failed: ") + e.what());
    }
    if (memory.ok() && memory.value().data == nullptr) memory = Status::IoError("the arena allocator returned no memory");
    if (!memory.ok()) {
      releaseAll(regions);
      return memory.status();
    }
    regions.push_back(std::move(memory).value());
    std::memset(regions.back().data, 0, bytes);
    done += bytes;
  }
  return regions;
}

MemoryStoreOptions withSlab(MemoryStoreOptions o) {
  if (o.slab_bytes == 0) o.slab_bytes = defaultSlabBytes(o.capacity_bytes);
  o.slab_bytes = roundUp(o.slab_bytes, SlabArena::kSlotAlignment);
  return o;
}

}  // namespace

Result<std::shared_ptr<MemoryStore>> MemoryStore::create(MemoryStoreOptions options) {
  Status ok = checkOptions(options);
  if (!ok.ok()) return ok;
  options = withSlab(std::move(options));
  Result<std::vector<HostAllocation>> arena = allocateArena(options);
  if (!arena.ok()) return arena.status();
  return std::shared_ptr<MemoryStore>(new MemoryStore(std::move(options), std::move(arena).value()));
}

MemoryStore::MemoryStore(size_t capacity_bytes)
    : MemoryStore(
          [&] {
            MemoryStoreOptions o;
            o.capacity_bytes = capacity_bytes;
            return withSlab(o);
          }(),
          [&] {
            MemoryStoreOptions o;
            o.capacity_bytes = capacity_bytes;
            Result<std::vector<HostAllocation>> arena = allocateArena(withSlab(o));
            if (!arena.ok()) throw std::bad_alloc();
            return std::move(arena).value();
          }()) {}

MemoryStore::MemoryStore(MemoryStoreOptions options, std::vector<HostAllocation> arena)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_, std::move(arena))) {}

MemoryStore::~MemoryStore() = default;

Status MemoryStore::put(std::string_view key, ByteView value) {
  return batchPut({std::string(key)}, {value}).front();
}

std::vector<Status> MemoryStore::batchPut(const std::vector<std::string>& keys, const std::vector<ByteView>& values) {
  if (keys.size() != values.size()) {
    return std::vector<Status>(keys.size(), Status::InvalidArgument("batchPut got " + std::to_string(keys.size()) +
                                                                    " keys and " + std::to_string(values.size()) +
                                                                    " values"));
  }
  std::vector<Status> out(keys.size());
  std::vector<Result<LentSlot>> slots(keys.size(), Status::Internal("unset"));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    try {
      for (size_t i = 0; i < keys.size(); ++i) {
        if (keys[i].empty()) {
          slots[i] = Status::InvalidArgument("empty key");
        } else if (values[i].size > 0 && values[i].data == nullptr) {
          slots[i] = Status::InvalidArgument("null value pointer").withKey(keys[i]);
        } else {
          slots[i] = impl_->lend(keys[i], values[i].size);
        }
      }
    } catch (...) {
      // Out of memory for an entry: no slot of this batch stays lent.
      for (const auto& slot : slots) {
        if (slot.ok()) impl_->abandon(slot.value());
      }
      throw;
    }
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!slots[i].ok()) {
      out[i] = slots[i].status();
    } else if (values[i].size > 0) {
      std::memcpy(slots[i].value().data, values[i].data, values[i].size);
    }
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (slots[i].ok()) out[i] = impl_->publish(slots[i].value());
  }
  return out;
}

std::vector<Result<LentSlot>> MemoryStore::lendSlots(const std::vector<std::string>& keys, size_t size) {
  std::vector<Result<LentSlot>> out;
  out.reserve(keys.size());
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& key : keys) out.push_back(impl_->lend(key, size));
  return out;
}

std::vector<Status> MemoryStore::publishSlots(const std::vector<LentSlot>& slots) {
  std::vector<Status> out;
  out.reserve(slots.size());
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& slot : slots) out.push_back(impl_->publish(slot));
  return out;
}

void MemoryStore::abandonSlots(const std::vector<LentSlot>& slots) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& slot : slots) impl_->abandon(slot);
}

Status MemoryStore::readLeased(std::string_view key, const std::function<Status(ByteView)>& reader) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  uint32_t id = kNone;
  Entry* leased = nullptr;  // a deque element stays put while the lease holds it, but indexing the
                            // deque outside the lock races with growth, so take the address inside
  ByteView view;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    id = impl_->lease(key);
    if (id == kNone) return Status::NotFound("no such key").withKey(std::string(key));
    leased = &impl_->entries[id];
    view = ByteView{impl_->bytesOf(*leased), leased->size};
  }
  Status result;
  try {
    result = reader(view);
  } catch (...) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->release(*leased, id);
    throw;
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->release(*leased, id);
  return result;
}

Result<std::vector<uint8_t>> MemoryStore::get(std::string_view key) {
  std::vector<uint8_t> out;
  Status s = readLeased(key, [&](ByteView v) {
    out.assign(v.data, v.data + v.size);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Result<size_t> MemoryStore::getInto(std::string_view key, MutableByteView dst) {
  size_t size = 0;
  Status s = readLeased(key, [&](ByteView v) {
    if (v.size > dst.size) return bufferTooSmall(key, v.size, dst.size);
    if (v.size > 0) std::memcpy(dst.data, v.data, v.size);
    size = v.size;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return size;
}

Result<bool> MemoryStore::exists(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->index.count(key) > 0;
}

Status MemoryStore::remove(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("empty key");
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->index.find(key);
  if (it == impl_->index.end()) return Status::NotFound("no such key").withKey(std::string(key));
  impl_->place(impl_->detach(it->second), false);
  return Status::Ok();
}

void MemoryStore::discard(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& key : keys) {
    auto it = impl_->index.find(key);
    if (it == impl_->index.end()) continue;
    Entry& e = impl_->entries[it->second];
    if (!e.unsettled) continue;
    e.unsettled = false;
    --impl_->groups[e.group].unsettled;
    impl_->place(e.group, false);
  }
}

MemoryStoreStats MemoryStore::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  MemoryStoreStats s;
  s.capacity_bytes = options_.capacity_bytes;
  s.used_bytes = impl_->used;
  s.entries = impl_->visible;
  s.lent = impl_->lent;
  s.leased = impl_->leased;
  s.slab_bytes = impl_->arena.slabBytes();
  s.hits = impl_->hits;
  s.misses = impl_->misses;
  s.evictions = impl_->evictions;
  s.reclaimed = impl_->reclaimed;
  s.rejected_full = impl_->rejected_full;
  s.eviction = options_.eviction;
  s.high_watermark = options_.high_watermark;
  s.low_watermark = options_.low_watermark;
  return s;
}

}  // namespace kvdump
