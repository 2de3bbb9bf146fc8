// FrequencySketch: count-min sketch with periodic halving (TinyLFU).
#include "storage/admission.h"

#include <algorithm>
#include <bit>

#include "engram/mix.h"

namespace engram::storage {

FrequencySketch::FrequencySketch(uint64_t capacity) {
  const uint64_t width = std::bit_ceil(std::max<uint64_t>(64, 2 * capacity));
  mask_ = width - 1;
  sample_ = std::max<uint64_t>(1024, 10 * capacity);
  counters_.reset(new std::atomic<uint8_t>[kDepth * width]);
  for (uint64_t i = 0; i < kDepth * width; ++i) counters_[i].store(0, std::memory_order_relaxed);
}

uint64_t FrequencySketch::Index(uint64_t key, int i) const {
  const uint64_t h = Mix64(key + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(i + 1));
  return static_cast<uint64_t>(i) * (mask_ + 1) + (h & mask_);
}

void FrequencySketch::Record(uint64_t key) {
  // Conservative update: raise only the counters at the current minimum.
  uint32_t lo = kMax;
  uint64_t idx[kDepth];
  for (int i = 0; i < kDepth; ++i) {
    idx[i] = Index(key, i);
    lo = std::min<uint32_t>(lo, counters_[idx[i]].load(std::memory_order_relaxed));
  }
  if (lo < kMax) {
    for (int i = 0; i < kDepth; ++i) {
      if (counters_[idx[i]].load(std::memory_order_relaxed) == lo) {
        counters_[idx[i]].store(static_cast<uint8_t>(lo + 1), std::memory_order_relaxed);
      }
    }
  }
  if (recorded_.fetch_add(1, std::memory_order_relaxed) + 1 >= sample_) Age();
}

uint32_t FrequencySketch::Estimate(uint64_t key) const {
  uint32_t lo = kMax;
  for (int i = 0; i < kDepth; ++i) lo = std::min<uint32_t>(lo, counters_[Index(key, i)].load(std::memory_order_relaxed));
  return lo;
}

void FrequencySketch::Age() {
  std::unique_lock<std::mutex> lock(age_mu_, std::try_to_lock);
  if (!lock.owns_lock() || recorded_.load(std::memory_order_relaxed) < sample_) return;  // Another thread ages.
  for (uint64_t i = 0; i < kDepth * (mask_ + 1); ++i) {
    counters_[i].store(counters_[i].load(std::memory_order_relaxed) >> 1, std::memory_order_relaxed);
  }
  recorded_.store(0, std::memory_order_relaxed);
}

}  // namespace engram::storage
