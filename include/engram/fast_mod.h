// Division of 64-bit integers by a runtime-constant divisor without a hardware divide:
// Granlund & Montgomery, "Division by invariant integers using multiplication" (PLDI'94), Fig. 4.1
// (exact for every 64-bit numerator and every divisor >= 1). The Engram hash takes one modulo per
// head per token, so this is the inner loop of hashing; shard routing divides every row id too.
#ifndef ENGRAM_FAST_MOD_H_
#define ENGRAM_FAST_MOD_H_

#include <bit>
#include <cstdint>

namespace engram {

class FastMod64 {
 public:
  FastMod64() = default;
  // REQUIRES: d >= 1.
  explicit FastMod64(uint64_t d) : d_(d) {
    const int l = d == 1 ? 0 : 64 - std::countl_zero(d - 1);  // ceil(log2 d)
    const unsigned __int128 two_l = static_cast<unsigned __int128>(1) << l;
    m_ = static_cast<uint64_t>(((two_l - d) << 64) / d) + 1;
    sh1_ = l < 1 ? l : 1;
    sh2_ = l - 1 > 0 ? l - 1 : 0;
    two64_mod_d_ = static_cast<uint64_t>((static_cast<unsigned __int128>(1) << 64) % d);
  }

  uint64_t divisor() const { return d_; }

  // The precomputed constants, for reimplementations (the GPU hash kernel, gpu/kernels.h).
  struct Params {
    uint64_t d, m, two64_mod_d;
    int32_t sh1, sh2;
  };
  Params params() const { return {d_, m_, two64_mod_d_, sh1_, sh2_}; }

  uint64_t Div(uint64_t n) const {
    const uint64_t t1 = static_cast<uint64_t>((static_cast<unsigned __int128>(m_) * n) >> 64);
    return (t1 + ((n - t1) >> sh1_)) >> sh2_;
  }
  uint64_t Mod(uint64_t n) const { return n - Div(n) * d_; }

  // x mod d rounded towards negative infinity (numpy's % on int64 with a positive divisor):
  // always in [0, d).
  uint64_t FloorMod(int64_t x) const {
    const uint64_t r = Mod(static_cast<uint64_t>(x));
    // For x < 0, x = u - 2^64, so x mod d = (r - (2^64 mod d)) mod d.
    const uint64_t c = x < 0 ? two64_mod_d_ : 0;
    return r >= c ? r - c : r + d_ - c;
  }

 private:
  uint64_t d_ = 1;
  uint64_t m_ = 1;
  int sh1_ = 0;
  int sh2_ = 0;
  uint64_t two64_mod_d_ = 0;
};

}  // namespace engram

#endif  // ENGRAM_FAST_MOD_H_
