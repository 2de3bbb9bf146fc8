// Scalar conversions between f32 and the row formats engram-ps stores at rest:
// bf16, f16 (IEEE binary16), FP8 E4M3 (the "fn" variant: no infinities, max 448) and UE8M0
// block scales (an unsigned power-of-two exponent, value 2^(e-127)).
//
// All functions are pure, thread-safe and round to nearest even. They are written so that the
// CUDA kernels (gpu/) can reproduce them bit for bit.
#ifndef ENGRAM_NUMERIC_H_
#define ENGRAM_NUMERIC_H_

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace engram {

inline uint16_t F32ToBf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // qNaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float Bf16ToF32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t F32ToF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // Overflow -> inf.
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = m * 2^-24, round the f32 to that grid.
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // * 2^24, exact.
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);  // m may round up to 0x400, the smallest normal.
  }
  // Normal: rebias exponent (127 -> 15) and round the mantissa from 23 to 10 bits.
  uint32_t r = abs - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    const float v = static_cast<float>(man) * (1.0f / 16777216.0f);  // man * 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

// FP8 E4M3 (OCP "E4M3FN"): bias 7, 3 mantissa bits, S.1111.111 is NaN, max finite 448.
inline float Fp8E4M3ToF32(uint8_t b) {
  const uint32_t sign = b & 0x80u;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = static_cast<float>(man) * 0.001953125f;  // man * 2^-9
  } else {
    v = std::bit_cast<float>(((exp + 120u) << 23) | (man << 20));
  }
  return sign ? -v : v;
}

// Saturates finite values beyond 448 to +-448; NaN maps to NaN.
inline uint8_t F32ToFp8E4M3(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7f);
  const float a = std::bit_cast<float>(abs);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7e);
  if (a < 0.015625f) {  // Below 2^-6: subnormal grid m * 2^-9.
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(a * 512.0f));
    return static_cast<uint8_t>(sign | m);  // m == 8 is the smallest normal, encoded the same.
  }
  uint32_t r = abs - (120u << 23);  // Rebias 127 -> 7.
  r += 0x7ffffu + ((r >> 20) & 1u);
  return static_cast<uint8_t>(sign | (r >> 20));
}

// UE8M0: 2^(e - 127). e = 255 is NaN.
inline float Ue8m0ToF32(uint8_t e) {
  if (e == 255) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(e) - 127);
}

// The smallest UE8M0 scale s with amax / s <= 448, so a block quantises without saturation.
inline uint8_t Ue8m0ForAmax(float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 127;  // 2^0 for zero or bad blocks.
  const int e = static_cast<int>(std::ceil(std::log2(amax / 448.0f)));
  const int biased = e + 127;
  if (biased < 0) return 0;
  if (biased > 254) return 254;
  return static_cast<uint8_t>(biased);
}

}  // namespace engram

#endif  // ENGRAM_NUMERIC_H_
