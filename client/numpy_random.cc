// numpy SeedSequence + PCG64 + bounded integers, following numpy's documented algorithms
// (numpy/random/bit_generator.pyx, pcg64.h, distributions.c).
#include "client/numpy_random.h"

namespace engram::client {
namespace {

constexpr uint32_t kInitA = 0x43b0d7e5u;
constexpr uint32_t kMultA = 0x931e8875u;
constexpr uint32_t kInitB = 0x8b51f9ddu;
constexpr uint32_t kMultB = 0x58f38dedu;
constexpr uint32_t kMixMultL = 0xca01f9ddu;
constexpr uint32_t kMixMultR = 0x4973f715u;
constexpr int kXShift = 16;
constexpr size_t kPoolSize = 4;

uint32_t HashMix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;
  value *= hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t r = kMixMultL * x - kMixMultR * y;
  r ^= r >> kXShift;
  return r;
}

constexpr unsigned __int128 kPcgMult =
    (static_cast<unsigned __int128>(0x2360ed051fc65da4ULL) << 64) | 0x4385df649fccf645ULL;

}  // namespace

std::vector<uint64_t> SeedSequenceState(uint64_t entropy, size_t n_words) {
  std::vector<uint32_t> words;  // numpy's _int_to_uint32_array: little-endian 32-bit words.
  if (entropy == 0) words.push_back(0);
  for (uint64_t e = entropy; e != 0; e >>= 32) words.push_back(static_cast<uint32_t>(e));

  uint32_t pool[kPoolSize];
  uint32_t hash_const = kInitA;
  for (size_t i = 0; i < kPoolSize; ++i) pool[i] = HashMix(i < words.size() ? words[i] : 0u, hash_const);
  for (size_t src = 0; src < kPoolSize; ++src) {
    for (size_t dst = 0; dst < kPoolSize; ++dst) {
      if (src != dst) pool[dst] = Mix(pool[dst], HashMix(pool[src], hash_const));
    }
  }
  for (size_t src = kPoolSize; src < words.size(); ++src) {
    for (size_t dst = 0; dst < kPoolSize; ++dst) pool[dst] = Mix(pool[dst], HashMix(words[src], hash_const));
  }

  std::vector<uint64_t> out(n_words);
  uint32_t hc = kInitB;
  for (size_t i = 0; i < 2 * n_words; ++i) {
    uint32_t v = pool[i % kPoolSize];
    v ^= hc;
    hc *= kMultB;
    v *= hc;
    v ^= v >> kXShift;
    out[i / 2] |= static_cast<uint64_t>(v) << (32 * (i % 2));
  }
  return out;
}

Pcg64::Pcg64(uint64_t seed) {
  const std::vector<uint64_t> s = SeedSequenceState(seed, 4);
  const unsigned __int128 init_state = (static_cast<unsigned __int128>(s[0]) << 64) | s[1];
  const unsigned __int128 init_seq = (static_cast<unsigned __int128>(s[2]) << 64) | s[3];
  // pcg_setseq_128_srandom_r
  state_ = 0;
  inc_ = (init_seq << 1) | 1u;
  state_ = state_ * kPcgMult + inc_;
  state_ += init_state;
  state_ = state_ * kPcgMult + inc_;
}

uint64_t Pcg64::NextU64() {
  state_ = state_ * kPcgMult + inc_;
  const uint64_t hi = static_cast<uint64_t>(state_ >> 64);
  const uint64_t lo = static_cast<uint64_t>(state_);
  const uint64_t x = hi ^ lo;
  const unsigned rot = static_cast<unsigned>(hi >> 58);
  return (x >> rot) | (x << ((64u - rot) & 63u));
}

uint32_t Pcg64::NextU32() {
  if (has_u32_) {
    has_u32_ = false;
    return u32_;
  }
  const uint64_t next = NextU64();
  has_u32_ = true;
  u32_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next);
}

int64_t Pcg64::IntegersInt64(int64_t low, int64_t high) {
  // numpy: closed range [low, high - 1]; rng = span, off = low.
  const uint64_t rng = static_cast<uint64_t>(high - 1) - static_cast<uint64_t>(low);
  const uint64_t off = static_cast<uint64_t>(low);
  if (rng == 0) return low;
  uint64_t draw;
  if (rng <= 0xffffffffULL) {
    if (rng == 0xffffffffULL) {
      draw = NextU32();
    } else {
      const uint32_t rng_excl = static_cast<uint32_t>(rng) + 1;
      uint64_t m = static_cast<uint64_t>(NextU32()) * rng_excl;
      uint32_t leftover = static_cast<uint32_t>(m);
      if (leftover < rng_excl) {
        const uint32_t threshold = (UINT32_MAX - static_cast<uint32_t>(rng)) % rng_excl;
        while (leftover < threshold) {
          m = static_cast<uint64_t>(NextU32()) * rng_excl;
          leftover = static_cast<uint32_t>(m);
        }
      }
      draw = m >> 32;
    }
  } else if (rng == ~uint64_t{0}) {
    draw = NextU64();
  } else {
    const uint64_t rng_excl = rng + 1;
    unsigned __int128 m = static_cast<unsigned __int128>(NextU64()) * rng_excl;
    uint64_t leftover = static_cast<uint64_t>(m);
    if (leftover < rng_excl) {
      const uint64_t threshold = (UINT64_MAX - rng) % rng_excl;
      while (leftover < threshold) {
        m = static_cast<unsigned __int128>(NextU64()) * rng_excl;
        leftover = static_cast<uint64_t>(m);
      }
    }
    draw = static_cast<uint64_t>(m >> 64);
  }
  return static_cast<int64_t>(off + draw);
}

}  // namespace engram::client
