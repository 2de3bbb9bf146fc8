// The slot a row's value occupies in a server's arena, and the version-word protocol that lets
// a reader copy it without a lock (in-process, or one-sided over UCX) and detect a torn copy.
//
// Slot layout (all offsets multiples of 8):
//   [0, 8)                 head version (uint64, little endian)
//   [8, 8 + padded value)  the row's value bytes at rest (see TableSchema::value_bytes())
//   [stride - 8, stride)   tail version
// Version 0 on both words means "never written": the row holds its deterministic initial value
// (engram/init.h), not the (zero) bytes in the slot. A writer moves head and tail from even v to
// odd v+1 and then to even v+2; see the ordering argument in SlotWriter (storage/row_arena.h).
// A copy taken in address order (head, value, tail) is consistent iff head == tail and even.
#ifndef ENGRAM_ROW_SLOT_H_
#define ENGRAM_ROW_SLOT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace engram {

struct SlotLayout {
  size_t value_bytes = 0;  // Unpadded value bytes.
  size_t stride = 0;       // Bytes per slot, a multiple of 8.

  static SlotLayout For(size_t value_bytes) {
    const size_t padded = (value_bytes + 7) / 8 * 8;
    return {value_bytes, padded + 16};
  }
  static constexpr size_t kValueOffset = 8;
  size_t tail_offset() const { return stride - 8; }
};

enum class SlotCopyState : uint8_t {
  kConsistent = 0,  // The value bytes are a row some completed write produced.
  kUntouched = 1,   // Version 0: the row still has its initial value; compute it.
  kTorn = 2,        // A write overlapped the copy; copy again.
};

// Classifies a copy of a whole slot (e.g. fetched with one ucp_get). Thread-safe (pure).
inline SlotCopyState ClassifySlotCopy(const SlotLayout& layout, const uint8_t* slot_copy) {
  uint64_t head, tail;
  std::memcpy(&head, slot_copy, 8);
  std::memcpy(&tail, slot_copy + layout.tail_offset(), 8);
  if (head != tail || (head & 1u) != 0) return SlotCopyState::kTorn;
  return head == 0 ? SlotCopyState::kUntouched : SlotCopyState::kConsistent;
}

}  // namespace engram

#endif  // ENGRAM_ROW_SLOT_H_
