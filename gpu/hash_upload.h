// A layer's Engram hashing constants copied to the device, for gpu::LaunchHash.
#ifndef ENGRAM_GPU_HASH_UPLOAD_H_
#define ENGRAM_GPU_HASH_UPLOAD_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "client/engram_hash.h"
#include "gpu/kernels.h"

namespace engram::gpu {

// Owns the device copies (multipliers, per-head moduli and offsets, the compression map).
class UploadedLayer {
 public:
  // cudaErrorInvalidValue if `hasher` has no Engram module at `layer`.
  static cudaError_t Create(const client::EngramHasher& hasher, int64_t layer, UploadedLayer* out);
  UploadedLayer() = default;
  ~UploadedLayer();
  UploadedLayer(const UploadedLayer&) = delete;
  UploadedLayer& operator=(const UploadedLayer&) = delete;

  const DeviceHashLayer& view() const { return view_; }
  int lookups_per_token() const { return (view_.max_ngram - 1) * view_.heads; }

 private:
  DeviceHashLayer view_;
  uint64_t* multipliers_ = nullptr;
  HeadMod* mods_ = nullptr;
  int64_t* compression_ = nullptr;
};

}  // namespace engram::gpu

#endif  // ENGRAM_GPU_HASH_UPLOAD_H_
