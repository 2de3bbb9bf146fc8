// CUDA kernels of the Engram GPU path; see gpu/kernels.h for the contracts and their CPU twins.
#include "gpu/kernels.h"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <utility>

namespace engram::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxNgram = 16;

unsigned Blocks(size_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// FastMod64::FloorMod (include/engram/fast_mod.h) on the device: the same constants, the same
// integer steps, so the same result for every int64.
__device__ uint64_t FloorMod(const HeadMod& h, int64_t x) {
  const uint64_t n = static_cast<uint64_t>(x);
  const uint64_t t1 = __umul64hi(h.m, n);
  const uint64_t q = (t1 + ((n - t1) >> h.sh1)) >> h.sh2;
  const uint64_t r = n - q * h.d;
  const uint64_t c = x < 0 ? h.two64_mod_d : 0;
  return r >= c ? r - c : r + h.d - c;
}

__device__ int64_t Compress(const DeviceHashLayer& L, int64_t id, int* bad) {
  if (L.compression == nullptr || id < 0) return id;
  if (static_cast<uint64_t>(id) >= L.vocab) {
    *bad = 1;
    return 0;
  }
  return L.compression[id];
}

__global__ void HashKernel(DeviceHashLayer L, const int64_t* tokens, const int64_t* left, size_t batch, size_t seq,
                           uint64_t* out, int* bad) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= batch * seq) return;
  const size_t b = i / seq, t = i % seq;
  const int ctx = L.max_ngram - 1;
  int64_t c[kMaxNgram];  // c[k]: the compressed id k tokens back.
  for (int k = 0; k <= ctx; ++k) {
    const int64_t at = static_cast<int64_t>(t) - k;
    if (at >= 0) {
      c[k] = Compress(L, tokens[b * seq + at], bad);
    } else if (left != nullptr) {
      c[k] = Compress(L, left[b * ctx + (ctx + at)], bad);
    } else {
      c[k] = L.pad;
    }
  }
  uint64_t* o = out + i * static_cast<size_t>(ctx * L.heads);
  uint64_t mix = static_cast<uint64_t>(c[0]) * L.multipliers[0];  // int64 products wrap, as in numpy.
  const HeadMod* mod = L.mods;
  for (int n = 2; n <= L.max_ngram; ++n) {
    mix ^= static_cast<uint64_t>(c[n - 1]) * L.multipliers[n - 1];
    const int64_t smix = static_cast<int64_t>(mix);
    for (int j = 0; j < L.heads; ++j) *o++ = FloorMod(mod[j], smix) + mod[j].offset;
    mod += L.heads;
  }
}

__global__ void IotaKernel(uint32_t* p, size_t n) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = static_cast<uint32_t>(i);
}

__global__ void HeadFlagsKernel(const uint64_t* sorted, size_t n, uint32_t* flags) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < n) flags[i] = (i == 0 || sorted[i] != sorted[i - 1]) ? 1u : 0u;
}

__global__ void ScatterKernel(const uint64_t* sorted, const uint32_t* pos, const uint32_t* flags, const uint32_t* scan,
                              size_t n, uint64_t* unique, uint32_t* inverse, uint32_t* seg, uint32_t* num_unique) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const uint32_t u = scan[i] - 1;
  if (flags[i]) {
    unique[u] = sorted[i];
    seg[u] = static_cast<uint32_t>(i);
  }
  inverse[pos[i]] = u;
  if (i == n - 1) {
    *num_unique = scan[i];
    seg[scan[i]] = static_cast<uint32_t>(n);
  }
}

// include/engram/numeric.h's conversions, bit for bit.
__device__ float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    const float v = static_cast<float>(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

__device__ float Fp8E4M3ToF32(uint8_t b) {
  const uint32_t sign = b & 0x80u;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) {
    v = __uint_as_float(0x7fc00000u);
  } else if (exp == 0) {
    v = static_cast<float>(man) * 0.001953125f;
  } else {
    v = __uint_as_float(((exp + 120u) << 23) | (man << 20));
  }
  return sign ? -v : v;
}

__device__ float Ue8m0ToF32(uint8_t e) {
  if (e == 255) return __uint_as_float(0x7fc00000u);
  if (e == 0) return __uint_as_float(0x00400000u);  // 2^-127, subnormal.
  return __uint_as_float(static_cast<uint32_t>(e) << 23);
}

__device__ uint16_t F32ToBf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__global__ void GatherKernel(DType dtype, uint32_t dim, size_t value_bytes, const uint8_t* rows,
                             const uint32_t* inverse, size_t n, OutType out_type, void* out) {
  const size_t e = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (e >= n * dim) return;
  const size_t i = e / dim;
  const uint32_t c = static_cast<uint32_t>(e % dim);
  const uint8_t* row = rows + static_cast<size_t>(inverse[i]) * value_bytes;
  float v = 0.0f;
  switch (dtype) {
    case DType::kF32: v = reinterpret_cast<const float*>(row)[c]; break;
    case DType::kBF16: v = __uint_as_float(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[c]) << 16); break;
    case DType::kF16: v = F16ToF32(reinterpret_cast<const uint16_t*>(row)[c]); break;
    case DType::kFp8E4M3Ue8m0: v = Fp8E4M3ToF32(row[c]) * Ue8m0ToF32(row[dim + c / kFp8BlockSize]); break;
    case DType::kBytes: break;  // Refused by the host wrapper.
  }
  if (out_type == OutType::kF32) {
    static_cast<float*>(out)[e] = v;
  } else {
    static_cast<uint16_t*>(out)[e] = F32ToBf16(v);
  }
}

__global__ void SegmentSumKernel(const float* grads, const uint32_t* pos, const uint32_t* seg,
                                 const uint32_t* num_unique, uint32_t dim, float* out) {
  const uint32_t u = blockIdx.x;
  if (u >= *num_unique) return;
  for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float acc = 0.0f;  // As SumByInverse: from zero, positions in ascending order.
    for (uint32_t k = seg[u]; k < seg[u + 1]; ++k) acc += grads[static_cast<size_t>(pos[k]) * dim + c];
    out[static_cast<size_t>(u) * dim + c] = acc;
  }
}

}  // namespace

bool DeviceAvailable(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    cudaGetLastError();  // Clear the sticky-free error so later calls are not confused by it.
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  return true;
}

cudaError_t LaunchHash(const DeviceHashLayer& layer, const int64_t* tokens, const int64_t* left, size_t batch,
                       size_t seq, uint64_t* out, int* bad, cudaStream_t stream) {
  if (layer.max_ngram < 2 || layer.max_ngram > kMaxNgram || layer.heads < 1) return cudaErrorInvalidValue;
  if (batch * seq == 0) return cudaSuccess;
  HashKernel<<<Blocks(batch * seq), kThreads, 0, stream>>>(layer, tokens, left, batch, seq, out, bad);
  return cudaGetLastError();
}

cudaError_t Dedup::Create(size_t max_n, Dedup* out) {
  out->Free();
  out->max_n_ = max_n;
  const size_t n = std::max<size_t>(max_n, 1);
  size_t sort_bytes = 0, scan_bytes = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint64_t*>(nullptr),
                                                  static_cast<uint64_t*>(nullptr), static_cast<const uint32_t*>(nullptr),
                                                  static_cast<uint32_t*>(nullptr), n);
  if (e != cudaSuccess) return e;
  e = cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, static_cast<const uint32_t*>(nullptr),
                                    static_cast<uint32_t*>(nullptr), n);
  if (e != cudaSuccess) return e;
  out->temp_bytes_ = std::max(sort_bytes, scan_bytes);
  // flags_ holds 2n: the head flags, then their inclusive scan.
  if ((e = cudaMalloc(&out->keys_out_, n * sizeof(uint64_t))) != cudaSuccess ||
      (e = cudaMalloc(&out->pos_in_, n * sizeof(uint32_t))) != cudaSuccess ||
      (e = cudaMalloc(&out->pos_out_, n * sizeof(uint32_t))) != cudaSuccess ||
      (e = cudaMalloc(&out->flags_, 2 * n * sizeof(uint32_t))) != cudaSuccess ||
      (e = cudaMalloc(&out->seg_, (n + 1) * sizeof(uint32_t))) != cudaSuccess ||
      (e = cudaMalloc(&out->temp_, out->temp_bytes_)) != cudaSuccess) {
    out->Free();
    return e;
  }
  return cudaSuccess;
}

void Dedup::Free() {
  for (void* p : {static_cast<void*>(keys_out_), static_cast<void*>(pos_in_), static_cast<void*>(pos_out_),
                  static_cast<void*>(flags_), static_cast<void*>(seg_), temp_}) {
    if (p != nullptr) cudaFree(p);
  }
  keys_out_ = nullptr;
  pos_in_ = pos_out_ = flags_ = seg_ = nullptr;
  temp_ = nullptr;
  temp_bytes_ = max_n_ = 0;
}

Dedup::~Dedup() { Free(); }

Dedup::Dedup(Dedup&& o) noexcept { *this = std::move(o); }

Dedup& Dedup::operator=(Dedup&& o) noexcept {
  if (this != &o) {
    Free();
    std::swap(max_n_, o.max_n_);
    std::swap(keys_out_, o.keys_out_);
    std::swap(pos_in_, o.pos_in_);
    std::swap(pos_out_, o.pos_out_);
    std::swap(flags_, o.flags_);
    std::swap(seg_, o.seg_);
    std::swap(temp_, o.temp_);
    std::swap(temp_bytes_, o.temp_bytes_);
  }
  return *this;
}

cudaError_t Dedup::Run(const uint64_t* ids, size_t n, uint64_t* unique, uint32_t* inverse, uint32_t* num_unique,
                       cudaStream_t stream) {
  if (n > max_n_) return cudaErrorInvalidValue;
  if (n == 0) return cudaMemsetAsync(num_unique, 0, sizeof(uint32_t), stream);
  IotaKernel<<<Blocks(n), kThreads, 0, stream>>>(pos_in_, n);
  size_t bytes = temp_bytes_;
  // Stable: equal ids keep ascending positions, which the segment-sum's order relies on.
  cudaError_t e = cub::DeviceRadixSort::SortPairs(temp_, bytes, ids, keys_out_, pos_in_, pos_out_, n, 0, 64, stream);
  if (e != cudaSuccess) return e;
  HeadFlagsKernel<<<Blocks(n), kThreads, 0, stream>>>(keys_out_, n, flags_);
  uint32_t* scan = flags_ + std::max<size_t>(max_n_, 1);
  bytes = temp_bytes_;
  e = cub::DeviceScan::InclusiveSum(temp_, bytes, flags_, scan, n, stream);
  if (e != cudaSuccess) return e;
  ScatterKernel<<<Blocks(n), kThreads, 0, stream>>>(keys_out_, pos_out_, flags_, scan, n, unique, inverse, seg_,
                                                    num_unique);
  return cudaGetLastError();
}

cudaError_t LaunchGather(DType dtype, uint32_t dim, const uint8_t* unique_rows, const uint32_t* inverse, size_t n,
                         OutType out_type, void* out, cudaStream_t stream) {
  if (dtype == DType::kBytes || dim == 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  GatherKernel<<<Blocks(n * dim), kThreads, 0, stream>>>(dtype, dim, ValueBytes(dtype, dim), unique_rows, inverse, n,
                                                         out_type, out);
  return cudaGetLastError();
}

cudaError_t LaunchSegmentSum(const float* grads, const uint32_t* sorted_positions, const uint32_t* segment_starts,
                             const uint32_t* num_unique, size_t max_unique, uint32_t dim, float* out,
                             cudaStream_t stream) {
  if (max_unique == 0 || dim == 0) return cudaSuccess;
  SegmentSumKernel<<<static_cast<unsigned>(max_unique), std::min<uint32_t>(dim, 256), 0, stream>>>(
      grads, sorted_positions, segment_starts, num_unique, dim, out);
  return cudaGetLastError();
}

}  // namespace engram::gpu
