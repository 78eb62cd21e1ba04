// Commit records: the small value written last for a block, saying which layers of it are stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvdump/block_key.h"
#include "kvdump/cache_store.h"
#include "kvdump/status.h"

namespace kvdump {

/// The decoded value of a commit record; a plain value.
///   offset size field
///        0    4 magic "KVDC"
///        4    2 format version (2)
///        6    2 record bytes (48)
///        8    4 first layer stored
///       12    4 one past the last layer stored
///       16    8 key-space fingerprint (keySpaceFingerprint)
///       24    8 block hash
///       32    8 reserved (0)
///       40    8 XXH3-64 of bytes 0..39
struct CommitRecord {
  static constexpr size_t kBytes = 48;
  static constexpr uint16_t kVersion = 2;

  LayerRange layers;
  uint64_t key_space = 0;
  uint64_t block_hash = 0;
};

/// Writes `record` into `out[0, kBytes)`. Pure.
void encodeCommitRecord(const CommitRecord& record, uint8_t* out);

/// Parses and checks a stored commit record: size, magic, version and checksum (CHECKSUM_MISMATCH
/// when any is wrong, UNSUPPORTED for another version). Pure.
Result<CommitRecord> decodeCommitRecord(const uint8_t* data, size_t size);

/// How many leading blocks of `hashes` have a commit record in `space` covering `needed` (a range
/// starting at 0 reads the whole-model record; {0, 0} accepts any whole-model record). One batched
/// read. Stops at the first block without a covering record. A record that is corrupt, names
/// another block, or belongs to another key space is an error naming its key, never a hit.
/// Thread-safe as the store is.
Result<size_t> lookupCommitted(CacheStore& store, const KeySpace& space, const std::vector<uint64_t>& hashes,
                               LayerRange needed);

/// Writes the commit records of `hashes` for `layers` in one batched put. The first failure (with
/// its key and how many failed) is the result: a commit that did not land is an error from every store.
Status publishCommits(CacheStore& store, const KeySpace& space, const std::vector<uint64_t>& hashes,
                      LayerRange layers);

}  // namespace kvdump
