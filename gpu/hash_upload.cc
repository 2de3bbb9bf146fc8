// UploadedLayer: an EngramHasher layer's constants in device memory.
#include "gpu/hash_upload.h"

#include <vector>

namespace engram::gpu {

cudaError_t UploadedLayer::Create(const client::EngramHasher& hasher, int64_t layer, UploadedLayer* out) {
  const auto* L = hasher.layer(layer);
  if (L == nullptr) return cudaErrorInvalidValue;
  const auto& spec = hasher.spec();
  std::vector<HeadMod> mods(L->mods.size());
  for (size_t i = 0; i < mods.size(); ++i) {
    const FastMod64::Params p = L->mods[i].params();
    mods[i] = {p.d, p.m, p.two64_mod_d, L->offsets[i], p.sh1, p.sh2};
  }
  cudaError_t e;
  if ((e = cudaMalloc(&out->multipliers_, L->multipliers.size() * sizeof(uint64_t))) != cudaSuccess) return e;
  if ((e = cudaMemcpy(out->multipliers_, L->multipliers.data(), L->multipliers.size() * sizeof(uint64_t),
                      cudaMemcpyHostToDevice)) != cudaSuccess) {
    return e;
  }
  if ((e = cudaMalloc(&out->mods_, mods.size() * sizeof(HeadMod))) != cudaSuccess) return e;
  if ((e = cudaMemcpy(out->mods_, mods.data(), mods.size() * sizeof(HeadMod), cudaMemcpyHostToDevice)) != cudaSuccess) {
    return e;
  }
  if (!spec.compression.empty()) {
    const size_t bytes = spec.compression.size() * sizeof(int64_t);
    if ((e = cudaMalloc(&out->compression_, bytes)) != cudaSuccess) return e;
    if ((e = cudaMemcpy(out->compression_, spec.compression.data(), bytes, cudaMemcpyHostToDevice)) != cudaSuccess) {
      return e;
    }
  }
  out->view_.max_ngram = spec.max_ngram_size;
  out->view_.heads = spec.n_head_per_ngram;
  out->view_.pad = hasher.compressed_pad();
  out->view_.multipliers = out->multipliers_;
  out->view_.mods = out->mods_;
  out->view_.compression = out->compression_;
  out->view_.vocab = spec.compression.size();
  return cudaSuccess;
}

UploadedLayer::~UploadedLayer() {
  if (multipliers_) cudaFree(multipliers_);
  if (mods_) cudaFree(mods_);
  if (compression_) cudaFree(compression_);
}

}  // namespace engram::gpu
