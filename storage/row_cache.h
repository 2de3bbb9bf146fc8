// RowCache: a shard's hot rows in DRAM, the rest in a ColdStore (RocksDB).
//
// The DRAM part is a set-associative cache over a RowArena: row r of the shard may live only in
// the `ways` slots of set (r - first_row) mod sets. Each slot holds, inside the region a
// transport may register for one-sided reads,
//   [slot sequence][row tag][value at rest][checksum][slot sequence]
// i.e. the RowArena slot protocol (engram/row_slot.h) with the row id as the first 8 bytes of
// the checksummed payload. The sequence words count writes of the *slot*, whichever row it
// holds, so they only ever grow: a reader that copies a slot while it is reused for another
// row sees a torn copy (retry) or a whole copy whose tag names the other row (a miss), never
// the new row's bytes under the old row's name. The row's own version (the one the write-ahead
// log records), a dirty bit and an LRU tick live beside the optimizer state in private memory.
//
// Invariant: a row's newest version is in its set, or (if it is not there) in the ColdStore, or
// nowhere (untouched: its initial value). Evicting a dirty row stores it before its slot is
// reused; a row written while not resident is either admitted or written through.
//
// Admission (kTinyLfu): a row that misses replaces its set's least recently used row only if a
// FrequencySketch says it was accessed more often recently; kLru always replaces (the baseline).
//
// Thread-safety: all methods may be called concurrently. Reads of resident rows take no lock;
// everything that changes a set (writes, admissions, evictions) holds that set's stripe mutex,
// so the writes of one row are serialised and see each other in order.
#ifndef ENGRAM_STORAGE_ROW_CACHE_H_
#define ENGRAM_STORAGE_ROW_CACHE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "engram/status.h"
#include "storage/admission.h"
#include "storage/cold_store.h"
#include "storage/row_arena.h"

namespace engram::storage {

enum class AdmissionPolicy : uint8_t { kTinyLfu = 0, kLru = 1 };

struct RowCacheOptions {
  RowArenaOptions arena;
  AdmissionPolicy admission = AdmissionPolicy::kTinyLfu;
  uint32_t ways = 8;  // Slots per set; a one-sided reader scans at most this many per row.
};

// One row held for writing (in a cache slot, or in a buffer when it is not resident).
// `version` is what the write will publish: previous_version + 2 unless the writer changes it
// (to previous_version: no change; to a logged version: recovery). previous_version 0 means
// untouched: value and state are zero bytes and the writer must materialise the initial value.
struct RowRef {
  uint8_t* value = nullptr;
  uint8_t* state = nullptr;  // nullptr when the table has no optimizer state.
  uint64_t previous_version = 0;
  uint64_t version = 0;
};

// A non-owning reference to a callable taking RowRef& (no allocation per row).
class RowFn {
 public:
  template <typename F>
  RowFn(F& f) : obj_(&f), call_([](void* o, RowRef& r) { (*static_cast<F*>(o))(r); }) {}  // NOLINT: implicit by design.
  void operator()(RowRef& r) const { call_(obj_, r); }

 private:
  void* obj_;
  void (*call_)(void*, RowRef&);
};

struct RowCacheStats {
  uint64_t capacity = 0;       // Slots.
  uint64_t resident = 0;       // Slots holding a row.
  uint64_t hits = 0, misses = 0;  // Row reads and writes found / not found in DRAM.
  uint64_t admitted = 0, rejected = 0, evictions = 0, write_throughs = 0;
};

class RowCache {
 public:
  // Caches rows [first_row, first_row + num_rows) in about `capacity` slots (rounded down to
  // whole sets; at least one). `cold` must outlive the cache.
  static StatusOr<std::unique_ptr<RowCache>> Create(uint64_t first_row, uint64_t num_rows, uint64_t capacity,
                                                    size_t value_bytes, size_t state_bytes, ColdStore* cold,
                                                    const RowCacheOptions& options);

  // DRAM bytes one cached row costs (slot, optimizer state, bookkeeping).
  static size_t BytesPerSlot(size_t value_bytes, size_t state_bytes) {
    return SlotLayout::For(value_bytes + 8).stride + state_bytes + kMetaBytes;
  }

  uint64_t sets() const { return sets_; }
  uint32_t ways() const { return ways_; }
  const RowArena& arena() const { return *arena_; }
  RowCacheStats stats() const;

  // Copies each row's value at rest into out (value_bytes each, request order), from DRAM or
  // from the cold tier (one MultiGet for all misses, which may then be admitted). Rows stored
  // nowhere are listed in `untouched` (their bytes in out are unspecified): the caller computes
  // their initial value. REQUIRES: every row in range.
  Status Gather(std::span<const uint64_t> rows, uint8_t* out, std::vector<uint32_t>* untouched);

  // Holds `row` (resident or not) for one write: fn runs with the row's current image and may
  // change it; its RowRef::version is then published. A row that was not resident is admitted
  // or written through to the cold tier. Returns the cold tier's error if it fails (then this
  // row's write may be lost; rows written earlier stay).
  Status Write(uint64_t row, RowFn fn);

  // Calls fn(row, version, value, state) for every row stored (DRAM, then the cold tier), each a
  // consistent image, none older than it was at the call; a row may be reported twice (newer
  // second) if it was evicted meanwhile, never an older image after a newer one.
  // Only rows in [first, first + count) when given.
  Status ForEachStored(const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn,
                       uint64_t first = 0, uint64_t count = UINT64_MAX) const;
  // The shard moved away (RowArena::Retire); ForEachStored reports nothing afterwards.
  void Retire() { arena_->Retire(); }

 private:
  RowCache(uint64_t first_row, uint64_t num_rows, uint64_t sets, uint32_t ways, size_t value_bytes,
           size_t state_bytes, ColdStore* cold, std::unique_ptr<RowArena> arena, AdmissionPolicy policy);

  static constexpr size_t kMetaBytes = 24;  // Row version, LRU tick, dirty flag.
  static constexpr int kStripes = 4096;

  uint64_t SetOf(uint64_t row) const { return (row - first_row_) % sets_; }
  std::mutex& StripeOf(uint64_t set) const { return stripes_[set % kStripes].mu; }
  std::atomic<uint64_t>& StripeSeq(uint64_t set) const { return stripes_[set % kStripes].cold_writes; }
  // Reads a resident row lock-free; false if it is not resident.
  bool ReadResident(uint64_t row, uint8_t* out) const;
  // REQUIRES: the set's stripe is held. The way holding `row`, or -1.
  int Find(uint64_t set, uint64_t row) const;
  // REQUIRES: the set's stripe is held. An empty way, else the least recently used one.
  uint32_t Victim(uint64_t set) const;
  // REQUIRES: the set's stripe is held. Whether `row` should replace the row in `slot`.
  bool Admit(uint64_t row, uint64_t slot);
  // REQUIRES: the set's stripe is held. Stores the slot's row if dirty, then installs `row`.
  Status Install(uint64_t set, uint64_t slot, uint64_t row, uint64_t version, const uint8_t* value,
                 const uint8_t* state, bool dirty);
  // Admits a row read from the cold tier, unless its set changed since `seq` was read.
  Status MaybeAdmit(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state, uint64_t seq);

  uint64_t* meta(uint64_t slot) const;
  uint64_t tag(uint64_t slot) const;
  void Touch(uint64_t slot) const;

  const uint64_t first_row_, num_rows_, sets_;
  const uint32_t ways_;
  const size_t value_bytes_, state_bytes_;
  ColdStore* const cold_;
  std::unique_ptr<RowArena> arena_;
  const AdmissionPolicy policy_;
  FrequencySketch sketch_;
  struct alignas(64) Stripe {
    std::mutex mu;
    std::atomic<uint64_t> cold_writes{0};  // Bumped by every cold-tier write of the stripe's sets.
  };
  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<uint64_t> clock_{1};  // LRU ticks: one per batch.
  mutable std::atomic<uint64_t> hits_{0}, misses_{0};
  std::atomic<uint64_t> admitted_{0}, rejected_{0}, evictions_{0}, write_throughs_{0};
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_ROW_CACHE_H_
