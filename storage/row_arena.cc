// RowArena: version-word protocol for lock-free readers and slot-exclusive writers.
#include "storage/row_arena.h"

#include <atomic>
#include <cstring>
#include <thread>

namespace engram::storage {
namespace {

std::atomic_ref<uint64_t> Word(uint8_t* p) { return SlotWord(p); }

}  // namespace

StatusOr<std::unique_ptr<RowArena>> RowArena::Create(uint64_t num_slots, size_t value_bytes,
                                                     size_t state_bytes,
                                                     const RowArenaOptions& options) {
  if (num_slots == 0) return Status::InvalidArgument("arena needs at least one slot");
  if (value_bytes == 0) return Status::InvalidArgument("arena rows need at least one byte");
  const SlotLayout layout = SlotLayout::For(value_bytes);
  ArenaAllocator* alloc = options.allocator ? options.allocator : DefaultArenaAllocator();
  if (num_slots > (~uint64_t{0}) / layout.stride) return Status::InvalidArgument("arena too large");
  ENGRAM_ASSIGN_OR_RETURN(MemoryRegion values, alloc->Allocate(num_slots * layout.stride, options.huge_pages));
  if (reinterpret_cast<uintptr_t>(values.data()) % 64 != 0) {
    return Status::Internal("arena allocator returned memory not aligned to 64 bytes");
  }
  MemoryRegion state;
  if (state_bytes > 0) {
    // Optimizer state is never read remotely: always the private default allocator.
    ENGRAM_ASSIGN_OR_RETURN(state, DefaultArenaAllocator()->Allocate(num_slots * state_bytes, options.huge_pages));
  }
  return std::unique_ptr<RowArena>(
      new RowArena(num_slots, layout, state_bytes, std::move(values), std::move(state)));
}

uint64_t RowArena::Read(uint64_t slot, uint8_t* out) const {
  const uint8_t* p = slot_ptr(slot);
  int spins = 0;
  for (;;) {
    const uint64_t v = SeqlockCopy(layout_, p, out);
    if ((v & 1u) == 0) return v;
    CpuRelax(spins);
  }
}

uint64_t RowArena::version(uint64_t slot) const { return Word(slot_ptr(slot)).load(std::memory_order_acquire); }

// Ordering: (1) head even v -> odd v+1 by CAS (acquire: excludes other writers);
// (2) tail := v+1, then a release fence, so the odd tail is visible before any value byte
// changes; (3) value/state writes; (4) head := v+2 (release), tail := v+2 (release).
// An in-process reader (head acquire, copy, acquire fence, tail) that sees any byte of this write reads the
// tail after step (2), so it sees tail >= v+1; its head is either <= v (mismatch) or v+2
// (read after the write completed, so the whole value is this write's). Hence head == tail and
// even implies the copy is one write's value. The checksum, stored before head is released,
// serves one-sided readers whose copy has no internal order (engram/row_slot.h).
RowArena::Writer::Writer(RowArena* arena, uint64_t slot)
    : arena_(arena),
      slot_(arena->slot_ptr(slot)),
      state_(arena->state_bytes_ ? static_cast<uint8_t*>(arena->state_.data()) + slot * arena->state_bytes_
                                 : nullptr),
      tail_offset_(arena->layout_.tail_offset()),
      value_bytes_(arena->layout_.value_bytes) {
  auto head = Word(slot_);
  int spins = 0;
  for (;;) {
    uint64_t v = head.load(std::memory_order_relaxed);
    if ((v & 1u) == 0 && head.compare_exchange_weak(v, v + 1, std::memory_order_acquire,
                                                    std::memory_order_relaxed)) {
      prev_ = v;
      break;
    }
    CpuRelax(spins);
  }
  publish_ = prev_ + 2;
  Word(slot_ + tail_offset_).store(prev_ + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  if (prev_ == 0) arena->touched_.fetch_add(1, std::memory_order_relaxed);
}

RowArena::Writer::~Writer() {
  const uint64_t sum = SlotChecksum(slot_ + SlotLayout::kValueOffset, value_bytes_, publish_);
  Word(slot_ + tail_offset_ - 8).store(sum, std::memory_order_relaxed);
  Word(slot_).store(publish_, std::memory_order_release);
  Word(slot_ + tail_offset_).store(publish_, std::memory_order_release);
  if (publish_ == 0 && prev_ != 0) arena_->touched_.fetch_sub(1, std::memory_order_relaxed);
}

// Pin: head even v -> odd v+1 by CAS (writers spin, readers retry), copy, head back to v. The
// tail and the value never change, so a reader that saw head v before the pin and tail v after
// it still read one write's value.
void RowArena::Retire() {
  retired_.store(true, std::memory_order_release);
  if (!values_.exposed()) return;  // Nobody reads it one-sidedly; its pages stay uncommitted.
  for (uint64_t slot = 0; slot < num_slots_; ++slot) {
    uint8_t* p = slot_ptr(slot);
    auto head = Word(p);
    int spins = 0;
    for (uint64_t v = head.load(std::memory_order_relaxed);;) {
      if ((v & 1u) == 0 && head.compare_exchange_weak(v, kSlotRetired, std::memory_order_acq_rel)) break;
      CpuRelax(spins);
      v = head.load(std::memory_order_relaxed);
    }
    Word(p + layout_.tail_offset()).store(kSlotRetired, std::memory_order_release);
  }
}

uint64_t RowArena::Snapshot(uint64_t slot, uint8_t* value_out, uint8_t* state_out) const {
  if (retired()) return 0;
  uint8_t* p = slot_ptr(slot);
  auto head = Word(p);
  int spins = 0;
  uint64_t v;
  for (;;) {
    v = head.load(std::memory_order_relaxed);
    if ((v & 1u) == 0 && head.compare_exchange_weak(v, v + 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      break;
    }
    CpuRelax(spins);
  }
  if (v != 0) {
    std::memcpy(value_out, p + SlotLayout::kValueOffset, layout_.value_bytes);
    if (state_bytes_ > 0) std::memcpy(state_out, static_cast<const uint8_t*>(state_.data()) + slot * state_bytes_, state_bytes_);
  }
  head.store(v, std::memory_order_release);
  return v;
}

}  // namespace engram::storage
