// The CUDA engine of LayerPrefetcher: a ring of tickets, each with its device and pinned host
// buffers and events, two streams, and two worker threads (pulls, pushes).
#include "gpu/cuda_layer_prefetcher.h"

#include <cuda_runtime.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gpu/hash_upload.h"
#include "gpu/kernels.h"

namespace engram::gpu {
namespace {

using client::LayerPrefetcherOptions;
using client::RowIo;
using client::RowOut;

Status Cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::OK();
  const std::string msg = std::string(what) + ": " + cudaGetErrorString(e);
  if (e == cudaErrorMemoryAllocation) return Status::ResourceExhausted(msg);
  return Status::Internal(msg);
}

// One ticket's buffers and state. Device (d_) and pinned host (h_) buffers live as long as the
// prefetcher; the fields below `in_use` belong to the ticket's caller or the worker, in turn.
struct Slot {
  uint64_t* d_ids = nullptr;
  uint64_t* d_unique = nullptr;
  uint32_t* d_inverse = nullptr;
  uint32_t* d_count = nullptr;
  int* d_bad = nullptr;
  int64_t* d_tokens = nullptr;
  uint8_t* d_rows_in = nullptr;  // The unique rows at rest.
  void* d_out = nullptr;         // [B][T][K][dim], converted.
  float* d_summed = nullptr;     // One gradient per unique row.
  Dedup dedup;
  int64_t* h_tokens = nullptr;
  uint32_t* h_count = nullptr;
  int* h_bad = nullptr;
  uint64_t* h_unique = nullptr;
  uint8_t* h_staging = nullptr;
  float* h_summed = nullptr;
  cudaEvent_t ids_ready = nullptr, rows_ready = nullptr, grads_in = nullptr, grads_read = nullptr,
              grads_out = nullptr, released = nullptr;

  bool in_use = false, ready = false, pushing = false, released_recorded = false;
  Status status;
  int64_t layer = 0;
  size_t batch = 0, seq = 0;
  uint32_t unique = 0;
  std::promise<Status> push_done;
  std::shared_future<Status> push;
  cudaStream_t consumer = nullptr;  // The compute stream of the last Acquire or PushGrads.
};

class CudaLayerPrefetcher final : public client::LayerPrefetcher {
 public:
  CudaLayerPrefetcher(const client::EngramHasher* hasher, RowIo io, const LayerPrefetcherOptions& o)
      : hasher_(hasher), io_(std::move(io)), o_(o), k_(hasher->lookups_per_token()), slots_(o.max_in_flight) {}

  ~CudaLayerPrefetcher() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (push_thread_.joinable()) push_thread_.join();
    if (hash_stream_) cudaStreamSynchronize(hash_stream_);
    if (io_stream_) cudaStreamSynchronize(io_stream_);
    for (Slot& s : slots_) {
      for (void* p : {static_cast<void*>(s.d_ids), static_cast<void*>(s.d_unique), static_cast<void*>(s.d_inverse),
                      static_cast<void*>(s.d_count), static_cast<void*>(s.d_bad), static_cast<void*>(s.d_tokens),
                      static_cast<void*>(s.d_rows_in), s.d_out, static_cast<void*>(s.d_summed)}) {
        if (p) cudaFree(p);
      }
      for (void* p : {static_cast<void*>(s.h_tokens), static_cast<void*>(s.h_count), static_cast<void*>(s.h_bad),
                      static_cast<void*>(s.h_unique), static_cast<void*>(s.h_staging), static_cast<void*>(s.h_summed)}) {
        if (p) cudaFreeHost(p);
      }
      for (cudaEvent_t e : {s.ids_ready, s.rows_ready, s.grads_in, s.grads_read, s.grads_out, s.released}) {
        if (e) cudaEventDestroy(e);
      }
    }
    if (hash_stream_) cudaStreamDestroy(hash_stream_);
    if (io_stream_) cudaStreamDestroy(io_stream_);
  }

  Status Init() {
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&hash_stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&io_stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    for (int64_t layer : hasher_->spec().layer_ids) {
      auto up = std::make_unique<UploadedLayer>();
      ENGRAM_RETURN_IF_ERROR(Cuda(UploadedLayer::Create(*hasher_, layer, up.get()), "uploading the hash constants"));
      layers_[layer] = std::move(up);
    }
    const size_t tokens = o_.max_batch * o_.max_seq, n = tokens * static_cast<size_t>(k_);
    const size_t vb = ValueBytes(o_.dtype, o_.dim), ob = o_.out == RowOut::kF32 ? 4 : 2;
    for (Slot& s : slots_) {
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_ids, n * 8), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_unique, n * 8), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_inverse, n * 4), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_count, 4), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_bad, sizeof(int)), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_tokens, tokens * 8), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_rows_in, n * vb), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_out, n * o_.dim * ob), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMalloc(&s.d_summed, n * o_.dim * sizeof(float)), "cudaMalloc"));
      ENGRAM_RETURN_IF_ERROR(Cuda(Dedup::Create(n, &s.dedup), "allocating the de-duplication buffers"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_tokens, tokens * 8), "cudaMallocHost"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_count, 4), "cudaMallocHost"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_bad, sizeof(int)), "cudaMallocHost"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_unique, n * 8), "cudaMallocHost"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_staging, n * vb), "cudaMallocHost"));
      ENGRAM_RETURN_IF_ERROR(Cuda(cudaMallocHost(&s.h_summed, n * o_.dim * sizeof(float)), "cudaMallocHost"));
      for (cudaEvent_t* e : {&s.ids_ready, &s.rows_ready, &s.grads_in, &s.grads_read, &s.grads_out, &s.released}) {
        ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventCreateWithFlags(e, cudaEventDisableTiming), "cudaEventCreate"));
      }
    }
    thread_ = std::thread([this] { Run(&queue_); });
    push_thread_ = std::thread([this] { Run(&push_queue_); });
    return Status::OK();
  }

  StatusOr<int> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq) override {
    auto up = layers_.find(layer);
    if (up == layers_.end()) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram module");
    if (batch == 0 || seq == 0 || batch > o_.max_batch || seq > o_.max_seq || tokens.size() != batch * seq) {
      return Status::InvalidArgument("tokens must be [batch][seq] with batch <= " + std::to_string(o_.max_batch) +
                                     " and seq <= " + std::to_string(o_.max_seq));
    }
    int ticket = -1;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        for (size_t i = 0; i < slots_.size() && ticket < 0; ++i) {
          if (!slots_[i].in_use) ticket = static_cast<int>(i);
        }
        return ticket >= 0;
      });
      slots_[ticket].in_use = true;
    }
    Slot& s = slots_[ticket];
    s.ready = s.pushing = false;
    s.consumer = nullptr;
    s.status = Status::OK();
    s.layer = layer;
    s.batch = batch;
    s.seq = seq;
    const size_t n = batch * seq * static_cast<size_t>(k_);
    // The ticket's previous use finished with these buffers (Release waited for it).
    std::memcpy(s.h_tokens, tokens.data(), tokens.size() * sizeof(int64_t));
    Status st = Cuda(cudaMemcpyAsync(s.d_tokens, s.h_tokens, tokens.size() * 8, cudaMemcpyHostToDevice, hash_stream_),
                     "copying the tokens");
    if (st.ok()) st = Cuda(cudaMemsetAsync(s.d_bad, 0, sizeof(int), hash_stream_), "cudaMemsetAsync");
    if (st.ok()) st = Cuda(LaunchHash(up->second->view(), s.d_tokens, nullptr, batch, seq, s.d_ids, s.d_bad, hash_stream_), "hashing");
    if (st.ok()) st = Cuda(s.dedup.Run(s.d_ids, n, s.d_unique, s.d_inverse, s.d_count, hash_stream_), "de-duplicating");
    if (st.ok()) st = Cuda(cudaMemcpyAsync(s.h_count, s.d_count, 4, cudaMemcpyDeviceToHost, hash_stream_), "copying the count");
    if (st.ok()) st = Cuda(cudaMemcpyAsync(s.h_bad, s.d_bad, sizeof(int), cudaMemcpyDeviceToHost, hash_stream_), "cudaMemcpyAsync");
    if (st.ok()) st = Cuda(cudaEventRecord(s.ids_ready, hash_stream_), "cudaEventRecord");
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok()) {  // Nothing for the worker: the ticket is ready with its error.
      s.status = st;
      s.ready = true;
      cv_.notify_all();
      return ticket;
    }
    queue_.push_back({ticket, false});
    cv_.notify_all();
    return ticket;
  }

  StatusOr<const void*> Acquire(int ticket, void* compute_stream) override {
    ENGRAM_RETURN_IF_ERROR(CheckTicket(ticket));
    Slot& s = slots_[ticket];
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return s.ready; });
      ENGRAM_RETURN_IF_ERROR(s.status);
    }
    auto compute = static_cast<cudaStream_t>(compute_stream);
    s.consumer = compute;
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(compute, s.rows_ready, 0), "cudaStreamWaitEvent"));
    return static_cast<const void*>(s.d_out);
  }

  StatusOr<std::shared_future<Status>> PushGrads(int ticket, const float* grads, void* compute_stream) override {
    ENGRAM_RETURN_IF_ERROR(CheckTicket(ticket));
    Slot& s = slots_[ticket];
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return s.ready; });
      ENGRAM_RETURN_IF_ERROR(s.status);
      if (s.pushing) return Status::FailedPrecondition("ticket " + std::to_string(ticket) + " pushed its gradients already");
    }
    auto compute = static_cast<cudaStream_t>(compute_stream);
    s.consumer = compute;
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_in, compute), "cudaEventRecord"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(io_stream_, s.grads_in, 0), "cudaStreamWaitEvent"));
    ENGRAM_RETURN_IF_ERROR(Cuda(LaunchSegmentSum(grads, s.dedup.sorted_positions(), s.dedup.segment_starts(), s.d_count,
                                                 s.unique, o_.dim, s.d_summed, io_stream_),
                                "summing the gradients"));
    // Compute may overwrite `grads` once the (short) sum has read them; it waits for nothing else.
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_read, io_stream_), "cudaEventRecord"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(compute, s.grads_read, 0), "cudaStreamWaitEvent"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(s.h_summed, s.d_summed, size_t{s.unique} * o_.dim * sizeof(float),
                                                cudaMemcpyDeviceToHost, io_stream_),
                                "copying the gradients"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_out, io_stream_), "cudaEventRecord"));
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
      cv_.wait(lock, [&] { return s.ready; });
      if (s.pushing) push = s.push;
    }
    if (push.valid()) push.wait();
    // The next use's gather must not overwrite rows compute may still be reading.
    s.released_recorded = s.status.ok() && cudaEventRecord(s.released, s.consumer) == cudaSuccess;
    std::lock_guard<std::mutex> lock(mu_);
    s.in_use = false;
    cv_.notify_all();
  }

  size_t num_unique_rows(int ticket) const override { return CheckTicket(ticket).ok() ? slots_[ticket].unique : 0; }
  bool on_device() const override { return true; }
  int lookups_per_token() const override { return k_; }

 private:
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
        Status st = Cuda(cudaEventSynchronize(s.grads_out), "waiting for the gradients");
        if (st.ok()) st = io_.push(s.layer, std::span<const uint64_t>(s.h_unique, s.unique), s.h_summed);
        s.push_done.set_value(st);
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
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventSynchronize(s.ids_ready), "hashing"));
    if (*s.h_bad != 0) return Status::InvalidArgument("a token id is outside the spec's compression map");
    s.unique = *s.h_count;
    const size_t n = s.batch * s.seq * static_cast<size_t>(k_), vb = ValueBytes(o_.dtype, o_.dim);
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(s.h_unique, s.d_unique, size_t{s.unique} * 8, cudaMemcpyDeviceToHost, io_stream_),
                                "copying the row ids"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(io_stream_), "copying the row ids"));
    ENGRAM_RETURN_IF_ERROR(io_.pull(s.layer, std::span<const uint64_t>(s.h_unique, s.unique), s.h_staging));
    if (s.released_recorded) ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(io_stream_, s.released, 0), "cudaStreamWaitEvent"));
    s.released_recorded = false;
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(s.d_rows_in, s.h_staging, size_t{s.unique} * vb, cudaMemcpyHostToDevice, io_stream_),
                                "copying the rows to the device"));
    ENGRAM_RETURN_IF_ERROR(Cuda(LaunchGather(o_.dtype, o_.dim, s.d_rows_in, s.d_inverse, n,
                                             o_.out == RowOut::kF32 ? OutType::kF32 : OutType::kBF16, s.d_out, io_stream_),
                                "gathering the rows"));
    return Cuda(cudaEventRecord(s.rows_ready, io_stream_), "cudaEventRecord");
  }

  const client::EngramHasher* hasher_;
  const RowIo io_;
  const LayerPrefetcherOptions o_;
  const int k_;
  std::map<int64_t, std::unique_ptr<UploadedLayer>> layers_;
  std::vector<Slot> slots_;
  cudaStream_t hash_stream_ = nullptr, io_stream_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  // Pulls and pushes have a thread each: a step's pulls never wait behind the last step's pushes.
  std::deque<Job> queue_, push_queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;                   // GUARDED_BY(mu_)
  std::thread thread_, push_thread_;
};

}  // namespace

StatusOr<std::unique_ptr<client::LayerPrefetcher>> CreateCudaLayerPrefetcher(const client::EngramHasher* hasher,
                                                                             client::RowIo io,
                                                                             const client::LayerPrefetcherOptions& options) {
  std::string why;
  if (!DeviceAvailable(&why)) return Status::FailedPrecondition("no usable CUDA device: " + why);
  ENGRAM_RETURN_IF_ERROR(client::ValidateLayerPrefetcher(hasher, io, options));
  auto p = std::make_unique<CudaLayerPrefetcher>(hasher, std::move(io), options);
  ENGRAM_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<client::LayerPrefetcher>(std::move(p));
}

StatusOr<std::unique_ptr<client::LayerPrefetcher>> CreateLayerPrefetcher(const client::EngramHasher* hasher,
                                                                         client::RowIo io,
                                                                         const client::LayerPrefetcherOptions& options) {
  if (DeviceAvailable(nullptr)) return CreateCudaLayerPrefetcher(hasher, std::move(io), options);
  return client::CreateCpuLayerPrefetcher(hasher, std::move(io), options);
}

}  // namespace engram::gpu
