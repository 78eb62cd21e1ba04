#include "kvdump/latency_histogram.h"

namespace kvdump {

int LatencyHistogram::bucketOf(uint64_t nanos) {
  if (nanos < (1u << kSubBits)) return static_cast<int>(nanos);
  const int exponent = 63 - __builtin_clzll(nanos);
  const int sub = static_cast<int>((nanos >> (exponent - kSubBits)) & ((1u << kSubBits) - 1));
  return (1 << kSubBits) + (exponent - kSubBits) * (1 << kSubBits) + sub;
}

uint64_t LatencyHistogram::bucketLowerBound(int bucket) {
  if (bucket < (1 << kSubBits)) return static_cast<uint64_t>(bucket);
  const int exponent = (bucket - (1 << kSubBits)) / (1 << kSubBits) + kSubBits;
  const uint64_t sub = static_cast<uint64_t>((bucket - (1 << kSubBits)) % (1 << kSubBits));
  return (uint64_t{1} << exponent) + (sub << (exponent - kSubBits));
}

// [[gnu::hot]]: on the calling thread's path of a layer write (see layer_write_call.cc).
[[gnu::hot]] void LatencyHistogram::record(uint64_t nanos) {
  buckets_[static_cast<size_t>(bucketOf(nanos))].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(nanos, std::memory_order_relaxed);
  uint64_t seen = max_ns_.load(std::memory_order_relaxed);
  while (nanos > seen && !max_ns_.compare_exchange_weak(seen, nanos, std::memory_order_relaxed)) {
  }
}

LatencySummary LatencyHistogram::summary() const {
  LatencySummary s;
  std::array<uint64_t, kBuckets> snapshot{};
  uint64_t total = 0;
  for (int i = 0; i < kBuckets; ++i) {
    snapshot[static_cast<size_t>(i)] = buckets_[static_cast<size_t>(i)].load(std::memory_order_relaxed);
    total += snapshot[static_cast<size_t>(i)];
  }
  s.count = total;
  if (total == 0) return s;
  s.mean_us = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / static_cast<double>(total) / 1e3;
  s.max_us = static_cast<double>(max_ns_.load(std::memory_order_relaxed)) / 1e3;
  auto percentile = [&](double q) {
    const auto rank = static_cast<uint64_t>(q * static_cast<double>(total - 1));
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += snapshot[static_cast<size_t>(i)];
      if (seen > rank) {
        // Midpoint of the bucket: halves the worst-case error of reporting its lower bound.
        const double lo = static_cast<double>(bucketLowerBound(i));
        const double hi = i + 1 < kBuckets ? static_cast<double>(bucketLowerBound(i + 1)) : lo;
        return (lo + hi) / 2 / 1e3;
      }
    }
    return s.max_us;
  };
  s.p50_us = percentile(0.50);
  s.p99_us = percentile(0.99);
  if (s.p50_us > s.max_us) s.p50_us = s.max_us;
  if (s.p99_us > s.max_us) s.p99_us = s.max_us;
  return s;
}

void LatencyHistogram::reset() {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
  count_.store(0, std::memory_order_relaxed);
  sum_ns_.store(0, std::memory_order_relaxed);
  max_ns_.store(0, std::memory_order_relaxed);
}

}  // namespace kvdump
