// Encoding and decoding whole rows between f32 and their at-rest dtype.
//
// Pure functions, thread-safe, allocation-free. FP8 rows (kFp8E4M3Ue8m0) are dim E4M3 bytes
// followed by dim/32 UE8M0 scale bytes; value = fp8 * 2^(scale - 127).
#ifndef ENGRAM_ROW_CODEC_H_
#define ENGRAM_ROW_CODEC_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engram/numeric.h"
#include "engram/table.h"

namespace engram {

// Decodes one row. REQUIRES: dtype != kBytes (opaque rows have no numeric value).
inline void DecodeRow(DType dtype, uint32_t dim, const uint8_t* src /* (value_bytes) */,
                      float* dst /* (dim) */) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, size_t{4} * dim);
      return;
    case DType::kBF16:
      for (uint32_t i = 0; i < dim; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = Bf16ToF32(h);
      }
      return;
    case DType::kF16:
      for (uint32_t i = 0; i < dim; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return;
    case DType::kFp8E4M3Ue8m0: {
      const uint8_t* scales = src + dim;
      for (uint32_t i = 0; i < dim; ++i) dst[i] = Fp8E4M3ToF32(src[i]) * Ue8m0ToF32(scales[i / kFp8BlockSize]);
      return;
    }
    case DType::kBytes:
      return;
  }
}

// Encodes one row (rounding to nearest even). For FP8 each 32-value block gets the smallest
// power-of-two scale that holds its largest magnitude. REQUIRES: dtype != kBytes.
inline void EncodeRow(DType dtype, uint32_t dim, const float* src /* (dim) */,
                      uint8_t* dst /* (value_bytes) */) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, size_t{4} * dim);
      return;
    case DType::kBF16:
      for (uint32_t i = 0; i < dim; ++i) {
        const uint16_t h = F32ToBf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kF16:
      for (uint32_t i = 0; i < dim; ++i) {
        const uint16_t h = F32ToF16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kFp8E4M3Ue8m0: {
      uint8_t* scales = dst + dim;
      for (uint32_t b = 0; b < dim / kFp8BlockSize; ++b) {
        float amax = 0.0f;
        for (size_t i = b * kFp8BlockSize; i < (b + 1) * kFp8BlockSize; ++i) amax = std::max(amax, std::fabs(src[i]));
        scales[b] = Ue8m0ForAmax(amax);
        const float inv = 1.0f / Ue8m0ToF32(scales[b]);
        for (size_t i = b * kFp8BlockSize; i < (b + 1) * kFp8BlockSize; ++i) dst[i] = F32ToFp8E4M3(src[i] * inv);
      }
      return;
    }
    case DType::kBytes:
      return;
  }
}

}  // namespace engram

#endif  // ENGRAM_ROW_CODEC_H_
