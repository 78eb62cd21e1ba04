// LatencyHistogram: lock-free log-linear histogram so hot paths can record latencies without a mutex.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace kvdump {

/// Point-in-time summary of a LatencyHistogram, in microseconds; a plain value.
struct LatencySummary {
  uint64_t count = 0;
  double mean_us = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

/// Records nanosecond samples into 8 sub-buckets per power of two (≤12.5% error on percentiles);
/// record() and summary() are thread-safe and wait-free; the object is not copyable.
class LatencyHistogram {
 public:
  void record(uint64_t nanos);
  LatencySummary summary() const;
  void reset();

 private:
  static constexpr int kSubBits = 3;
  static constexpr int kBuckets = 8 + 61 * 8;
  static int bucketOf(uint64_t nanos);
  static uint64_t bucketLowerBound(int bucket);

  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> max_ns_{0};
};

}  // namespace kvdump
