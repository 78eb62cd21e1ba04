#include "kvdump/commit_record.h"

#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "little_endian.h"

namespace kvdump {
namespace {

constexpr uint8_t kMagic[4] = {'K', 'V', 'D', 'C'};
constexpr size_t kChecksumOffset = 40;

Status corrupt(const std::string& why) { return Status::ChecksumMismatch("corrupt commit record: " + why); }

}  // namespace

void encodeCommitRecord(const CommitRecord& r, uint8_t* out) {
  std::memset(out, 0, CommitRecord::kBytes);
  std::memcpy(out, kMagic, 4);
  putField<uint16_t>(out, 4, CommitRecord::kVersion);
  putField<uint16_t>(out, 6, static_cast<uint16_t>(CommitRecord::kBytes));
  putField<uint32_t>(out, 8, r.layers.begin);
  putField<uint32_t>(out, 12, r.layers.end);
  putField<uint64_t>(out, 16, r.key_space);
  putField<uint64_t>(out, 24, r.block_hash);
  putField<uint64_t>(out, kChecksumOffset, XXH3_64bits(out, kChecksumOffset));
}

Result<CommitRecord> decodeCommitRecord(const uint8_t* data, size_t size) {
  if (size >= 6 && std::memcmp(data, kMagic, 4) == 0 && takeField<uint16_t>(data, 4) != CommitRecord::kVersion) {
    return Status::Unsupported("commit record has format version " + std::to_string(takeField<uint16_t>(data, 4)) +
                               ", this kvdump reads " + std::to_string(CommitRecord::kVersion) +
                               "; re-create the store or re-run prefill into an empty one");
  }
  if (size != CommitRecord::kBytes) return corrupt(std::to_string(size) + " bytes, expected 48");
  if (std::memcmp(data, kMagic, 4) != 0) return corrupt("bad magic");
  if (takeField<uint16_t>(data, 6) != CommitRecord::kBytes) return corrupt("bad record size field");
  if (takeField<uint64_t>(data, kChecksumOffset) != XXH3_64bits(data, kChecksumOffset)) return corrupt("checksum mismatch");
  CommitRecord r;
  r.layers.begin = takeField<uint32_t>(data, 8);
  r.layers.end = takeField<uint32_t>(data, 12);
  r.key_space = takeField<uint64_t>(data, 16);
  r.block_hash = takeField<uint64_t>(data, 24);
  if (r.layers.empty()) return corrupt("empty layer range " + r.layers.toString());
  return r;
}

Result<size_t> lookupCommitted(CacheStore& store, const KeySpace& space, const std::vector<uint64_t>& hashes,
                               LayerRange needed) {
  if (needed.end < needed.begin || (needed.begin > 0 && needed.empty())) {
    return Status::InvalidArgument("layer range " + needed.toString() + " is empty");
  }
  // A stage's range may be covered by its own record or by a whole-model one: read both.
  const size_t per_block = needed.begin > 0 ? 2 : 1;
  const uint64_t fingerprint = keySpaceFingerprint(space);
  std::vector<std::string> keys;
  keys.reserve(hashes.size() * per_block);
  for (uint64_t h : hashes) {
    keys.push_back(commitKey(space, h));
    if (per_block == 2) keys.push_back(commitKey(space, h, needed));
  }
  std::vector<uint8_t> values(keys.size() * CommitRecord::kBytes);
  std::vector<MutableByteView> dsts(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) dsts[i] = {values.data() + i * CommitRecord::kBytes, CommitRecord::kBytes};
  std::vector<Result<size_t>> got = store.batchGetInto(keys, dsts);
  if (got.size() != keys.size()) return Status::Internal("store returned the wrong number of results for a lookup");

  for (size_t b = 0; b < hashes.size(); ++b) {
    bool covered = false;
    for (size_t k = b * per_block; k < (b + 1) * per_block; ++k) {
      if (!got[k].ok()) {
        const Status& s = got[k].status();
        if (s.code() == StatusCode::kNotFound) continue;
        if (s.code() == StatusCode::kTooLarge) return corrupt("larger than 48 bytes").withKey(keys[k]);
        return Status(s).withKey(s.key().empty() ? keys[k] : s.key());
      }
      Result<CommitRecord> record = decodeCommitRecord(dsts[k].data, got[k].value());
      if (!record.ok()) return Status(record.status()).withKey(keys[k]);
      const CommitRecord& r = record.value();
      if (r.block_hash != hashes[b]) {
        return corrupt("it names block " + std::to_string(r.block_hash) + ", its key block " +
                       std::to_string(hashes[b]))
            .withKey(keys[k]);
      }
      if (r.key_space != fingerprint) {
        return Status::KeySpaceMismatch("commit record belongs to another key space (namespace or TP layout) than '" +
                                        space.namespace_ + "' tp" + std::to_string(space.tp_rank) + "of" +
                                        std::to_string(space.tp_size))
            .withKey(keys[k]);
      }
      const bool whole_model_any = needed.begin == 0 && needed.end == 0 && r.layers.begin == 0;
      if (whole_model_any || r.layers.covers(needed)) covered = true;
    }
    if (!covered) return b;
  }
  return hashes.size();
}

Status publishCommits(CacheStore& store, const KeySpace& space, const std::vector<uint64_t>& hashes,
                      LayerRange layers) {
  if (hashes.empty()) return Status::Ok();
  if (layers.empty()) return Status::InvalidArgument("cannot commit an empty layer range " + layers.toString());
  const uint64_t fingerprint = keySpaceFingerprint(space);
  std::vector<uint8_t> values(hashes.size() * CommitRecord::kBytes);
  std::vector<std::string> keys;
  std::vector<ByteView> views;
  keys.reserve(hashes.size());
  views.reserve(hashes.size());
  // Last block first: a store that evicts the least recently used then keeps a prompt's first
  // blocks longest, and a prefix is what lookup can use.
  for (size_t i = 0; i < hashes.size(); ++i) {
    const uint64_t hash = hashes[hashes.size() - 1 - i];
    uint8_t* out = values.data() + i * CommitRecord::kBytes;
    encodeCommitRecord(CommitRecord{layers, fingerprint, hash}, out);
    keys.push_back(commitKey(space, hash, layers));
    views.push_back({out, CommitRecord::kBytes});
  }
  std::vector<Status> put = store.batchPut(keys, views);
  if (put.size() != keys.size()) {
    return Status::Internal("store returned " + std::to_string(put.size()) + " results for " +
                            std::to_string(keys.size()) + " commit records")
        .withKey(keys.front());
  }
  size_t failed = 0;
  Status first;
  for (size_t i = put.size(); i-- > 0;) {  // "first" in the blocks' order
    if (put[i].ok()) continue;
    if (failed++ == 0) first = Status(put[i]).withKey(put[i].key().empty() ? keys[i] : put[i].key());
  }
  if (failed == 0) return Status::Ok();
  Status out(first.code(), std::to_string(failed) + " of " + std::to_string(keys.size()) +
                               " commit record(s) were not stored; first: " + first.message());
  out.withKey(first.key());
  out.withPayload(first.payload());
  return out;
}

}  // namespace kvdump
