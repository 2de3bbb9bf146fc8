#include "storage/row_arena.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace engram::storage {
namespace {

std::unique_ptr<RowArena> MakeArena(uint64_t slots, size_t value_bytes, size_t state_bytes = 0) {
  auto a = RowArena::Create(slots, value_bytes, state_bytes, {});
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return std::move(a).value();
}

TEST(RowArenaTest, UntouchedSlotReadsVersionZero) {
  auto arena = MakeArena(1000, 264);
  std::vector<uint8_t> out(264, 0xAB);
  EXPECT_EQ(arena->Read(999, out.data()), 0u);
  EXPECT_EQ(out, std::vector<uint8_t>(264, 0));
  EXPECT_EQ(arena->touched_slots(), 0u);
}

TEST(RowArenaTest, EachWriteAdvancesTheVersionByTwo) {
  auto arena = MakeArena(4, 12, 8);
  for (int i = 1; i <= 3; ++i) {
    RowArena::Writer w(arena.get(), 2);
    EXPECT_EQ(w.previous_version(), uint64_t(2 * (i - 1)));
    std::memset(w.value(), i, 12);
    std::memset(w.state(), i, 8);
  }
  std::vector<uint8_t> out(12);
  EXPECT_EQ(arena->Read(2, out.data()), 6u);
  EXPECT_EQ(out, std::vector<uint8_t>(12, 3));
  EXPECT_EQ(arena->touched_slots(), 1u);
}

TEST(RowArenaTest, SlotStrideIsPaddedAndHoldsVersionsAndChecksum) {
  auto arena = MakeArena(2, 13);
  EXPECT_EQ(arena->layout().stride, 16u + 24u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(arena->value_region().data()) % 64, 0u);
}

TEST(RowArenaTest, AllocatorFailureIsReportedNotFatal) {
  class FailingAllocator : public ArenaAllocator {
   public:
    StatusOr<MemoryRegion> Allocate(size_t, HugePages) override { return Status::ResourceExhausted("no memory"); }
  } failing;
  RowArenaOptions opts;
  opts.allocator = &failing;
  auto a = RowArena::Create(10, 8, 0, opts);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Code::kResourceExhausted);
}

TEST(RowArenaTest, CustomAllocatorProvidesTheValueRegion) {
  class CountingAllocator : public ArenaAllocator {
   public:
    StatusOr<MemoryRegion> Allocate(size_t bytes, HugePages hp) override {
      ++calls;
      return MmapAllocator().Allocate(bytes, hp);
    }
    int calls = 0;
  } counting;
  RowArenaOptions opts;
  opts.allocator = &counting;
  auto a = RowArena::Create(10, 8, 16, opts);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(counting.calls, 1);  // Values only: optimizer state is never exported.
}

// Writers fill the whole value with one repeated 64-bit word; a consistent copy therefore has
// all words equal. Lock-free readers (RowArena::Read) and raw slot copies classified as a
// one-sided reader would (ClassifySlotCopy) must never accept a mixed value.
TEST(RowArenaTest, ConcurrentWritersAndReadersNeverObserveATornRow) {
  constexpr size_t kWords = 33;  // 264 bytes, the Flash row.
  auto arena = MakeArena(2, kWords * 8);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn_raw{0}, accepted_raw{0}, reads{0};
  std::atomic<int> failures{0};
  auto writer = [&](uint64_t seed) {
    for (uint64_t i = 0; i < 200000 && !stop; ++i) {
      RowArena::Writer w(arena.get(), 1);
      const uint64_t word = seed * 1000003 + i;
      for (size_t k = 0; k < kWords; ++k) std::memcpy(w.value() + 8 * k, &word, 8);
    }
  };
  auto all_equal = [](const uint8_t* v) {
    uint64_t first;
    std::memcpy(&first, v, 8);
    for (size_t k = 1; k < kWords; ++k) {
      uint64_t w;
      std::memcpy(&w, v + 8 * k, 8);
      if (w != first) return false;
    }
    return true;
  };
  auto reader = [&] {
    std::vector<uint8_t> out(kWords * 8), slot(arena->layout().stride);
    const uint8_t* base = static_cast<const uint8_t*>(arena->value_region().data()) + arena->layout().stride;
    while (!stop) {
      arena->Read(1, out.data());
      if (!all_equal(out.data())) failures++;
      // A one-sided reader: an unordered copy of the whole slot, then classification.
      std::memcpy(slot.data(), base, slot.size());
      const SlotCopyState st = ClassifySlotCopy(arena->layout(), slot.data());
      if (st == SlotCopyState::kTorn) {
        torn_raw++;
      } else if (st == SlotCopyState::kConsistent) {
        accepted_raw++;
        if (!all_equal(slot.data() + SlotLayout::kValueOffset)) failures++;
      }
      reads++;
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(writer, 1);
  threads.emplace_back(writer, 2);
  std::thread r1(reader), r2(reader);
  threads[0].join();
  threads[1].join();
  stop = true;
  r1.join();
  r2.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(accepted_raw.load(), 0u);
  std::vector<uint8_t> out(kWords * 8);
  EXPECT_EQ(arena->Read(1, out.data()), 2u * 400000u);  // Every write counted exactly once.
}

TEST(RowArenaTest, ClassifySlotCopyRejectsOddMismatchedAndBadChecksum) {
  auto arena = MakeArena(1, 16);
  {
    RowArena::Writer w(arena.get(), 0);
    std::memset(w.value(), 7, 16);
  }
  const SlotLayout& l = arena->layout();
  std::vector<uint8_t> slot(l.stride);
  std::memcpy(slot.data(), arena->value_region().data(), l.stride);
  EXPECT_EQ(ClassifySlotCopy(l, slot.data()), SlotCopyState::kConsistent);
  auto copy = slot;
  copy[SlotLayout::kValueOffset + 3] ^= 1;  // A value byte from another write.
  EXPECT_EQ(ClassifySlotCopy(l, copy.data()), SlotCopyState::kTorn);
  copy = slot;
  copy[0] = 3;  // Head odd.
  EXPECT_EQ(ClassifySlotCopy(l, copy.data()), SlotCopyState::kTorn);
  copy = slot;
  copy[l.tail_offset()] = 4;  // Tail from a later write.
  EXPECT_EQ(ClassifySlotCopy(l, copy.data()), SlotCopyState::kTorn);
  std::vector<uint8_t> zeros(l.stride, 0);
  EXPECT_EQ(ClassifySlotCopy(l, zeros.data()), SlotCopyState::kUntouched);
}

}  // namespace
}  // namespace engram::storage
