// Shard: batched gather, put and optimizer apply over a RowArena.
#include "storage/shard.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "engram/init.h"
#include "engram/row_codec.h"
#include "storage/optimizer.h"

namespace engram::storage {

StatusOr<std::unique_ptr<Shard>> Shard::Create(const TableSchema& schema, uint64_t first_row,
                                               uint64_t num_rows, const ShardOptions& options) {
  ENGRAM_RETURN_IF_ERROR(schema.Validate());
  if (num_rows == 0 || first_row >= schema.num_rows || num_rows > schema.num_rows - first_row) {
    return Status::InvalidArgument("shard [" + std::to_string(first_row) + ", +" + std::to_string(num_rows) +
                                   ") does not fit table '" + schema.name + "' of " +
                                   std::to_string(schema.num_rows) + " rows");
  }
  const size_t state_bytes = IsTrainable(schema.dtype) ? OptimizerStateBytes(schema.optimizer, schema.dim) : 0;
  if (options.cold != nullptr && options.cache_rows < num_rows) {
    RowCacheOptions co = options.cache;
    co.arena = options.arena;  // The cache's slots are what a transport registers.
    ENGRAM_ASSIGN_OR_RETURN(auto cache, RowCache::Create(first_row, num_rows, options.cache_rows, schema.value_bytes(),
                                                         state_bytes, options.cold, co));
    return std::unique_ptr<Shard>(new Shard(schema, first_row, num_rows, nullptr, std::move(cache), state_bytes,
                                            options.max_batch_rows));
  }
  ENGRAM_ASSIGN_OR_RETURN(auto arena, RowArena::Create(num_rows, schema.value_bytes(), state_bytes, options.arena));
  return std::unique_ptr<Shard>(new Shard(schema, first_row, num_rows, std::move(arena), nullptr, state_bytes,
                                          options.max_batch_rows));
}

template <typename Fn>
Status Shard::WithRow(uint64_t row, Fn&& fn) {
  if (cache_) return cache_->Write(row, RowFn(fn));
  RowArena::Writer w(arena_.get(), row - first_row_);
  RowRef r{w.value(), w.state(), w.previous_version(), w.version()};
  fn(r);
  if (r.version != w.version()) w.PublishAs(r.version);
  return Status::OK();
}

ShardStats Shard::stats() const {
  ShardStats s;
  s.touched_rows = arena().touched_slots();
  s.bytes_per_row = arena().layout().stride + state_bytes_;
  if (cache_) {
    s.cached = true;
    s.cache = cache_->stats();
  }
  return s;
}

Status Shard::CheckRows(std::span<const uint64_t> rows) const {
  if (rows.size() > max_batch_) {
    return Status::InvalidArgument("batch of " + std::to_string(rows.size()) + " rows exceeds the limit of " +
                                   std::to_string(max_batch_));
  }
  const uint64_t n = num_rows_;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] - first_row_ >= n || rows[i] < first_row_) {
      return Status::OutOfRange("row " + std::to_string(rows[i]) + " (index " + std::to_string(i) +
                                ") is outside shard [" + std::to_string(first_row_) + ", " +
                                std::to_string(first_row_ + n) + ") of table '" + schema_.name + "'");
    }
  }
  return Status::OK();
}

Status Shard::CheckRow(uint64_t row) const {
  if (row < first_row_ || row - first_row_ >= num_rows_) {
    return Status::OutOfRange("row " + std::to_string(row) + " is not in this shard");
  }
  return Status::OK();
}

Status Shard::Gather(std::span<const uint64_t> rows, uint8_t* out) const {
  ENGRAM_RETURN_IF_ERROR(CheckRows(rows));
  return GatherChecked(rows, out);
}

Status Shard::GatherChecked(std::span<const uint64_t> rows, uint8_t* out) const {
  const size_t vb = schema_.value_bytes();
  std::vector<float> init;  // Allocated only if an untouched row is met.
  if (cache_) {
    std::vector<uint32_t> untouched;
    ENGRAM_RETURN_IF_ERROR(cache_->Gather(rows, out, &untouched));
    for (uint32_t i : untouched) InitialRowAtRest(schema_, rows[i], &init, out + size_t{i} * vb);
    return Status::OK();
  }
  constexpr size_t kPrefetchDistance = 8;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + kPrefetchDistance < rows.size()) arena_->Prefetch(rows[i + kPrefetchDistance] - first_row_);
    uint8_t* dst = out + i * vb;
    if (arena_->Read(rows[i] - first_row_, dst) == 0) InitialRowAtRest(schema_, rows[i], &init, dst);
  }
  return Status::OK();
}

Status Shard::GatherF32(std::span<const uint64_t> rows, float* out) const {
  if (schema_.dtype == DType::kBytes) {
    return Status::InvalidArgument("table '" + schema_.name + "' holds opaque byte rows; they have no f32 value");
  }
  ENGRAM_RETURN_IF_ERROR(CheckRows(rows));
  std::vector<uint8_t> raw(schema_.value_bytes());
  std::vector<float> init;
  if (cache_) {
    std::vector<uint8_t> all(rows.size() * raw.size());
    ENGRAM_RETURN_IF_ERROR(GatherChecked(rows, all.data()));
    for (size_t i = 0; i < rows.size(); ++i) DecodeRow(schema_.dtype, schema_.dim, all.data() + i * raw.size(), out + i * schema_.dim);
    return Status::OK();
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    // Untouched rows decode from their value at rest, so they round exactly as Gather stores them.
    if (arena_->Read(rows[i] - first_row_, raw.data()) == 0) InitialRowAtRest(schema_, rows[i], &init, raw.data());
    DecodeRow(schema_.dtype, schema_.dim, raw.data(), out + i * schema_.dim);
  }
  return Status::OK();
}

void Shard::Materialise(const RowRef& r, uint64_t row, std::vector<float>* scratch) const {
  InitialRowAtRest(schema_, row, scratch, r.value);
  if (state_bytes_ > 0) InitOptimizerState(schema_.optimizer, schema_.dim, r.state);
}

Status Shard::Put(std::span<const uint64_t> rows, const uint8_t* values, RowImageSink* sink) {
  ENGRAM_RETURN_IF_ERROR(CheckRows(rows));
  const size_t vb = schema_.value_bytes();
  std::vector<float> tmp;
  if (IsTrainable(schema_.dtype)) {
    tmp.resize(schema_.dim);
    for (size_t i = 0; i < rows.size(); ++i) {
      DecodeRow(schema_.dtype, schema_.dim, values + i * vb, tmp.data());
      for (uint32_t c = 0; c < schema_.dim; ++c) {
        if (!std::isfinite(tmp[c])) {
          return Status::InvalidArgument("put: value " + std::to_string(c) + " of row " + std::to_string(rows[i]) +
                                         " is not finite");
        }
      }
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    ENGRAM_RETURN_IF_ERROR(WithRow(rows[i], [&](RowRef& r) {
      if (r.previous_version == 0 && state_bytes_ > 0) InitOptimizerState(schema_.optimizer, schema_.dim, r.state);
      std::memcpy(r.value, values + i * vb, vb);
      if (sink) sink->Add(rows[i], r.version, r.value, r.state);
    }));
  }
  return Status::OK();
}

Status Shard::ApplyGradients(std::span<const uint64_t> rows, const float* grads, ApplyScratch* scratch,
                             RowImageSink* sink) {
  if (!IsTrainable(schema_.dtype) || schema_.optimizer.kind == OptimizerKind::kNone) {
    return Status::FailedPrecondition("table '" + schema_.name + "' (dtype " + DTypeName(schema_.dtype) +
                                      ", optimizer " + OptimizerName(schema_.optimizer.kind) +
                                      ") does not accept gradient pushes");
  }
  ENGRAM_RETURN_IF_ERROR(CheckRows(rows));
  const uint32_t dim = schema_.dim;
  ApplyScratch local;
  ApplyScratch& s = scratch ? *scratch : local;
  // Phase 1: sum duplicates (in request order, so results are deterministic) and validate.
  s.order.resize(rows.size());
  std::iota(s.order.begin(), s.order.end(), 0u);
  std::stable_sort(s.order.begin(), s.order.end(), [&](uint32_t a, uint32_t b) { return rows[a] < rows[b]; });
  s.unique_rows.clear();
  s.summed.resize(rows.size() * size_t{dim});
  for (size_t i = 0; i < s.order.size();) {
    const uint64_t row = rows[s.order[i]];
    float* sum = s.summed.data() + s.unique_rows.size() * dim;
    std::memcpy(sum, grads + size_t{s.order[i]} * dim, sizeof(float) * dim);
    size_t j = i + 1;
    for (; j < s.order.size() && rows[s.order[j]] == row; ++j) {
      const float* g = grads + size_t{s.order[j]} * dim;
      for (uint32_t c = 0; c < dim; ++c) sum[c] += g[c];
    }
    for (uint32_t c = 0; c < dim; ++c) {
      if (!std::isfinite(sum[c])) {
        return Status::InvalidArgument("push: gradient " + std::to_string(c) + " of row " + std::to_string(row) +
                                       (j - i > 1 ? " (summed over its duplicates)" : "") +
                                       " is not finite; nothing was applied");
      }
    }
    s.unique_rows.push_back(row);
    i = j;
  }
  // Phase 2: apply, one row at a time under that row's version word.
  s.row.resize(dim);
  constexpr size_t kPrefetchDistance = 4;  // Rows are random: hide the cache misses of the next few.
  for (size_t u = 0; u < s.unique_rows.size(); ++u) {
    if (arena_ && u + kPrefetchDistance < s.unique_rows.size()) {
      arena_->Prefetch(s.unique_rows[u + kPrefetchDistance] - first_row_);
    }
    const uint64_t row = s.unique_rows[u];
    const float* g = s.summed.data() + u * dim;
    ENGRAM_RETURN_IF_ERROR(WithRow(row, [&](RowRef& r) {
      if (r.previous_version == 0) Materialise(r, row, &s.row);
      Step(r, g, &s.row);
      if (sink) sink->AddGradient(row, r.version, g);
    }));
  }
  return Status::OK();
}

void Shard::Step(const RowRef& r, const float* grad, std::vector<float>* scratch) const {
  if (schema_.dtype == DType::kF32) {  // Values are 8-byte aligned: update in place.
    ApplyOptimizer(schema_.optimizer, schema_.dim, reinterpret_cast<float*>(r.value), r.state, grad);
  } else {
    scratch->resize(schema_.dim);
    DecodeRow(schema_.dtype, schema_.dim, r.value, scratch->data());
    ApplyOptimizer(schema_.optimizer, schema_.dim, scratch->data(), r.state, grad);
    EncodeRow(schema_.dtype, schema_.dim, scratch->data(), r.value);
  }
}

Status Shard::ReplayGradient(uint64_t row, uint64_t version, const float* grad) {
  ENGRAM_RETURN_IF_ERROR(CheckRow(row));
  if (version < 2 || (version & 1u) != 0) return Status::InvalidArgument("logged row version must be even and >= 2");
  Status result;
  std::vector<float> scratch(schema_.dim);
  ENGRAM_RETURN_IF_ERROR(WithRow(row, [&](RowRef& r) {
    const uint64_t prev = r.previous_version;
    if (prev >= version) {
      r.version = prev;  // Already includes this step (a checkpoint did).
      return;
    }
    if (prev != version - 2) {
      r.version = prev;
      result = Status::DataLoss("row " + std::to_string(row) + " is at version " + std::to_string(prev) +
                                " but the log's next step for it makes version " + std::to_string(version) +
                                ": an update of the row is missing");
      return;
    }
    if (prev == 0) Materialise(r, row, &scratch);
    Step(r, grad, &scratch);
  }));
  return result;
}

Status Shard::Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  ENGRAM_RETURN_IF_ERROR(CheckRow(row));
  if (version == 0 || (version & 1u) != 0) return Status::InvalidArgument("logged row version must be even and > 0");
  return WithRow(row, [&](RowRef& r) {
    if (r.previous_version >= version) {
      r.version = r.previous_version;  // Already as new: leave the row as it is.
      return;
    }
    std::memcpy(r.value, value, schema_.value_bytes());
    if (state_bytes_ > 0) std::memcpy(r.state, state, state_bytes_);
    r.version = version;
  });
}

Status Shard::Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, RowImageSink* sink) {
  ENGRAM_RETURN_IF_ERROR(CheckRow(row));
  std::vector<float> scratch;
  return WithRow(row, [&](RowRef& r) {
    if (value == nullptr) {
      Materialise(r, row, &scratch);
    } else {
      std::memcpy(r.value, value, schema_.value_bytes());
      if (state_bytes_ > 0) std::memcpy(r.state, state, state_bytes_);
    }
    if (sink) sink->Add(row, r.version, r.value, r.state);
  });
}

void Shard::Retire() {
  if (cache_) {
    cache_->Retire();
  } else {
    arena_->Retire();
  }
}

Status Shard::ForEachTouched(const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn,
                             uint64_t first, uint64_t count) const {
  if (cache_) return cache_->ForEachStored(fn, first, count);
  std::vector<uint8_t> value(schema_.value_bytes()), state(state_bytes_);
  const uint64_t lo = first > first_row_ ? std::min(first - first_row_, num_rows_) : 0;
  const uint64_t hi = count > UINT64_MAX - first ? num_rows_ : std::min(num_rows_, first + count > first_row_ ? first + count - first_row_ : 0);
  for (uint64_t slot = lo; slot < hi; ++slot) {
    if (arena_->version(slot) == 0) continue;  // Untouched rows are not stored anywhere.
    const uint64_t v = arena_->Snapshot(slot, value.data(), state.data());
    if (v != 0) fn(first_row_ + slot, v, value.data(), state_bytes_ > 0 ? state.data() : nullptr);
  }
  return Status::OK();
}

}  // namespace engram::storage
