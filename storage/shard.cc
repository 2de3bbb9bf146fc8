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
  ENGRAM_ASSIGN_OR_RETURN(auto arena, RowArena::Create(num_rows, schema.value_bytes(), state_bytes, options.arena));
  return std::unique_ptr<Shard>(new Shard(schema, first_row, std::move(arena), state_bytes, options.max_batch_rows));
}

ShardStats Shard::stats() const {
  return {arena_->touched_slots(), arena_->layout().stride + state_bytes_};
}

Status Shard::CheckRows(std::span<const uint64_t> rows) const {
  if (rows.size() > max_batch_) {
    return Status::InvalidArgument("batch of " + std::to_string(rows.size()) + " rows exceeds the limit of " +
                                   std::to_string(max_batch_));
  }
  const uint64_t n = arena_->num_slots();
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] - first_row_ >= n || rows[i] < first_row_) {
      return Status::OutOfRange("row " + std::to_string(rows[i]) + " (index " + std::to_string(i) +
                                ") is outside shard [" + std::to_string(first_row_) + ", " +
                                std::to_string(first_row_ + n) + ") of table '" + schema_.name + "'");
    }
  }
  return Status::OK();
}

Status Shard::Gather(std::span<const uint64_t> rows, uint8_t* out) const {
  ENGRAM_RETURN_IF_ERROR(CheckRows(rows));
  const size_t vb = schema_.value_bytes();
  std::vector<float> init;  // Allocated only if an untouched row is met.
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
  for (size_t i = 0; i < rows.size(); ++i) {
    // Untouched rows decode from their value at rest, so they round exactly as Gather stores them.
    if (arena_->Read(rows[i] - first_row_, raw.data()) == 0) InitialRowAtRest(schema_, rows[i], &init, raw.data());
    DecodeRow(schema_.dtype, schema_.dim, raw.data(), out + i * schema_.dim);
  }
  return Status::OK();
}

void Shard::Materialise(const RowArena::Writer& w, uint64_t row, std::vector<float>* scratch) const {
  InitialRowAtRest(schema_, row, scratch, w.value());
  if (state_bytes_ > 0) InitOptimizerState(schema_.optimizer, schema_.dim, w.state());
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
    RowArena::Writer w(arena_.get(), rows[i] - first_row_);
    if (w.previous_version() == 0 && state_bytes_ > 0) InitOptimizerState(schema_.optimizer, schema_.dim, w.state());
    std::memcpy(w.value(), values + i * vb, vb);
    if (sink) sink->Add(rows[i], w.version(), w.value(), w.state());
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
    if (u + kPrefetchDistance < s.unique_rows.size()) arena_->Prefetch(s.unique_rows[u + kPrefetchDistance] - first_row_);
    const uint64_t row = s.unique_rows[u];
    RowArena::Writer w(arena_.get(), row - first_row_);
    if (w.previous_version() == 0) Materialise(w, row, &s.row);
    const float* g = s.summed.data() + u * dim;
    if (schema_.dtype == DType::kF32) {  // Slot values are 8-byte aligned: update in place.
      ApplyOptimizer(schema_.optimizer, dim, reinterpret_cast<float*>(w.value()), w.state(), g);
    } else {
      DecodeRow(schema_.dtype, dim, w.value(), s.row.data());
      ApplyOptimizer(schema_.optimizer, dim, s.row.data(), w.state(), g);
      EncodeRow(schema_.dtype, dim, s.row.data(), w.value());
    }
    if (sink) sink->AddGradient(row, w.version(), g);
  }
  return Status::OK();
}

Status Shard::ReplayGradient(uint64_t row, uint64_t version, const float* grad) {
  if (row < first_row_ || row - first_row_ >= arena_->num_slots()) {
    return Status::OutOfRange("row " + std::to_string(row) + " is not in this shard");
  }
  if (version < 2 || (version & 1u) != 0) return Status::InvalidArgument("logged row version must be even and >= 2");
  RowArena::Writer w(arena_.get(), row - first_row_);
  if (w.previous_version() >= version) {
    w.PublishAs(w.previous_version());  // Already includes this step (a checkpoint did).
    return Status::OK();
  }
  if (w.previous_version() != version - 2) {
    const uint64_t prev = w.previous_version();
    w.PublishAs(prev);
    return Status::DataLoss("row " + std::to_string(row) + " is at version " + std::to_string(prev) +
                            " but the log's next step for it makes version " + std::to_string(version) +
                            ": an update of the row is missing");
  }
  std::vector<float> scratch(schema_.dim);
  if (w.previous_version() == 0) Materialise(w, row, &scratch);
  if (schema_.dtype == DType::kF32) {
    ApplyOptimizer(schema_.optimizer, schema_.dim, reinterpret_cast<float*>(w.value()), w.state(), grad);
  } else {
    DecodeRow(schema_.dtype, schema_.dim, w.value(), scratch.data());
    ApplyOptimizer(schema_.optimizer, schema_.dim, scratch.data(), w.state(), grad);
    EncodeRow(schema_.dtype, schema_.dim, scratch.data(), w.value());
  }
  return Status::OK();
}

Status Shard::Restore(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  if (row < first_row_ || row - first_row_ >= arena_->num_slots()) {
    return Status::OutOfRange("row " + std::to_string(row) + " is not in this shard");
  }
  if (version == 0 || (version & 1u) != 0) return Status::InvalidArgument("logged row version must be even and > 0");
  RowArena::Writer w(arena_.get(), row - first_row_);
  if (w.previous_version() >= version) {
    w.PublishAs(w.previous_version());  // Already as new: leave the row as it is.
    return Status::OK();
  }
  std::memcpy(w.value(), value, schema_.value_bytes());
  if (state_bytes_ > 0) std::memcpy(w.state(), state, state_bytes_);
  w.PublishAs(version);
  return Status::OK();
}

Status Shard::Rewrite(uint64_t row, const uint8_t* value, const uint8_t* state, RowImageSink* sink) {
  if (row < first_row_ || row - first_row_ >= arena_->num_slots()) {
    return Status::OutOfRange("row " + std::to_string(row) + " is not in this shard");
  }
  RowArena::Writer w(arena_.get(), row - first_row_);
  if (value == nullptr) {
    std::vector<float> scratch;
    Materialise(w, row, &scratch);
  } else {
    std::memcpy(w.value(), value, schema_.value_bytes());
    if (state_bytes_ > 0) std::memcpy(w.state(), state, state_bytes_);
  }
  if (sink) sink->Add(row, w.version(), w.value(), w.state());
  return Status::OK();
}

void Shard::ForEachTouched(const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn) const {
  std::vector<uint8_t> value(schema_.value_bytes()), state(state_bytes_);
  for (uint64_t slot = 0; slot < arena_->num_slots(); ++slot) {
    if (arena_->version(slot) == 0) continue;  // Untouched rows are not stored anywhere.
    const uint64_t v = arena_->Snapshot(slot, value.data(), state.data());
    if (v != 0) fn(first_row_ + slot, v, value.data(), state_bytes_ > 0 ? state.data() : nullptr);
  }
}

}  // namespace engram::storage
