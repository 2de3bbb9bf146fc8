#include "client/primes.h"

#include <gtest/gtest.h>

namespace engram::client {
namespace {

TEST(PrimesTest, AgreesWithTrialDivisionBelowTwentyThousand) {
  for (uint64_t n = 0; n < 20000; ++n) {
    bool prime = n >= 2;
    for (uint64_t d = 2; d * d <= n && prime; ++d) prime = n % d != 0;
    ASSERT_EQ(IsPrime(n), prime) << n;
  }
}

TEST(PrimesTest, KnownLargePrimesAndStrongPseudoprimes) {
  EXPECT_TRUE(IsPrime(18446744073709551557ull));  // Largest 64-bit prime.
  EXPECT_TRUE(IsPrime(2305843009213693951ull));   // 2^61 - 1.
  EXPECT_FALSE(IsPrime(3215031751ull));           // Strong pseudoprime to bases 2, 3, 5, 7.
  EXPECT_FALSE(IsPrime(3825123056546413051ull));  // Strong pseudoprime to bases 2..23.
  EXPECT_FALSE(IsPrime(18446744073709551615ull));
}

TEST(PrimesTest, NextUnusedPrimeSkipsTakenPrimes) {
  EXPECT_EQ(NextUnusedPrime(646399, {}), 646403u);
  EXPECT_EQ(NextUnusedPrime(646399, {646403}), 646411u);
  EXPECT_EQ(NextUnusedPrime(7, {}), 11u);  // Strictly greater than the start.
}

}  // namespace
}  // namespace engram::client
