#include "engram/fast_mod.h"

#include <gtest/gtest.h>

#include <random>

namespace engram {
namespace {

TEST(FastModTest, DivAndModMatchHardwareForEdgeNumerators) {
  const uint64_t divisors[] = {1, 2, 3, 7, 646411, 16000057, 4294967291ull, 4294967311ull,
                               (1ull << 63) - 25, (1ull << 63) + 1, ~0ull};
  const uint64_t nums[] = {0, 1, 2, 646410, 646411, ~0ull, ~0ull - 1, 1ull << 63, (1ull << 63) - 1, 12345678901234567ull};
  for (uint64_t d : divisors) {
    FastMod64 f(d);
    for (uint64_t n : nums) {
      ASSERT_EQ(f.Div(n), n / d) << n << " / " << d;
      ASSERT_EQ(f.Mod(n), n % d) << n << " % " << d;
    }
  }
}

TEST(FastModTest, DivMatchesHardwareForRandomInputs) {
  std::mt19937_64 gen(3);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t d = (gen() >> (gen() % 64)) | 1;
    FastMod64 f(d);
    for (int j = 0; j < 200; ++j) {
      const uint64_t n = gen() >> (gen() % 64);
      ASSERT_EQ(f.Div(n), n / d) << n << " / " << d;
    }
  }
}

TEST(FastModTest, FloorModOfNegativeValuesIsNonNegativeLikeNumpy) {
  std::mt19937_64 gen(5);
  for (uint64_t d : {3ull, 646411ull, 16000057ull, 999999999989ull}) {
    FastMod64 f(d);
    for (int j = 0; j < 5000; ++j) {
      const int64_t x = static_cast<int64_t>(gen());
      const __int128 want = ((__int128{x} % d) + d) % d;  // Floor modulo.
      ASSERT_EQ(f.FloorMod(x), static_cast<uint64_t>(want)) << x << " mod " << d;
    }
    EXPECT_EQ(f.FloorMod(-1), d - 1);
    EXPECT_EQ(f.FloorMod(INT64_MIN), static_cast<uint64_t>(((__int128{INT64_MIN} % d) + d) % d));
  }
}

}  // namespace
}  // namespace engram
