// Shard: the rows [first_row, first_row + num_rows) of one table, held in a RowArena indexed by
// row, or (when the table has a DRAM budget smaller than its rows) in a RowCache: the hot rows in
// DRAM, the rest in a ColdStore (RocksDB).
//
// This is where a row goes on a pull (Gather) and on a push (ApplyGradients). Rows never
// written cost no memory beyond untouched virtual pages and read as their deterministic initial
// value (engram/init.h). Batch calls validate the whole batch before touching any row: a batch
// with one bad row id or one non-finite gradient changes nothing and names the offender.
//
// Thread-safety: every method may be called concurrently. Readers never block writers; two
// writers of the same row serialise on that row's version word only.
#ifndef ENGRAM_STORAGE_SHARD_H_
#define ENGRAM_STORAGE_SHARD_H_

#include <cstdint>
#include <memory>
#include <functional>
#include <span>
#include <vector>

#include "engram/status.h"
#include "engram/table.h"
#include "storage/cold_store.h"
#include "storage/row_arena.h"
#include "storage/row_cache.h"

namespace engram::storage {

struct ShardOptions {
  RowArenaOptions arena;
  // Largest batch a single call accepts (rows); larger batches are refused, not truncated.
  size_t max_batch_rows = size_t{1} << 22;
  // Cold tier: with `cold` set and cache_rows below the shard's rows, the shard keeps about
  // cache_rows rows in DRAM (a RowCache with `cache` options, its slots from `arena`) and the rest in `cold`, which must
  // outlive the shard. Otherwise every row has its DRAM slot.
  ColdStore* cold = nullptr;
  uint64_t cache_rows = 0;
  RowCacheOptions cache;
};

struct ShardStats {
  uint64_t touched_rows = 0;   // Rows ever written (push or put); with a cold tier: DRAM slots in use.
  uint64_t bytes_per_row = 0;  // Value slot + optimizer state bytes of one materialised row.
  bool cached = false;         // Rows beyond the DRAM budget live in the cold tier.
  RowCacheStats cache;         // When cached.
};

// Reusable buffers for ApplyGradients, so that a steady stream of pushes allocates nothing.
// Not thread-safe: one per calling thread.
struct ApplyScratch {
  std::vector<uint32_t> order;
  std::vector<uint64_t> unique_rows;
  std::vector<float> summed;
  std::vector<float> row;
};

// Receives what each row write did, while the row is still held by the writer (so the reports
// of one row arrive in the order its writes happened): the input of the write-ahead log.
// `version` is the row's version after the write.
class RowImageSink {
 public:
  virtual ~RowImageSink() = default;
  // A whole new row image (puts, restores). `state` is nullptr without optimizer state.
  virtual void Add(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) = 0;
  // One optimizer step with the row's summed gradient (dim f32): replaying it on the row's
  // previous version reproduces this one exactly (same code, same inputs, same order).
  virtual void AddGradient(uint64_t row, uint64_t version, const float* grad) = 0;
};

class Shard {
 public:
  // REQUIRES: schema.Validate().ok(); first_row + num_rows <= schema.num_rows.
  static StatusOr<std::unique_ptr<Shard>> Create(const TableSchema& schema, uint64_t first_row,
                                                 uint64_t num_rows, const ShardOptions& options);

  const TableSchema& schema() const { return schema_; }
  uint64_t first_row() const { return first_row_; }
  uint64_t num_rows() const { return num_rows_; }
  // The DRAM slots (a transport registers them for one-sided reads): one per row, or the row
  // cache's slots (layout in storage/row_cache.h) when cached().
  const RowArena& arena() const { return cache_ ? cache_->arena() : *arena_; }
  bool cached() const { return cache_ != nullptr; }
  const RowCache* cache() const { return cache_.get(); }
  ShardStats stats() const;

  // Copies each row's value at rest (schema().value_bytes() each, packed in request order) into
  // out. Untouched rows get their initial value. OutOfRange if any row is not in this shard
  // (then out is unspecified and nothing else changes).
  Status Gather(std::span<const uint64_t> rows, uint8_t* out /* (n, value_bytes) */) const;

  // Gather decoded to f32. InvalidArgument for kBytes tables.
  Status GatherF32(std::span<const uint64_t> rows, float* out /* (n, dim) */) const;

  // Overwrites rows with values at rest (repair, import, tests). Optimizer state is kept; a
  // duplicated row takes its last value. For trainable dtypes the values must be finite.
  Status Put(std::span<const uint64_t> rows, const uint8_t* values /* (n, value_bytes) */,
             RowImageSink* sink = nullptr);

  // Sums the gradients of duplicate rows (in request order), then applies the table's optimizer
  // once per unique row. FailedPrecondition for serving-only tables or optimizer none;
  // InvalidArgument for a non-finite gradient; OutOfRange for a row outside the shard. On any
  // error no row is changed. `scratch` may be nullptr (then buffers are allocated per call).
  Status ApplyGradients(std::span<const uint64_t> rows, const float* grads /* (n, dim) */,
                        ApplyScratch* scratch = nullptr, RowImageSink* sink = nullptr);

  // Recovery: sets a row to a logged after-image if `version` is newer than the row's current
  // version (older or equal images are skipped, so replay is idempotent and order-free).
  // OutOfRange for a row outside the shard; InvalidArgument for an odd or zero version.
  Status Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state);
  // Recovery: replays a logged optimizer step that produced `version`. Skipped (OK) if the row
  // is already at `version` or newer; applied if the row is at version - 2; DataLoss if the
  // row is older (the log lost an update of it).
  Status ReplayGradient(uint64_t row, uint64_t version, const float* grad);

  // Writes a whole row image (value and optimizer state; nullptr value: the row's initial value
  // and fresh state) as a new version, reported to `sink`: restoring a checkpoint in place.
  // OutOfRange for a row outside the shard.
  Status Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, RowImageSink* sink);

  // Calls fn(row, version, value, state) for every touched row, each a consistent snapshot of
  // value and optimizer state (checkpoints). Rows written meanwhile may be seen before or
  // after the write; with a cold tier a row may be reported twice, the newer image second.
  // Fails only if the cold tier cannot be read.
  // Only rows in [first, first + count) when given.
  Status ForEachTouched(const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn,
                        uint64_t first = 0, uint64_t count = UINT64_MAX) const;
  // The shard moved to another node: one-sided readers of its slots fall back to the server
  // from now on (RowArena::Retire) and ForEachTouched reports nothing. REQUIRES: no writers.
  void Retire();
  size_t state_bytes() const { return state_bytes_; }

 private:
  Shard(TableSchema schema, uint64_t first_row, uint64_t num_rows, std::unique_ptr<RowArena> arena,
        std::unique_ptr<RowCache> cache, size_t state_bytes, size_t max_batch)
      : schema_(std::move(schema)), first_row_(first_row), num_rows_(num_rows), arena_(std::move(arena)),
        cache_(std::move(cache)), state_bytes_(state_bytes), max_batch_(max_batch) {}

  Status CheckRows(std::span<const uint64_t> rows) const;
  Status CheckRow(uint64_t row) const;
  // Writes the initial value and state into a held untouched row.
  void Materialise(const RowRef& r, uint64_t row, std::vector<float>* scratch) const;
  // Holds one row for writing (its DRAM slot, or through the row cache) while fn runs, then
  // publishes RowRef::version. Errors come only from the cold tier.
  template <typename Fn>
  Status WithRow(uint64_t row, Fn&& fn);
  // One optimizer step of a held row with gradient `grad`.
  void Step(const RowRef& r, const float* grad, std::vector<float>* scratch) const;
  // Gather into `out` (values at rest) of rows known to be in range.
  Status GatherChecked(std::span<const uint64_t> rows, uint8_t* out) const;

  TableSchema schema_;
  uint64_t first_row_;
  uint64_t num_rows_;
  std::unique_ptr<RowArena> arena_;  // One slot per row; null when cached.
  std::unique_ptr<RowCache> cache_;  // Null unless the shard has a cold tier.
  size_t state_bytes_;
  size_t max_batch_;
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_SHARD_H_
