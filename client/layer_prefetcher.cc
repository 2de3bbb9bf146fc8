// The CPU engine of LayerPrefetcher: hash, de-duplicate, pull and lay out on the ring's pull
// thread; sum on the caller's thread and push on the push thread.
#include "client/layer_prefetcher.h"

#include <cstring>
#include <vector>

#include "client/dedup.h"
#include "client/ticket_ring.h"
#include "engram/numeric.h"
#include "engram/row_codec.h"

namespace engram::client {
namespace {

class CpuLayerPrefetcher final : public LayerPrefetcher, private TicketRing {
 public:
  CpuLayerPrefetcher(const EngramHasher* hasher, RowIo io, const LayerPrefetcherOptions& o)
      : TicketRing(o.max_in_flight), hasher_(hasher), io_(std::move(io)), o_(o), k_(hasher->lookups_per_token()),
        slots_(o.max_in_flight) {
    const size_t n = o.max_batch * o.max_seq * k_, vb = ValueBytes(o.dtype, o.dim);
    for (Slot& s : slots_) {  // Every buffer at its largest once: Prefetch never allocates.
      s.tokens.reserve(o.max_batch * o.max_seq);
      s.ids.reserve(n);
      s.unique.reserve(n);
      s.inverse.reserve(n);
      s.staging.resize(n * vb);
      s.rows.resize(n * o.dim * (o.out == RowOut::kF32 ? 4 : 2));
      s.summed.resize(n * o.dim);
    }
    decoded_.resize(o.dim);
    StartWorkers();
  }
  ~CpuLayerPrefetcher() override { StopWorkers(); }

  StatusOr<int> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq) override {
    ENGRAM_RETURN_IF_ERROR(CheckPrefetch(*hasher_, o_, layer, tokens, batch, seq));
    const int t = Take({layer, batch, seq});
    slots_[t].tokens.assign(tokens.begin(), tokens.end());
    Enqueue(t);
    return t;
  }

  StatusOr<const void*> Acquire(int t, void* /*compute_stream*/) override {
    ENGRAM_RETURN_IF_ERROR(WaitReady(t));
    return static_cast<const void*>(slots_[t].rows.data());
  }

  StatusOr<std::shared_future<Status>> PushGrads(int t, const float* grads, void* /*compute_stream*/) override {
    ENGRAM_RETURN_IF_ERROR(WaitReady(t, /*for_push=*/true));
    // Summed here, so the caller may reuse `grads` at once; pushed on the push thread.
    Slot& s = slots_[t];
    SumByInverse(s.inverse, s.unique.size(), o_.dim, grads, s.summed.data());
    return EnqueuePush(t);
  }

  void Release(int t) override { ReleaseTicket(t); }
  size_t num_unique_rows(int t) const override { return CheckTicket(t).ok() ? slots_[t].unique.size() : 0; }
  bool on_device() const override { return false; }
  int lookups_per_token() const override { return k_; }

 private:
  // A ticket's buffers; they belong to its caller or a worker, in turn.
  struct Slot {
    std::vector<int64_t> tokens;
    std::vector<uint64_t> ids, unique;
    std::vector<uint32_t> inverse;
    std::vector<uint8_t> staging, rows;
    std::vector<float> summed;
  };

  Status Push(int t) override { return io_.push(ticket(t).layer, slots_[t].unique, slots_[t].summed.data()); }

  Status Forward(int t) override {
    Slot& s = slots_[t];
    const Ticket& k = ticket(t);
    const size_t n = k.batch * k.seq * static_cast<size_t>(k_);
    s.ids.resize(n);
    ENGRAM_RETURN_IF_ERROR(hasher_->Hash(k.layer, s.tokens, k.batch, k.seq, {}, s.ids.data(), &hash_scratch_));
    Deduplicate(s.ids, &s.unique, &s.inverse, &dedup_scratch_);
    ENGRAM_RETURN_IF_ERROR(io_.pull(k.layer, s.unique, s.staging.data()));
    const size_t vb = ValueBytes(o_.dtype, o_.dim);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* src = s.staging.data() + size_t{s.inverse[i]} * vb;
      if (o_.out == RowOut::kF32) {
        DecodeRow(o_.dtype, o_.dim, src, reinterpret_cast<float*>(s.rows.data()) + i * o_.dim);
        continue;
      }
      DecodeRow(o_.dtype, o_.dim, src, decoded_.data());
      uint16_t* out = reinterpret_cast<uint16_t*>(s.rows.data()) + i * o_.dim;
      for (uint32_t c = 0; c < o_.dim; ++c) out[c] = F32ToBf16(decoded_[c]);
    }
    return Status::OK();
  }

  const EngramHasher* hasher_;
  const RowIo io_;
  const LayerPrefetcherOptions o_;
  const int k_;
  std::vector<Slot> slots_;
  // Pull-thread only.
  HashScratch hash_scratch_;
  DedupScratch dedup_scratch_;
  std::vector<float> decoded_;
};

}  // namespace

Status CheckPrefetch(const EngramHasher& hasher, const LayerPrefetcherOptions& o, int64_t layer,
                     std::span<const int64_t> tokens, size_t batch, size_t seq) {
  if (hasher.layer(layer) == nullptr) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram module");
  if (batch == 0 || seq == 0 || batch > o.max_batch || seq > o.max_seq || tokens.size() != batch * seq) {
    return Status::InvalidArgument("tokens must be [batch][seq] with batch <= " + std::to_string(o.max_batch) +
                                   " and seq <= " + std::to_string(o.max_seq));
  }
  return Status::OK();
}

Status ValidateLayerPrefetcher(const EngramHasher* hasher, const RowIo& io, const LayerPrefetcherOptions& options) {
  if (hasher == nullptr || !io.pull || !io.push) return Status::InvalidArgument("a hasher and both row functions are needed");
  if (options.dim == 0 || options.dtype == DType::kBytes) {
    return Status::InvalidArgument("the layer tables' dim and a numeric dtype are needed");
  }
  if (options.max_batch == 0 || options.max_seq == 0 || options.max_in_flight == 0) {
    return Status::InvalidArgument("max_batch, max_seq and max_in_flight must be positive");
  }
  return Status::OK();
}

StatusOr<std::unique_ptr<LayerPrefetcher>> CreateCpuLayerPrefetcher(const EngramHasher* hasher, RowIo io,
                                                                    const LayerPrefetcherOptions& options) {
  ENGRAM_RETURN_IF_ERROR(ValidateLayerPrefetcher(hasher, io, options));
  return std::unique_ptr<LayerPrefetcher>(new CpuLayerPrefetcher(hasher, std::move(io), options));
}

}  // namespace engram::client
