// EngramPrefetcher: hash -> dedup -> pull in flight -> lay out; segment-sum -> push.
#include "client/engram_prefetch.h"

#include <cstring>

#include "client/dedup.h"
#include "engram/row_codec.h"

namespace engram::client {

std::vector<float> PrefetchBufferPool::TakeRows() {
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_.empty()) return {};
  auto v = std::move(rows_.back());
  rows_.pop_back();
  return v;
}

std::vector<uint8_t> PrefetchBufferPool::TakeStaging() {
  std::lock_guard<std::mutex> lock(mu_);
  if (staging_.empty()) return {};
  auto v = std::move(staging_.back());
  staging_.pop_back();
  return v;
}

void PrefetchBufferPool::Give(std::vector<float> rows, std::vector<uint8_t> staging) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_.size() < kMaxPooled && rows.capacity() > 0) rows_.push_back(std::move(rows));
  if (staging_.size() < kMaxPooled && staging.capacity() > 0) staging_.push_back(std::move(staging));
}

PrefetchHandle::~PrefetchHandle() {
  if (!waited_) pull_.Wait().IgnoreError();  // Collect (or time out) the replies so none linger.
  if (pool_) pool_->Give(std::move(rows_), std::move(staging_));
}

StatusOr<std::unique_ptr<EngramPrefetcher>> EngramPrefetcher::Create(Client* client, const EngramSpec& spec,
                                                                     const std::string& table_prefix) {
  ENGRAM_ASSIGN_OR_RETURN(auto hasher, EngramHasher::Create(spec));
  auto p = std::unique_ptr<EngramPrefetcher>(new EngramPrefetcher(std::move(hasher)));
  for (int64_t layer : spec.layer_ids) {
    const std::string name = table_prefix + "_layer" + std::to_string(layer);
    ENGRAM_ASSIGN_OR_RETURN(auto t, client->OpenTable(name));
    const TableSchema& s = t->schema();
    if (s.num_rows != p->hasher_.layer(layer)->table_rows || s.dim != static_cast<uint32_t>(spec.head_dim())) {
      return Status::FailedPrecondition("table '" + name + "' has " + std::to_string(s.num_rows) + " rows x " +
                                        std::to_string(s.dim) + ", the spec needs " +
                                        std::to_string(p->hasher_.layer(layer)->table_rows) + " x " +
                                        std::to_string(spec.head_dim()));
    }
    if (s.dtype == DType::kBytes) return Status::FailedPrecondition("table '" + name + "' holds opaque bytes");
    p->tables_[layer] = std::move(t);
  }
  return p;
}

StatusOr<std::unique_ptr<PrefetchHandle>> EngramPrefetcher::Prefetch(int64_t layer, std::span<const int64_t> tokens,
                                                                     size_t batch, size_t seq,
                                                                     std::span<const int64_t> left_context) {
  auto it = tables_.find(layer);
  if (it == tables_.end()) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram table");
  std::vector<uint64_t> ids(batch * seq * hasher_.lookups_per_token());
  ENGRAM_RETURN_IF_ERROR(hasher_.Hash(layer, tokens, batch, seq, left_context, ids.data()));
  auto h = std::make_unique<PrefetchHandle>();
  h->table_ = it->second.get();
  h->dim_ = h->table_->schema().dim;
  h->pool_ = pool_;
  h->rows_ = pool_->TakeRows();
  h->staging_ = pool_->TakeStaging();
  Deduplicate(ids, &h->unique_, &h->inverse_);
  h->staging_.resize(h->unique_.size() * h->table_->schema().value_bytes());
  h->pull_ = h->table_->StartPull(h->unique_, h->staging_.data());
  return h;
}

Status PrefetchHandle::Wait() {
  if (waited_) return Status::OK();
  ENGRAM_RETURN_IF_ERROR(pull_.Wait());
  // One pass from the pulled unique rows (at rest) to the [B][T][K][dim] layout.
  const TableSchema& s = table_->schema();
  const size_t vb = s.value_bytes();
  rows_.resize(inverse_.size() * dim_);
  for (size_t i = 0; i < inverse_.size(); ++i) {
    DecodeRow(s.dtype, dim_, staging_.data() + size_t{inverse_[i]} * vb, rows_.data() + i * dim_);
  }
  waited_ = true;
  return Status::OK();
}

Status PrefetchHandle::PushGrads(const float* grads) {
  if (pushed_) return Status::FailedPrecondition("PushGrads called twice on one prefetch");
  pushed_ = true;
  std::vector<float> summed(unique_.size() * dim_);
  SumByInverse(inverse_, unique_.size(), dim_, grads, summed.data());
  return table_->Push(unique_, summed.data());
}

}  // namespace engram::client
