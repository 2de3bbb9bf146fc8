// The slot a row's value occupies in a server's arena, and the version-word protocol that lets
// a reader copy it without a lock (in-process, or one-sided over UCX) and detect a torn copy.
//
// Slot layout (all offsets multiples of 8):
//   [0, 8)                   head version (uint64, little endian)
//   [8, 8 + padded value)    the row's value bytes at rest (see TableSchema::value_bytes())
//   [stride - 16, stride-8)  checksum of the value bytes, seeded with the version
//   [stride - 8, stride)     tail version
// Version 0 on both words means "never written": the row holds its deterministic initial value
// (engram/init.h), not the (zero) bytes in the slot. A writer moves head and tail from even v to
// odd v+1 and then to even v+2 (storage/row_arena.h).
//
// Two kinds of reader:
// - Readers with coherent loads on the slot (in-process, or another process on the same host
//   that mapped the arena's shared memory) load head (acquire), copy the value, fence, load
//   tail: a classic seqlock, valid whatever order the copy touches bytes in (SeqlockCopy).
// - One-sided readers (one ucp_get of the whole slot, shared memory or RDMA) have no ordering
//   inside the copy, so a version check alone cannot prove the copy whole. They accept a copy
//   iff head == tail, even, and the checksum of the copied value with that version matches.
#ifndef ENGRAM_ROW_SLOT_H_
#define ENGRAM_ROW_SLOT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>

namespace engram {

// One of a slot's 8-byte words (versions, row tags), accessed atomically.
inline std::atomic_ref<uint64_t> SlotWord(const uint8_t* p) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(const_cast<uint8_t*>(p)));
}

// Waiting for a writer that holds a slot: pause, then yield once it takes long.
inline void CpuRelax(int& spins) {
  if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

struct SlotLayout {
  size_t value_bytes = 0;  // Unpadded value bytes.
  size_t stride = 0;       // Bytes per slot, a multiple of 8.

  static SlotLayout For(size_t value_bytes) {
    const size_t padded = (value_bytes + 7) / 8 * 8;
    return {value_bytes, padded + 24};
  }
  static constexpr size_t kValueOffset = 8;
  size_t checksum_offset() const { return stride - 16; }
  size_t tail_offset() const { return stride - 8; }
};

// 64-bit checksum of a value, seeded with its version: four independent multiply-xor lanes
// (fast enough for every pull), folded at the end. Not cryptographic: it detects tearing.
inline uint64_t SlotChecksum(const uint8_t* value, size_t n, uint64_t version) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  uint64_t lane[4] = {version ^ 0x243f6a8885a308d3ULL, version + kMul, ~version, n};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t w;
      std::memcpy(&w, value + i + 8 * k, 8);
      lane[k] = (lane[k] ^ w) * kMul;
      lane[k] ^= lane[k] >> 29;
    }
  }
  for (int k = 0; i < n; i += 8, ++k) {
    uint64_t w = 0;
    std::memcpy(&w, value + i, n - i < 8 ? n - i : 8);
    lane[k & 3] = (lane[k & 3] ^ w) * kMul;
    lane[k & 3] ^= lane[k & 3] >> 29;
  }
  uint64_t h = lane[0];
  for (int k = 1; k < 4; ++k) h = (h ^ (lane[k] * kMul)) * 0xff51afd7ed558ccdULL, h ^= h >> 32;
  return h;
}

// Head and tail of every slot of an arena whose shard moved to another node: odd (no reader
// accepts it) and distinct from any writer's lock, so one-sided readers give up at once and ask
// the server, which answers with the new shard map.
inline constexpr uint64_t kSlotRetired = ~uint64_t{0};

enum class SlotCopyState : uint8_t {
  kConsistent = 0,  // The value bytes are a row some completed write produced.
  kUntouched = 1,   // Version 0: the row still has its initial value; compute it.
  kTorn = 2,        // A write overlapped the copy; copy again.
};

// Classifies the words of one slot copied without ordering guarantees (possibly into
// different buffers): head, tail, checksum and the value bytes copied. Thread-safe (pure).
inline SlotCopyState ClassifyCopiedWords(uint64_t head, uint64_t tail, uint64_t sum, const uint8_t* value,
                                         size_t value_bytes) {
  if (head != tail || (head & 1u) != 0) return SlotCopyState::kTorn;
  if (head == 0) return SlotCopyState::kUntouched;
  return sum == SlotChecksum(value, value_bytes, head) ? SlotCopyState::kConsistent : SlotCopyState::kTorn;
}

// Classifies a copy of a whole slot (e.g. fetched with one ucp_get).
inline SlotCopyState ClassifySlotCopy(const SlotLayout& layout, const uint8_t* slot_copy) {
  uint64_t head, tail, sum;
  std::memcpy(&head, slot_copy, 8);
  std::memcpy(&tail, slot_copy + layout.tail_offset(), 8);
  std::memcpy(&sum, slot_copy + layout.checksum_offset(), 8);
  return ClassifyCopiedWords(head, tail, sum, slot_copy + SlotLayout::kValueOffset, layout.value_bytes);
}

// One seqlock copy of a slot's value into `dst` by a reader with coherent loads on `slot` (the
// arena's own process, or a process that mapped it). Returns the version copied (even, with the
// value in `dst`: 0 means untouched, compute the initial value), or an odd number when a writer
// overlapped the copy (copy again). Never spins: the caller chooses how to back off.
inline uint64_t SeqlockCopy(const SlotLayout& layout, const uint8_t* slot, uint8_t* dst) {
  const uint64_t head = SlotWord(slot).load(std::memory_order_acquire);
  if ((head & 1u) != 0) return head;
  std::memcpy(dst, slot + SlotLayout::kValueOffset, layout.value_bytes);
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t tail = SlotWord(slot + layout.tail_offset()).load(std::memory_order_relaxed);
  return tail == head ? head : (head | 1u);
}

// SeqlockCopy for a row-cache slot (storage/row_cache.h), whose payload is an 8-byte row tag
// followed by the value: copies the tag into *tag and the value (layout.value_bytes - 8 bytes)
// into `dst`, with the same return convention. The tag is checked by the caller.
inline uint64_t SeqlockCopyTagged(const SlotLayout& layout, const uint8_t* slot, uint64_t* tag, uint8_t* dst) {
  const uint64_t head = SlotWord(slot).load(std::memory_order_acquire);
  if ((head & 1u) != 0) return head;
  std::memcpy(tag, slot + SlotLayout::kValueOffset, 8);
  std::memcpy(dst, slot + SlotLayout::kValueOffset + 8, layout.value_bytes - 8);
  std::atomic_thread_fence(std::memory_order_acquire);
  const uint64_t tail = SlotWord(slot + layout.tail_offset()).load(std::memory_order_relaxed);
  return tail == head ? head : (head | 1u);
}

}  // namespace engram

#endif  // ENGRAM_ROW_SLOT_H_
