// Deterministic row initialisation: a row's initial value is a pure function of
// (init seed, row id, column), so untouched rows need no storage and no initialisation pass,
// and any component (server, client, GPU) can compute them.
//
// Generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11), the counter-based generator of cuRAND and JAX. Key = the 64-bit seed; counter =
// (row low, row high, column / 4, stream). Uniform values take the top 24 bits of a word; normal
// values use Box-Muller on two words in double precision, then round to float.
#ifndef ENGRAM_INIT_H_
#define ENGRAM_INIT_H_

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engram/row_codec.h"
#include "engram/table.h"

namespace engram {

inline std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
    key[0] += kW0;
    key[1] += kW1;
  }
  return ctr;
}

// Fills out[0..dim) with row `row`'s initial value. Columns are produced four at a time, so a
// row costs dim/4 (uniform) or dim/2 (normal) Philox blocks. Thread-safe, allocation-free.
inline void InitialRow(const InitConfig& cfg, uint64_t row, uint32_t dim, float* out /* (dim) */) {
  if (cfg.kind == InitKind::kZeros || cfg.scale == 0.0f) {
    for (uint32_t c = 0; c < dim; ++c) out[c] = 0.0f;
    return;
  }
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(cfg.seed),
                                       static_cast<uint32_t>(cfg.seed >> 32)};
  const uint32_t lo = static_cast<uint32_t>(row), hi = static_cast<uint32_t>(row >> 32);
  constexpr double kInv24 = 1.0 / 16777216.0;
  if (cfg.kind == InitKind::kUniform) {
    for (uint32_t c0 = 0; c0 < dim; c0 += 4) {
      const auto r = Philox4x32({lo, hi, c0 / 4, 0u}, key);
      for (uint32_t i = 0; i < 4 && c0 + i < dim; ++i) {
        const double u = static_cast<double>(r[i] >> 8) * kInv24;  // [0, 1)
        out[c0 + i] = static_cast<float>((2.0 * u - 1.0) * cfg.scale);
      }
    }
    return;
  }
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (uint32_t c0 = 0; c0 < dim; c0 += 4) {
    const auto r = Philox4x32({lo, hi, c0 / 4, 1u}, key);
    for (uint32_t pair = 0; pair < 2; ++pair) {
      const double u1 = (static_cast<double>(r[2 * pair] >> 8) + 1.0) * kInv24;  // (0, 1]
      const double u2 = static_cast<double>(r[2 * pair + 1] >> 8) * kInv24;
      const double rad = std::sqrt(-2.0 * std::log(u1)) * cfg.scale;
      const uint32_t c = c0 + 2 * pair;
      if (c < dim) out[c] = static_cast<float>(rad * std::cos(kTwoPi * u2));
      if (c + 1 < dim) out[c + 1] = static_cast<float>(rad * std::sin(kTwoPi * u2));
    }
  }
}

// Writes row `row`'s initial value as stored at rest (schema.value_bytes() bytes) into dst:
// the InitialRow values encoded in the table's dtype, or zeros for zero init and for serving
// dtypes. `scratch` holds the f32 values on the way (resized, so reuse it across rows).
inline void InitialRowAtRest(const TableSchema& schema, uint64_t row, std::vector<float>* scratch, uint8_t* dst) {
  if (schema.init.kind == InitKind::kZeros || !IsTrainable(schema.dtype)) {
    std::memset(dst, 0, schema.value_bytes());
    return;
  }
  scratch->resize(schema.dim);
  InitialRow(schema.init, row, schema.dim, scratch->data());
  EncodeRow(schema.dtype, schema.dim, scratch->data(), dst);
}

}  // namespace engram

#endif  // ENGRAM_INIT_H_
