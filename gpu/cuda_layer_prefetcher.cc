// The CUDA engine of LayerPrefetcher: a ring of tickets, each with its device and pinned host
// buffers and events, and two streams, on client::TicketRing (its pull and push threads).
#include "gpu/cuda_layer_prefetcher.h"

#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "client/ticket_ring.h"
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
// prefetcher; the fields after the events belong to the ticket's caller or a worker, in turn.
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
  uint32_t unique = 0;
  bool released_recorded = false;   // `released` marks the last use's end on its compute stream.
  cudaStream_t consumer = nullptr;  // The compute stream of the last Acquire or PushGrads.
};

class CudaLayerPrefetcher final : public client::LayerPrefetcher, private client::TicketRing {
 public:
  CudaLayerPrefetcher(const client::EngramHasher* hasher, RowIo io, const LayerPrefetcherOptions& o)
      : TicketRing(o.max_in_flight), hasher_(hasher), io_(std::move(io)), o_(o), k_(hasher->lookups_per_token()),
        slots_(o.max_in_flight) {}

  ~CudaLayerPrefetcher() override {
    StopWorkers();
    if (hash_stream_) cudaStreamSynchronize(hash_stream_);
    if (io_stream_) cudaStreamSynchronize(io_stream_);
    if (grad_stream_) cudaStreamSynchronize(grad_stream_);
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
    if (grad_stream_) cudaStreamDestroy(grad_stream_);
  }

  Status Init() {
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&hash_stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&io_stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamCreateWithFlags(&grad_stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
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
    StartWorkers();
    return Status::OK();
  }

  StatusOr<int> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq) override {
    ENGRAM_RETURN_IF_ERROR(client::CheckPrefetch(*hasher_, o_, layer, tokens, batch, seq));
    const UploadedLayer& up = *layers_.at(layer);
    const int t = Take({layer, batch, seq});
    Slot& s = slots_[t];
    s.consumer = nullptr;
    const size_t n = batch * seq * static_cast<size_t>(k_);
    // The ticket's previous use finished with these buffers (Release waited for it).
    std::memcpy(s.h_tokens, tokens.data(), tokens.size() * sizeof(int64_t));
    // The last use's gather reads the inverse index this use's dedup rewrites (an event never
    // recorded yet is no wait).
    Status st = Cuda(cudaStreamWaitEvent(hash_stream_, s.rows_ready, 0), "cudaStreamWaitEvent");
    if (st.ok()) {
      st = Cuda(cudaMemcpyAsync(s.d_tokens, s.h_tokens, tokens.size() * 8, cudaMemcpyHostToDevice, hash_stream_),
                "copying the tokens");
    }
    if (st.ok()) st = Cuda(cudaMemsetAsync(s.d_bad, 0, sizeof(int), hash_stream_), "cudaMemsetAsync");
    if (st.ok()) st = Cuda(LaunchHash(up.view(), s.d_tokens, nullptr, batch, seq, s.d_ids, s.d_bad, hash_stream_), "hashing");
    if (st.ok()) st = Cuda(s.dedup.Run(s.d_ids, n, s.d_unique, s.d_inverse, s.d_count, hash_stream_), "de-duplicating");
    if (st.ok()) st = Cuda(cudaMemcpyAsync(s.h_count, s.d_count, 4, cudaMemcpyDeviceToHost, hash_stream_), "copying the count");
    if (st.ok()) st = Cuda(cudaMemcpyAsync(s.h_bad, s.d_bad, sizeof(int), cudaMemcpyDeviceToHost, hash_stream_), "cudaMemcpyAsync");
    // All n slots, though only the first *h_count are distinct rows: the count is not known on the
    // host yet, and a second round trip would cost more than the bytes (8 per lookup).
    if (st.ok()) st = Cuda(cudaMemcpyAsync(s.h_unique, s.d_unique, n * 8, cudaMemcpyDeviceToHost, hash_stream_), "copying the row ids");
    if (st.ok()) st = Cuda(cudaEventRecord(s.ids_ready, hash_stream_), "cudaEventRecord");
    Enqueue(t, st);  // With an error nothing is queued: the ticket is ready with it.
    return t;
  }

  StatusOr<const void*> Acquire(int ticket, void* compute_stream) override {
    ENGRAM_RETURN_IF_ERROR(WaitReady(ticket));
    Slot& s = slots_[ticket];
    auto compute = static_cast<cudaStream_t>(compute_stream);
    s.consumer = compute;
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(compute, s.rows_ready, 0), "cudaStreamWaitEvent"));
    return static_cast<const void*>(s.d_out);
  }

  StatusOr<std::shared_future<Status>> PushGrads(int ticket, const float* grads, void* compute_stream) override {
    ENGRAM_RETURN_IF_ERROR(WaitReady(ticket, /*for_push=*/true));
    Slot& s = slots_[ticket];
    auto compute = static_cast<cudaStream_t>(compute_stream);
    s.consumer = compute;
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_in, compute), "cudaEventRecord"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(grad_stream_, s.grads_in, 0), "cudaStreamWaitEvent"));
    ENGRAM_RETURN_IF_ERROR(Cuda(LaunchSegmentSum(grads, s.dedup.sorted_positions(), s.dedup.segment_starts(), s.d_count,
                                                 s.unique, o_.dim, s.d_summed, grad_stream_),
                                "summing the gradients"));
    // Compute may overwrite `grads` once the (short) sum has read them; it waits for nothing else.
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_read, grad_stream_), "cudaEventRecord"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaStreamWaitEvent(compute, s.grads_read, 0), "cudaStreamWaitEvent"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaMemcpyAsync(s.h_summed, s.d_summed, size_t{s.unique} * o_.dim * sizeof(float),
                                                cudaMemcpyDeviceToHost, grad_stream_),
                                "copying the gradients"));
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventRecord(s.grads_out, grad_stream_), "cudaEventRecord"));
    return EnqueuePush(ticket);
  }

  void Release(int ticket) override { ReleaseTicket(ticket); }

  size_t num_unique_rows(int ticket) const override { return CheckTicket(ticket).ok() ? slots_[ticket].unique : 0; }
  bool on_device() const override { return true; }
  int lookups_per_token() const override { return k_; }

 private:
  Status Push(int t) override {
    Slot& s = slots_[t];
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventSynchronize(s.grads_out), "waiting for the gradients"));
    return io_.push(ticket(t).layer, std::span<const uint64_t>(s.h_unique, s.unique), s.h_summed);
  }

  // The next use's gather must not overwrite rows compute may still be reading.
  void OnRelease(int t) override {
    Slot& s = slots_[t];
    s.released_recorded = forward_status(t).ok() && cudaEventRecord(s.released, s.consumer) == cudaSuccess;
  }

  Status Forward(int t) override {
    Slot& s = slots_[t];
    const Ticket& k = ticket(t);
    ENGRAM_RETURN_IF_ERROR(Cuda(cudaEventSynchronize(s.ids_ready), "hashing"));
    if (*s.h_bad != 0) return Status::InvalidArgument("a token id is outside the spec's compression map");
    s.unique = *s.h_count;
    const size_t n = k.batch * k.seq * static_cast<size_t>(k_), vb = ValueBytes(o_.dtype, o_.dim);
    ENGRAM_RETURN_IF_ERROR(io_.pull(k.layer, std::span<const uint64_t>(s.h_unique, s.unique), s.h_staging));
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
  // Hashing and dedup; the forward copies and gathers; the backward sums and copies. Apart, so
  // that no pull waits behind a backward that waits for the compute stream.
  cudaStream_t hash_stream_ = nullptr, io_stream_ = nullptr, grad_stream_ = nullptr;
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
