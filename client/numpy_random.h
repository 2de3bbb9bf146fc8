// A bit-exact reimplementation of the parts of numpy.random the Engram reference uses:
// SeedSequence (entropy pool hashing), the PCG64 bit generator (XSL-RR 128/64) as seeded by
// numpy.random.default_rng(seed), and Generator.integers(low, high, dtype=int64)'s bounded
// draw (Lemire's method, numpy's 32-bit and 64-bit variants).
//
// Only needed to derive the per-layer hash multipliers; not on any hot path.
// Thread-safety: Pcg64 is a value type; one object must not be used by two threads at once.
#ifndef ENGRAM_CLIENT_NUMPY_RANDOM_H_
#define ENGRAM_CLIENT_NUMPY_RANDOM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace engram::client {

// numpy.random.SeedSequence(entropy).generate_state(n_words, np.uint64) for a non-negative
// integer entropy.
std::vector<uint64_t> SeedSequenceState(uint64_t entropy, size_t n_words);

class Pcg64 {
 public:
  // The generator of numpy.random.default_rng(seed).
  explicit Pcg64(uint64_t seed);

  uint64_t NextU64();
  // numpy's next_uint32: halves of one 64-bit output, low half first.
  uint32_t NextU32();

  // One element of Generator.integers(low, high, dtype=np.int64) (high exclusive).
  // REQUIRES: low < high.
  int64_t IntegersInt64(int64_t low, int64_t high);

 private:
  unsigned __int128 state_ = 0;
  unsigned __int128 inc_ = 0;
  bool has_u32_ = false;
  uint32_t u32_ = 0;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_NUMPY_RANDOM_H_
