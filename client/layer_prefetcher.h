// LayerPrefetcher: the GPU worker's layer-ahead Engram pipeline, one API for two engines.
//
//   auto t = pf->Prefetch(15, tokens, B, T);      // at step start: hash, dedup, pulls in flight
//   ... layers 1..14 run on `compute` ...
//   auto rows = pf->Acquire(*t, compute);         // [B][T][K][dim]; `compute` waits for them
//   ... the Engram layer and its backward run on `compute` ...
//   auto done = pf->PushGrads(*t, grads, compute);  // summed per unique row, pushed async
//   pf->Release(*t);                              // the ticket's buffers go back to the ring
//
// Engines:
//  - CUDA (gpu/cuda_layer_prefetcher.h): hash and de-duplication on the GPU (side stream), the
//    unique row ids copied to the host, the pull into a pinned staging buffer, the host-to-device
//    copy and the gather+convert on the side stream, and an event the compute stream waits on.
//    Backward: segment-sum on the GPU after the compute stream's gradients, device-to-host into
//    pinned memory, and the push on the prefetcher's push thread. The compute stream never blocks.
//  - CPU (CreateCpuLayerPrefetcher, here): the same steps on the host, on the prefetcher's own
//    thread; "device" pointers are host pointers and streams are ignored. The demo and machines
//    without a GPU use it. gpu::CreateLayerPrefetcher picks CUDA when a device is usable.
//
// All buffers are allocated at creation for `max_batch` x `max_seq` tokens and `max_in_flight`
// tickets (a ring): steady-state steps allocate nothing, host or device. Prefetch blocks while
// every ticket is in use (Release returns one). Rows a ticket's Acquire returned stay valid
// until its Release.
// Thread-safety: Prefetch, Acquire, PushGrads and Release may be called from any thread, but
// one ticket's calls must be ordered (Prefetch, Acquire, optionally PushGrads, Release).
#ifndef ENGRAM_CLIENT_LAYER_PREFETCHER_H_
#define ENGRAM_CLIENT_LAYER_PREFETCHER_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <span>

#include "client/engram_hash.h"
#include "engram/status.h"
#include "engram/table.h"

namespace engram::client {

// Where rows come from and gradients go: TableHandle::Pull and Push of the layer's table in a
// trainer (ClientRowIo), an in-memory table in tests and benchmarks. Called on the prefetcher's
// thread. `pull` fills out[i] (value_bytes of the table's dtype) with row ids[i]; `push` applies
// grads[i] (dim f32) to row ids[i]; ids are distinct and ascending.
struct RowIo {
  std::function<Status(int64_t layer, std::span<const uint64_t> ids, uint8_t* out)> pull;
  std::function<Status(int64_t layer, std::span<const uint64_t> ids, const float* grads)> push;
};

enum class RowOut : uint8_t { kF32 = 0, kBF16 = 1 };

struct LayerPrefetcherOptions {
  size_t max_batch = 8, max_seq = 4096;  // Tokens per micro-batch the buffers are sized for.
  size_t max_in_flight = 8;              // Tickets: e.g. Engram layers x micro-batches in flight.
  DType dtype = DType::kF32;             // The layer tables' row format at rest...
  uint32_t dim = 0;                      // ...and row dim (every Engram layer's table alike).
  RowOut out = RowOut::kF32;             // What Acquire's rows are converted to.
};

class LayerPrefetcher {
 public:
  virtual ~LayerPrefetcher() = default;
  // Starts the work for `layer`'s lookups of `tokens` ([batch][seq] original ids; copied, so
  // they may be reused at once). Returns a ticket. InvalidArgument for a layer without an
  // Engram module or a shape beyond the options; blocks while all tickets are in use.
  virtual StatusOr<int> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq) = 0;
  // The ticket's rows, [batch][seq][K][dim] of the options' `out` type: device memory ordered
  // before later work on `compute_stream` (a cudaStream_t; nullptr: the legacy stream) with the
  // CUDA engine, host memory with the CPU engine. Waits on the host only until the pulls are
  // done and the copies are queued. Errors of the pull (a dead server, ...) come back here.
  virtual StatusOr<const void*> Acquire(int ticket, void* compute_stream) = 0;
  // Gradients for the ticket's rows in the same layout (f32; device memory, written by work
  // on `compute_stream`, with the CUDA engine): summed per unique row and pushed on the
  // prefetcher's push thread. The future says how the push went. `grads` may be overwritten once
  // later work on `compute_stream` runs (the CPU engine: once this returns).
  virtual StatusOr<std::shared_future<Status>> PushGrads(int ticket, const float* grads, void* compute_stream) = 0;
  // Gives the ticket back (after its push, if any, was handed over: the push completes first).
  virtual void Release(int ticket) = 0;
  // Distinct rows the ticket's lookups hit. REQUIRES: Acquire returned OK.
  virtual size_t num_unique_rows(int ticket) const = 0;
  virtual bool on_device() const = 0;
  // Lookups per token (K) and the options.
  virtual int lookups_per_token() const = 0;
};

// What both engines check at creation: InvalidArgument unless there is a hasher, both row
// functions, a dim, a numeric dtype and positive sizes.
Status ValidateLayerPrefetcher(const EngramHasher* hasher, const RowIo& io, const LayerPrefetcherOptions& options);

// What both engines' Prefetch checks: InvalidArgument for a layer without an Engram module or
// tokens that are not [batch][seq] within the options' sizes.
Status CheckPrefetch(const EngramHasher& hasher, const LayerPrefetcherOptions& options, int64_t layer,
                     std::span<const int64_t> tokens, size_t batch, size_t seq);

// The CPU engine. `hasher` must outlive the prefetcher.
StatusOr<std::unique_ptr<LayerPrefetcher>> CreateCpuLayerPrefetcher(const EngramHasher* hasher, RowIo io,
                                                                    const LayerPrefetcherOptions& options);

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_LAYER_PREFETCHER_H_
