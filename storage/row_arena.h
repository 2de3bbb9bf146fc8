// RowArena: fixed-width row slots with per-row version words, plus per-row optimizer state.
//
// The value slots (engram/row_slot.h layout) live in one region that a transport may register
// for one-sided reads; optimizer state lives in a second, private region with the same slot
// index. Readers copy values without locks and detect torn copies by the version words;
// writers of the same slot exclude each other through the head version word (odd = locked), so
// no other lock exists per row.
//
// Thread-safety: all methods may be called concurrently from any thread.
#ifndef ENGRAM_STORAGE_ROW_ARENA_H_
#define ENGRAM_STORAGE_ROW_ARENA_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "engram/row_slot.h"
#include "engram/status.h"
#include "storage/memory.h"

namespace engram::storage {

struct RowArenaOptions {
  // Where memory comes from. nullptr: DefaultArenaAllocator() (lazily committed mmap).
  ArenaAllocator* allocator = nullptr;
  // Huge pages for the value region. Default kTransparent: fewer TLB misses on random gathers;
  // the first write to a 2 MiB region commits all of it.
  HugePages huge_pages = HugePages::kTransparent;
};

class RowArena {
 public:
  // `value_bytes` per row value, `state_bytes` per row of optimizer state (may be 0).
  static StatusOr<std::unique_ptr<RowArena>> Create(uint64_t num_slots, size_t value_bytes,
                                                    size_t state_bytes,
                                                    const RowArenaOptions& options);

  uint64_t num_slots() const { return num_slots_; }
  const SlotLayout& layout() const { return layout_; }
  size_t state_bytes() const { return state_bytes_; }
  // The value region, for registration with a transport. Slot i starts at i * layout().stride.
  const MemoryRegion& value_region() const { return values_; }

  // Copies slot `slot`'s value bytes into out[0, value_bytes) consistently, retrying while a
  // writer holds the slot. Returns the version read; 0 means untouched (out then holds zeros,
  // not the initial value). REQUIRES: slot < num_slots(). Never blocks on I/O; spins (yielding)
  // only while a writer is inside the same slot.
  uint64_t Read(uint64_t slot, uint8_t* out) const;

  // Hints the CPU to bring a slot (value and state) into cache before it is read or written.
  void Prefetch(uint64_t slot) const {
    __builtin_prefetch(slot_ptr(slot), 1);
    if (state_bytes_ > 0) __builtin_prefetch(static_cast<const uint8_t*>(state_.data()) + slot * state_bytes_, 1);
  }

  // The current head version word of a slot (0 = untouched).
  uint64_t version(uint64_t slot) const;

  // Exclusive access to one slot for a writer. Acquired on construction (spinning while another
  // writer holds the slot), published on destruction: readers then see the new value with the
  // version advanced by 2. Neither copyable nor movable.
  class Writer {
   public:
    Writer(RowArena* arena, uint64_t slot);
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // The version before this write; 0 means the row was untouched (value and state are zero
    // bytes and the caller must materialise the initial value first).
    uint64_t previous_version() const { return prev_; }
    uint8_t* value() const { return slot_ + SlotLayout::kValueOffset; }
    uint8_t* state() const { return state_; }
    // The version readers will see once this write is published.
    uint64_t version() const { return publish_; }
    // Publishes `v` instead of previous_version() + 2: recovery restores a logged row with its
    // logged version; 0 returns the row to untouched (the caller zeroed value and state).
    // REQUIRES: v even.
    void PublishAs(uint64_t v) { publish_ = v; }

   private:
    RowArena* arena_;
    uint8_t* slot_;
    uint8_t* state_;
    size_t tail_offset_;
    size_t value_bytes_;
    uint64_t prev_;
    uint64_t publish_;
  };

  // Copies a row's value and optimizer state as one consistent snapshot (checkpoints): excludes
  // writers of the slot for the copy without changing its version, so readers are not
  // disturbed beyond a retry. Returns the version (0: untouched; then nothing is copied).
  // `state_out` may be nullptr when state_bytes() == 0.
  uint64_t Snapshot(uint64_t slot, uint8_t* value_out, uint8_t* state_out) const;

  // A slot's optimizer state bytes, for callers that synchronise writers of the slot by other
  // means (storage/row_cache.h holds a lock per set). nullptr when state_bytes() == 0.
  uint8_t* state_ptr(uint64_t slot) const {
    return state_bytes_ ? static_cast<uint8_t*>(state_.data()) + slot * state_bytes_ : nullptr;
  }

  // The arena's rows belong to another node now: if its memory is exposed to one-sided readers,
  // every slot's head and tail become kSlotRetired (waiting out a writer inside a slot), so
  // those readers fall back to the server. Afterwards Snapshot() reports nothing. REQUIRES: no
  // new writers.
  void Retire();
  bool retired() const { return retired_.load(std::memory_order_acquire); }

  // Number of slots that were ever written (approximate under concurrency).
  uint64_t touched_slots() const { return touched_.load(std::memory_order_relaxed); }

 private:
  RowArena(uint64_t n, SlotLayout layout, size_t state_bytes, MemoryRegion values, MemoryRegion state)
      : num_slots_(n), layout_(layout), state_bytes_(state_bytes), values_(std::move(values)),
        state_(std::move(state)) {}
  uint8_t* slot_ptr(uint64_t slot) const {
    return static_cast<uint8_t*>(values_.data()) + slot * layout_.stride;
  }

  uint64_t num_slots_;
  SlotLayout layout_;
  size_t state_bytes_;
  MemoryRegion values_;
  MemoryRegion state_;
  std::atomic<uint64_t> touched_{0};
  std::atomic<bool> retired_{false};
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_ROW_ARENA_H_
