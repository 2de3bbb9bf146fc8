// The CUDA engine of client::LayerPrefetcher (client/layer_prefetcher.h has the API and the
// pipeline's steps). Streams: the prefetcher owns three, for hashing and de-duplication (issued
// by Prefetch on the caller's thread), for the pull thread's copies and gathers, and for the
// backward segment-sums and copies; the caller's compute stream only ever waits on events:
//   Acquire:   compute waits for the ticket's gather (the rows have landed)
//   PushGrads: the segment-sum waits for compute's gradients; compute waits for the segment-sum
//              (a short kernel) before it may overwrite them; the copy to the host and the push
//              happen behind its back
//   Release:   the next use of the ticket's buffers waits for compute's work recorded so far
// Pinned host buffers and device buffers are allocated once, at Create.
#ifndef ENGRAM_GPU_CUDA_LAYER_PREFETCHER_H_
#define ENGRAM_GPU_CUDA_LAYER_PREFETCHER_H_

#include <memory>

#include "client/engram_hash.h"
#include "client/layer_prefetcher.h"
#include "engram/status.h"

namespace engram::gpu {

// The CUDA engine. FailedPrecondition when no CUDA device is usable (the message says why);
// ResourceExhausted when the buffers do not fit. `hasher` must outlive the prefetcher.
StatusOr<std::unique_ptr<client::LayerPrefetcher>> CreateCudaLayerPrefetcher(const client::EngramHasher* hasher,
                                                                             client::RowIo io,
                                                                             const client::LayerPrefetcherOptions& options);

// The CUDA engine when a device is usable, else the CPU engine (on_device() tells which).
StatusOr<std::unique_ptr<client::LayerPrefetcher>> CreateLayerPrefetcher(const client::EngramHasher* hasher,
                                                                         client::RowIo io,
                                                                         const client::LayerPrefetcherOptions& options);

}  // namespace engram::gpu

#endif  // ENGRAM_GPU_CUDA_LAYER_PREFETCHER_H_
