#include "block_transfer.h"

#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstring>
#include <exception>

namespace kvdump {
namespace {

at::Tensor blockView(uint8_t* data, const LayerKv& kv) {
  return at::from_blob(data, {kv.block_size, kv.num_kv_heads, kv.head_dim}, at::TensorOptions().dtype(kv.scalarType()));
}

// The payloads of `count` records seen as one [count, parts, block_size, heads, head_dim] tensor
// over a byte buffer of records (which may live on a device): the header gaps become a row stride.
at::Tensor payloadView(const at::Tensor& record_bytes, const LayerKv& kv) {
  const int64_t count = record_bytes.size(0);
  const int64_t parts = static_cast<int64_t>(kv.parts());
  const auto payload_bytes = static_cast<int64_t>(kv.recordBytes() - BlockHeader::kBytes);
  return record_bytes.narrow(1, static_cast<int64_t>(BlockHeader::kBytes), payload_bytes)
      .view(kv.scalarType())
      .view({count, parts, kv.block_size, kv.num_kv_heads, kv.head_dim});
}

at::Tensor idsOn(const int64_t* ids, size_t count, const c10::Device& device) {
  return at::from_blob(const_cast<int64_t*>(ids), {static_cast<int64_t>(count)}, at::kLong).to(device);
}

void gatherOnCpu(const LayerKv& kv, const int64_t* ids, size_t count, uint8_t* const* records,
                 const RecordFilled& filled) {
  const size_t part_bytes = kv.partBytes();
  const size_t parts = kv.parts();
  if (kv.blocksAreDense()) {
    for (size_t i = 0; i < count; ++i) {
      uint8_t* payload = records[i] + BlockHeader::kBytes;
      for (size_t p = 0; p < parts; ++p) {
        const size_t at = static_cast<size_t>(ids[i]) * static_cast<size_t>(kv.part_block_stride[p]);
        std::memcpy(payload + p * part_bytes, kv.part_data[p] + at, part_bytes);
      }
      if (filled) filled(i);  // while the record is still in cache
    }
    return;
  }
  const at::Tensor source[2] = {kv.part(0), parts > 1 ? kv.part(1) : at::Tensor()};
  for (size_t i = 0; i < count; ++i) {
    uint8_t* payload = records[i] + BlockHeader::kBytes;
    for (size_t p = 0; p < parts; ++p) blockView(payload + p * part_bytes, kv).copy_(source[p].select(0, ids[i]));
    if (filled) filled(i);
  }
}

void scatterOnCpu(const LayerKv& kv, const int64_t* ids, size_t count, const uint8_t* const* records) {
  const size_t part_bytes = kv.partBytes();
  const size_t parts = kv.parts();
  if (kv.blocksAreDense()) {
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* payload = records[i] + BlockHeader::kBytes;
      for (size_t p = 0; p < parts; ++p) {
        const size_t at = static_cast<size_t>(ids[i]) * static_cast<size_t>(kv.part_block_stride[p]);
        std::memcpy(kv.part_data[p] + at, payload + p * part_bytes, part_bytes);
      }
    }
    return;
  }
  const at::Tensor destination[2] = {kv.part(0), parts > 1 ? kv.part(1) : at::Tensor()};
  for (size_t i = 0; i < count; ++i) {
    auto* payload = const_cast<uint8_t*>(records[i] + BlockHeader::kBytes);
    for (size_t p = 0; p < parts; ++p) destination[p].select(0, ids[i]).copy_(blockView(payload + p * part_bytes, kv));
  }
}

// Calls fn(first, n) for each run of records that lie back to back in memory, so that a device
// copy covers a whole run (a store's slots handed out together are usually adjacent).
template <typename Ptr, typename Fn>
void forEachContiguousRun(Ptr const* records, size_t count, size_t record, Fn&& fn) {
  size_t begin = 0;
  for (size_t i = 1; i <= count; ++i) {
    if (i == count || records[i] != records[i - 1] + record) {
      fn(begin, i - begin);
      begin = i;
    }
  }
}

template <typename Fn>
Status guarded(const char* what, Fn&& fn) {
  try {
    fn();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + " failed: " + e.what());
  }
}

}  // namespace

Status gatherBlocksToRecords(const LayerKv& kv, const int64_t* ids, size_t count, uint8_t* const* records,
                             const c10::Event* ready, const RecordFilled& filled) {
  Status intact = kv.memoryUnchanged();
  if (!intact.ok()) return intact;
  return guarded("gather of KV blocks", [&] {
    const c10::Device device = kv.device();
    if (device.is_cpu()) {
      gatherOnCpu(kv, ids, count, records, filled);
      return;
    }
    c10::impl::VirtualGuardImpl impl(device.type());
    c10::DeviceGuard device_guard(device);
    const c10::Stream stream = impl.getStreamFromGlobalPool(device, /*isHighPriority=*/false);
    c10::StreamGuard stream_guard(stream);
    // Ordered after the forward's writes to this layer without ever blocking the main thread.
    if (ready != nullptr) ready->block(stream);
    const int64_t record = static_cast<int64_t>(kv.recordBytes());
    at::Tensor device_records =
        at::empty({static_cast<int64_t>(count), record}, at::TensorOptions().dtype(at::kByte).device(device));
    at::Tensor payload = payloadView(device_records, kv);
    at::Tensor index = idsOn(ids, count, device);
    for (size_t p = 0; p < kv.parts(); ++p) {
      payload.select(1, static_cast<int64_t>(p)).copy_(kv.part(p).index_select(0, index));
    }
    try {
      forEachContiguousRun(records, count, kv.recordBytes(), [&](size_t first, size_t n) {
        at::Tensor host = at::from_blob(records[first], {static_cast<int64_t>(n), record}, at::kByte);
        host.copy_(device_records.narrow(0, static_cast<int64_t>(first), static_cast<int64_t>(n)), /*non_blocking=*/true);
      });
    } catch (...) {
      // Copies already queued may still write into the records: let them land before the caller
      // gives the memory back.
      try {
        stream.synchronize();
      } catch (...) {
      }
      throw;
    }
    stream.synchronize();
    if (filled) {
      for (size_t i = 0; i < count; ++i) filled(i);
    }
  });
}

Status scatterRecordsToBlocks(const LayerKv& kv, const int64_t* ids, size_t count, const uint8_t* const* records) {
  Status intact = kv.memoryUnchanged();
  if (!intact.ok()) return intact;
  return guarded("scatter of KV blocks", [&] {
    const c10::Device device = kv.device();
    if (device.is_cpu()) {
      scatterOnCpu(kv, ids, count, records);
      return;
    }
    c10::impl::VirtualGuardImpl impl(device.type());
    c10::DeviceGuard device_guard(device);
    const int64_t record = static_cast<int64_t>(kv.recordBytes());
    at::Tensor device_records =
        at::empty({static_cast<int64_t>(count), record}, at::TensorOptions().dtype(at::kByte).device(device));
    forEachContiguousRun(records, count, kv.recordBytes(), [&](size_t first, size_t n) {
      at::Tensor host = at::from_blob(const_cast<uint8_t*>(records[first]), {static_cast<int64_t>(n), record}, at::kByte);
      device_records.narrow(0, static_cast<int64_t>(first), static_cast<int64_t>(n)).copy_(host, /*non_blocking=*/true);
    });
    at::Tensor payload = payloadView(device_records, kv);
    at::Tensor index = idsOn(ids, count, device);
    for (size_t p = 0; p < kv.parts(); ++p) {
      kv.part(p).index_copy_(0, index, payload.select(1, static_cast<int64_t>(p)));
    }
    impl.getStream(device).synchronize();
  });
}

}  // namespace kvdump
