// FrequencySketch: TinyLFU's approximate access counts, for deciding whether a row that missed
// the DRAM cache deserves the slot of the row it would evict.
//
// A count-min sketch of 4 rows of small saturating counters (max 15). After `sample` recorded
// accesses every counter is halved, so counts follow recent popularity (Einziger, Friedman &
// Manes, "TinyLFU", 2017). Zipfian n-gram rows are where this beats LRU: a long tail of rows
// seen once would otherwise flush the hot set on every scan-like batch.
//
// Thread-safety: Record and Estimate may be called concurrently; counters are relaxed atomics
// and a lost increment under a race only makes a count slightly low.
#ifndef ENGRAM_STORAGE_ADMISSION_H_
#define ENGRAM_STORAGE_ADMISSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace engram::storage {

class FrequencySketch {
 public:
  // Sized for a cache of `capacity` rows: 4 x next_pow2(2 * capacity) counters, halved every
  // 10 x capacity records.
  explicit FrequencySketch(uint64_t capacity);

  void Record(uint64_t key);
  // Estimated recent accesses of `key`, 0..15.
  uint32_t Estimate(uint64_t key) const;

 private:
  static constexpr int kDepth = 4;
  static constexpr uint8_t kMax = 15;
  uint64_t Index(uint64_t key, int i) const;
  void Age();

  uint64_t mask_;
  uint64_t sample_;
  std::unique_ptr<std::atomic<uint8_t>[]> counters_;  // kDepth rows of mask_ + 1.
  std::atomic<uint64_t> recorded_{0};
  std::mutex age_mu_;
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_ADMISSION_H_
