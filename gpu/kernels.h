// CUDA kernels of the GPU worker's Engram path (issue 7), each with a CPU reference elsewhere in
// the project that its parity test compares against bit for bit:
//   hashing        client/engram_hash.h (EngramHasher::Hash)
//   de-duplication client/dedup.h (Deduplicate)
//   gather+convert include/engram/row_codec.h (DecodeRow), f32 -> bf16 by F32ToBf16
//   segment-sum    client/dedup.h (SumByInverse): same summation order, so the same bits
// All pointers are device memory unless said otherwise; every call is asynchronous on `stream`
// and returns the launch error. Built only when CUDA is found (gpu/CMakeLists.txt).
#ifndef ENGRAM_GPU_KERNELS_H_
#define ENGRAM_GPU_KERNELS_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "engram/table.h"

namespace engram::gpu {

// True when a CUDA device can be used; otherwise `why` says why (no driver, no device).
bool DeviceAvailable(std::string* why);

// One head's modulus: FastMod64's constants plus the head's first row in the layer's table.
struct HeadMod {
  uint64_t d, m, two64_mod_d, offset;
  int32_t sh1, sh2;
};

// A layer's hashing, in device memory (built by gpu::UploadLayer from an EngramHasher).
struct DeviceHashLayer {
  int32_t max_ngram = 0, heads = 0;
  int64_t pad = 0;                       // Compressed pad id (left of the sequence).
  const uint64_t* multipliers = nullptr;  // [max_ngram]
  const HeadMod* mods = nullptr;          // [(max_ngram - 1) * heads], orders outer.
  const int64_t* compression = nullptr;   // [vocab] original -> compressed; nullptr: none.
  uint64_t vocab = 0;
};

// out[b][t][(max_ngram - 1) * heads] := global row ids of tokens[b][t] (original ids).
// `left` ([batch][max_ngram - 1] original ids, oldest first) or nullptr (pad). A token outside
// the compression map sets *bad (device int) to 1; its row ids are then unspecified.
cudaError_t LaunchHash(const DeviceHashLayer& layer, const int64_t* tokens, const int64_t* left, size_t batch,
                       size_t seq, uint64_t* out, int* bad, cudaStream_t stream);

// De-duplication: unique := the sorted distinct ids, inverse[i] := index of ids[i] in unique.
// Also the sorted positions and segment starts the segment-sum uses. Buffers are allocated once
// for up to `max_n` ids and reused (no allocation per call).
class Dedup {
 public:
  static cudaError_t Create(size_t max_n, Dedup* out);
  ~Dedup();
  Dedup() = default;
  Dedup(const Dedup&) = delete;
  Dedup& operator=(const Dedup&) = delete;
  Dedup(Dedup&& o) noexcept;
  Dedup& operator=(Dedup&& o) noexcept;

  // *num_unique (device uint32) := distinct ids; unique[0, *num_unique) sorted ascending.
  cudaError_t Run(const uint64_t* ids, size_t n, uint64_t* unique, uint32_t* inverse, uint32_t* num_unique,
                  cudaStream_t stream);
  // After Run: positions sorted by (id, position), and for unique row u its positions are
  // sorted_positions[segment_starts[u] .. segment_starts[u + 1]).
  const uint32_t* sorted_positions() const { return pos_out_; }
  const uint32_t* segment_starts() const { return seg_; }

 private:
  void Free();
  size_t max_n_ = 0;
  uint64_t* keys_out_ = nullptr;
  uint32_t* pos_in_ = nullptr;
  uint32_t* pos_out_ = nullptr;
  uint32_t* flags_ = nullptr;  // Then the inclusive scan of the head flags.
  uint32_t* seg_ = nullptr;
  void* temp_ = nullptr;
  size_t temp_bytes_ = 0;
};

enum class OutType : uint8_t { kF32 = 0, kBF16 = 1 };

// out[i][c] := value c of unique_rows[inverse[i]] (rows at rest of `dtype`, value_bytes each;
// device memory or mapped pinned host memory), converted to f32 or bf16. For the Engram layout
// [B][T][K][dim] pass n = B*T*K with inverse in that order.
cudaError_t LaunchGather(DType dtype, uint32_t dim, const uint8_t* unique_rows, const uint32_t* inverse, size_t n,
                         OutType out_type, void* out, cudaStream_t stream);

// out[u][c] := sum over the positions p of unique row u, in ascending p, of grads[p][c]
// (f32), for u < *num_unique: one gradient per unique row, ready for the push.
cudaError_t LaunchSegmentSum(const float* grads, const uint32_t* sorted_positions, const uint32_t* segment_starts,
                             const uint32_t* num_unique, size_t max_unique, uint32_t dim, float* out,
                             cudaStream_t stream);

}  // namespace engram::gpu

#endif  // ENGRAM_GPU_KERNELS_H_
