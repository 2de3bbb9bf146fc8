// RowCache: set-associative DRAM cache of a shard's rows over a ColdStore.
#include "storage/row_cache.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

namespace engram::storage {

StatusOr<std::unique_ptr<RowCache>> RowCache::Create(uint64_t first_row, uint64_t num_rows, uint64_t capacity,
                                                     size_t value_bytes, size_t state_bytes, ColdStore* cold,
                                                     const RowCacheOptions& options) {
  if (cold == nullptr) return Status::InvalidArgument("a row cache needs a cold store");
  if (options.ways == 0 || options.ways > 64) return Status::InvalidArgument("row cache ways must be 1..64");
  if (cold->value_bytes() != value_bytes || cold->state_bytes() != state_bytes) {
    return Status::InvalidArgument("row cache and cold store disagree on the row size");
  }
  const uint64_t sets = std::max<uint64_t>(1, std::min(capacity, num_rows) / options.ways);
  // The tag travels inside the checksummed payload, in front of the value.
  ENGRAM_ASSIGN_OR_RETURN(auto arena, RowArena::Create(sets * options.ways, value_bytes + 8, state_bytes + kMetaBytes,
                                                       options.arena));
  return std::unique_ptr<RowCache>(new RowCache(first_row, num_rows, sets, options.ways, value_bytes, state_bytes,
                                                cold, std::move(arena), options.admission));
}

RowCache::RowCache(uint64_t first_row, uint64_t num_rows, uint64_t sets, uint32_t ways, size_t value_bytes,
                   size_t state_bytes, ColdStore* cold, std::unique_ptr<RowArena> arena, AdmissionPolicy policy)
    : first_row_(first_row), num_rows_(num_rows), sets_(sets), ways_(ways), value_bytes_(value_bytes),
      state_bytes_(state_bytes), cold_(cold), arena_(std::move(arena)), policy_(policy),
      sketch_(sets * ways), stripes_(new Stripe[kStripes]) {}

RowCacheStats RowCache::stats() const {
  RowCacheStats s;
  s.capacity = sets_ * ways_;
  s.resident = arena_->touched_slots();
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.admitted = admitted_.load(std::memory_order_relaxed);
  s.rejected = rejected_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.write_throughs = write_throughs_.load(std::memory_order_relaxed);
  return s;
}

uint64_t* RowCache::meta(uint64_t slot) const { return reinterpret_cast<uint64_t*>(arena_->state_ptr(slot)); }

uint64_t RowCache::tag(uint64_t slot) const {
  uint8_t* p = static_cast<uint8_t*>(arena_->value_region().data()) + slot * arena_->layout().stride;
  return SlotWord(p + SlotLayout::kValueOffset).load(std::memory_order_relaxed);
}

void RowCache::Touch(uint64_t slot) const {
  std::atomic_ref<uint64_t>(meta(slot)[1]).store(clock_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

bool RowCache::ReadResident(uint64_t row, uint8_t* out) const {
  const uint64_t base = SetOf(row) * ways_;
  for (uint32_t w = 0; w < ways_; ++w) {
    const uint64_t slot = base + w;
    if (tag(slot) != row) continue;
    // The tag may change under us; only the copy's own tag (validated with the value) counts.
    const uint8_t* p = static_cast<const uint8_t*>(arena_->value_region().data()) + slot * arena_->layout().stride;
    uint64_t t, v;
    for (int spins = 0; ((v = SeqlockCopyTagged(arena_->layout(), p, &t, out)) & 1u) != 0;) CpuRelax(spins);
    if (v == 0) continue;    // Empty slot (its zero tag matched row 0).
    if (t != row) continue;  // Reused for another row since the tag was read.
    Touch(slot);
    return true;
  }
  return false;
}

int RowCache::Find(uint64_t set, uint64_t row) const {
  for (uint32_t w = 0; w < ways_; ++w) {
    const uint64_t slot = set * ways_ + w;
    if (arena_->version(slot) != 0 && tag(slot) == row) return static_cast<int>(w);
  }
  return -1;
}

uint32_t RowCache::Victim(uint64_t set) const {
  // kLru: the least recently used way. kTinyLfu: the way whose row the sketch counts least
  // often (recency breaks ties), so the set keeps its most popular rows.
  uint32_t best = 0;
  uint64_t best_key = UINT64_MAX;
  for (uint32_t w = 0; w < ways_; ++w) {
    const uint64_t slot = set * ways_ + w;
    if (arena_->version(slot) == 0) return w;
    const uint64_t tick = std::atomic_ref<uint64_t>(meta(slot)[1]).load(std::memory_order_relaxed);
    const uint64_t freq = policy_ == AdmissionPolicy::kTinyLfu ? sketch_.Estimate(tag(slot)) : 0;
    const uint64_t key = (freq << 48) | std::min<uint64_t>(tick, (uint64_t{1} << 48) - 1);
    if (key < best_key) best = w, best_key = key;
  }
  return best;
}

bool RowCache::Admit(uint64_t row, uint64_t slot) {
  if (arena_->version(slot) == 0 || policy_ == AdmissionPolicy::kLru) return true;
  return sketch_.Estimate(row) > sketch_.Estimate(tag(slot));
}

Status RowCache::Install(uint64_t set, uint64_t slot, uint64_t row, uint64_t version, const uint8_t* value,
                         const uint8_t* state, bool dirty) {
  if (arena_->version(slot) != 0) {
    const uint64_t* m = meta(slot);
    if (m[2] != 0) {  // The victim's newest image exists only here: store it before reuse.
      const uint8_t* p = static_cast<uint8_t*>(arena_->value_region().data()) + slot * arena_->layout().stride;
      ENGRAM_RETURN_IF_ERROR(cold_->Put(tag(slot), m[0], p + SlotLayout::kValueOffset + 8,
                                        state_bytes_ > 0 ? arena_->state_ptr(slot) + kMetaBytes : nullptr));
      StripeSeq(set).fetch_add(1, std::memory_order_release);
    }
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  RowArena::Writer w(arena_.get(), slot);
  SlotWord(w.value()).store(row, std::memory_order_relaxed);
  std::memcpy(w.value() + 8, value, value_bytes_);
  uint64_t* m = reinterpret_cast<uint64_t*>(w.state());
  if (state_bytes_ > 0) std::memcpy(w.state() + kMetaBytes, state, state_bytes_);
  m[0] = version;
  m[2] = dirty ? 1 : 0;
  Touch(slot);
  return Status::OK();
}

Status RowCache::MaybeAdmit(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state, uint64_t seq) {
  const uint64_t set = SetOf(row);
  std::lock_guard<std::mutex> lock(StripeOf(set));
  // A cold write since the read may have made this image stale; the row stays cold this time.
  if (StripeSeq(set).load(std::memory_order_acquire) != seq) return Status::OK();
  if (Find(set, row) >= 0) return Status::OK();
  const uint64_t slot = set * ways_ + Victim(set);
  if (!Admit(row, slot)) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return Status::OK();
  }
  admitted_.fetch_add(1, std::memory_order_relaxed);
  return Install(set, slot, row, version, value, state, /*dirty=*/false);
}

Status RowCache::Gather(std::span<const uint64_t> rows, uint8_t* out, std::vector<uint32_t>* untouched) {
  clock_.fetch_add(1, std::memory_order_relaxed);
  std::vector<uint32_t> miss;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (policy_ == AdmissionPolicy::kTinyLfu) sketch_.Record(rows[i]);
    if (!ReadResident(rows[i], out + i * value_bytes_)) miss.push_back(static_cast<uint32_t>(i));
  }
  hits_.fetch_add(rows.size() - miss.size(), std::memory_order_relaxed);
  if (miss.empty()) return Status::OK();
  misses_.fetch_add(miss.size(), std::memory_order_relaxed);
  const size_t n = miss.size();
  std::vector<uint64_t> ids(n), seqs(n), versions(n);
  for (size_t k = 0; k < n; ++k) {
    ids[k] = rows[miss[k]];
    seqs[k] = StripeSeq(SetOf(ids[k])).load(std::memory_order_acquire);
  }
  std::vector<uint8_t> values(n * value_bytes_), states(n * state_bytes_);
  ENGRAM_RETURN_IF_ERROR(cold_->MultiGet(ids, versions.data(), values.data(), states.data()));
  for (size_t k = 0; k < n; ++k) {
    if (versions[k] == 0) {
      untouched->push_back(miss[k]);
      continue;
    }
    const uint8_t* v = values.data() + k * value_bytes_;
    std::memcpy(out + size_t{miss[k]} * value_bytes_, v, value_bytes_);
    ENGRAM_RETURN_IF_ERROR(MaybeAdmit(ids[k], versions[k], v, states.data() + k * state_bytes_, seqs[k]));
  }
  return Status::OK();
}

Status RowCache::Write(uint64_t row, RowFn fn) {
  const uint64_t set = SetOf(row);
  std::lock_guard<std::mutex> lock(StripeOf(set));
  // Writes are not counted as accesses: a trainer pushes the rows it pulled (already counted),
  // and a bulk load would otherwise make every row look used once.
  if (const int way = Find(set, row); way >= 0) {
    hits_.fetch_add(1, std::memory_order_relaxed);
    const uint64_t slot = set * ways_ + static_cast<uint64_t>(way);
    {
      RowArena::Writer w(arena_.get(), slot);
      uint64_t* m = reinterpret_cast<uint64_t*>(w.state());
      RowRef r{w.value() + 8, state_bytes_ > 0 ? w.state() + kMetaBytes : nullptr, m[0], m[0] + 2};
      fn(r);
      if (r.version != m[0]) {
        m[0] = r.version;
        m[2] = 1;
      }
    }
    Touch(slot);
    return Status::OK();
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  std::vector<uint8_t> value(value_bytes_), state(state_bytes_);
  ENGRAM_ASSIGN_OR_RETURN(const uint64_t prev, cold_->Get(row, value.data(), state.data()));
  RowRef r{value.data(), state_bytes_ > 0 ? state.data() : nullptr, prev, prev + 2};
  fn(r);
  if (r.version == prev) return Status::OK();  // The writer changed nothing.
  const uint64_t slot = set * ways_ + Victim(set);
  if (Admit(row, slot)) {
    admitted_.fetch_add(1, std::memory_order_relaxed);
    return Install(set, slot, row, r.version, value.data(), state.data(), /*dirty=*/true);
  }
  rejected_.fetch_add(1, std::memory_order_relaxed);
  write_throughs_.fetch_add(1, std::memory_order_relaxed);
  Status s = cold_->Put(row, r.version, value.data(), state.data());
  StripeSeq(set).fetch_add(1, std::memory_order_release);
  return s;
}

Status RowCache::ForEachStored(const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn,
                               uint64_t first, uint64_t count) const {
  if (arena_->retired()) return Status::OK();
  const uint64_t lo = std::max(first, first_row_);
  const uint64_t hi = std::min(count > UINT64_MAX - first ? UINT64_MAX : first + count, first_row_ + num_rows_);
  if (lo >= hi) return Status::OK();
  auto in_range = [&](uint64_t row) { return row >= lo && row < hi; };
  // DRAM first, then a cold-tier snapshot taken afterwards: a row evicted before the DRAM pass
  // reached its set was stored before the snapshot (see the header's invariant).
  std::unordered_map<uint64_t, uint64_t> seen;  // Row -> version reported from DRAM.
  const size_t row_bytes = value_bytes_ + state_bytes_;
  std::vector<uint8_t> buf(ways_ * row_bytes);
  std::vector<std::pair<uint64_t, uint64_t>> in_set;  // (row, version) per copied way.
  for (uint64_t set = 0; set < sets_; ++set) {
    in_set.clear();
    {
      std::lock_guard<std::mutex> lock(StripeOf(set));
      for (uint32_t w = 0; w < ways_; ++w) {
        const uint64_t slot = set * ways_ + w;
        if (arena_->version(slot) == 0 || !in_range(tag(slot))) continue;
        const uint8_t* p = static_cast<uint8_t*>(arena_->value_region().data()) + slot * arena_->layout().stride;
        uint8_t* dst = buf.data() + in_set.size() * row_bytes;
        std::memcpy(dst, p + SlotLayout::kValueOffset + 8, value_bytes_);
        if (state_bytes_ > 0) std::memcpy(dst + value_bytes_, arena_->state_ptr(slot) + kMetaBytes, state_bytes_);
        in_set.emplace_back(tag(slot), meta(slot)[0]);
      }
    }
    for (size_t k = 0; k < in_set.size(); ++k) {
      const uint8_t* src = buf.data() + k * row_bytes;
      fn(in_set[k].first, in_set[k].second, src, state_bytes_ > 0 ? src + value_bytes_ : nullptr);
      seen.emplace(in_set[k].first, in_set[k].second);
    }
  }
  return cold_->ForEach(lo, hi - lo, [&](uint64_t row, uint64_t v, const uint8_t* value, const uint8_t* state) {
    auto it = seen.find(row);
    if (it == seen.end() || it->second < v) fn(row, v, value, state);
  });
}

}  // namespace engram::storage
