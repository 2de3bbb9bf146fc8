// The CPU engine of LayerPrefetcher: hash, de-duplicate, pull and lay out on one worker thread.
#include "client/layer_prefetcher.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "client/dedup.h"
#include "engram/numeric.h"
#include "engram/row_codec.h"

namespace engram::client {
namespace {

class CpuLayerPrefetcher final : public LayerPrefetcher {
 public:
  CpuLayerPrefetcher(const EngramHasher* hasher, RowIo io, const LayerPrefetcherOptions& o)
      : hasher_(hasher), io_(std::move(io)), o_(o), k_(hasher->lookups_per_token()), slots_(o.max_in_flight) {
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
    thread_ = std::thread([this] { Run(&queue_); });
    push_thread_ = std::thread([this] { Run(&push_queue_); });
  }

  ~CpuLayerPrefetcher() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    push_thread_.join();
  }

  StatusOr<int> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq) override {
    if (hasher_->layer(layer) == nullptr) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram module");
    if (batch == 0 || seq == 0 || batch > o_.max_batch || seq > o_.max_seq || tokens.size() != batch * seq) {
      return Status::InvalidArgument("tokens must be [batch][seq] with batch <= " + std::to_string(o_.max_batch) +
                                     " and seq <= " + std::to_string(o_.max_seq));
    }
    std::unique_lock<std::mutex> lock(mu_);
    int free = -1;
    cv_.wait(lock, [&] {
      for (size_t i = 0; i < slots_.size() && free < 0; ++i) {
        if (!slots_[i].in_use) free = static_cast<int>(i);
      }
      return free >= 0;
    });
    Slot& s = slots_[free];
    s.in_use = true;
    s.ready = false;
    s.pushing = false;
    s.status = Status::OK();
    s.layer = layer;
    s.batch = batch;
    s.seq = seq;
    s.tokens.assign(tokens.begin(), tokens.end());
    queue_.push_back({free, false});
    cv_.notify_all();
    return free;
  }

  StatusOr<const void*> Acquire(int ticket, void* /*compute_stream*/) override {
    ENGRAM_RETURN_IF_ERROR(CheckTicket(ticket));
    std::unique_lock<std::mutex> lock(mu_);
    Slot& s = slots_[ticket];
    cv_.wait(lock, [&] { return s.ready; });
    ENGRAM_RETURN_IF_ERROR(s.status);
    return static_cast<const void*>(s.rows.data());
  }

  StatusOr<std::shared_future<Status>> PushGrads(int ticket, const float* grads, void* /*compute_stream*/) override {
    ENGRAM_RETURN_IF_ERROR(CheckTicket(ticket));
    Slot& s = slots_[ticket];
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return s.ready; });
      ENGRAM_RETURN_IF_ERROR(s.status);
      if (s.pushing) return Status::FailedPrecondition("ticket " + std::to_string(ticket) + " pushed its gradients already");
    }
    // Summed here, so the caller may reuse `grads` at once; pushed on the worker.
    SumByInverse(s.inverse, s.unique.size(), o_.dim, grads, s.summed.data());
    std::lock_guard<std::mutex> lock(mu_);
    s.pushing = true;
    s.push_done = std::promise<Status>();
    s.push = s.push_done.get_future().share();
    push_queue_.push_back({ticket, true});
    cv_.notify_all();
    return s.push;
  }

  void Release(int ticket) override {
    if (!CheckTicket(ticket).ok()) return;
    Slot& s = slots_[ticket];
    std::shared_future<Status> push;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!s.in_use) return;
      cv_.wait(lock, [&] { return s.ready; });  // Its forward work is done with the buffers.
      if (s.pushing) push = s.push;
    }
    if (push.valid()) push.wait();
    std::lock_guard<std::mutex> lock(mu_);
    s.in_use = false;
    cv_.notify_all();
  }

  size_t num_unique_rows(int ticket) const override {
    return CheckTicket(ticket).ok() ? slots_[ticket].unique.size() : 0;
  }
  bool on_device() const override { return false; }
  int lookups_per_token() const override { return k_; }

 private:
  struct Slot {
    bool in_use = false, ready = false, pushing = false;
    Status status;
    int64_t layer = 0;
    size_t batch = 0, seq = 0;
    std::vector<int64_t> tokens;
    std::vector<uint64_t> ids, unique;
    std::vector<uint32_t> inverse;
    std::vector<uint8_t> staging, rows;
    std::vector<float> summed;
    std::promise<Status> push_done;
    std::shared_future<Status> push;
  };
  struct Job {
    int slot;
    bool push;
  };

  Status CheckTicket(int ticket) const {
    if (ticket < 0 || static_cast<size_t>(ticket) >= slots_.size()) {
      return Status::InvalidArgument("no ticket " + std::to_string(ticket));
    }
    return Status::OK();
  }

  void Run(std::deque<Job>* queue) {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue->empty(); });
        if (queue->empty()) return;
        job = queue->front();
        queue->pop_front();
      }
      Slot& s = slots_[job.slot];
      if (job.push) {
        s.push_done.set_value(io_.push(s.layer, s.unique, s.summed.data()));
        continue;
      }
      const Status st = Forward(s);
      std::lock_guard<std::mutex> lock(mu_);
      s.status = st;
      s.ready = true;
      cv_.notify_all();
    }
  }

  Status Forward(Slot& s) {
    const size_t n = s.batch * s.seq * static_cast<size_t>(k_);
    s.ids.resize(n);
    ENGRAM_RETURN_IF_ERROR(hasher_->Hash(s.layer, s.tokens, s.batch, s.seq, {}, s.ids.data(), &hash_scratch_));
    Deduplicate(s.ids, &s.unique, &s.inverse, &dedup_scratch_);
    ENGRAM_RETURN_IF_ERROR(io_.pull(s.layer, s.unique, s.staging.data()));
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
  std::vector<Slot> slots_;  // Fields of a slot in use belong to its caller or the worker, in turn.
  std::mutex mu_;
  std::condition_variable cv_;
  // Pulls and pushes have a thread each: a step's pulls never wait behind the last step's pushes.
  std::deque<Job> queue_, push_queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;                   // GUARDED_BY(mu_)
  // Worker-thread only.
  HashScratch hash_scratch_;
  DedupScratch dedup_scratch_;
  std::vector<float> decoded_;
  std::thread thread_, push_thread_;
};

}  // namespace

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
