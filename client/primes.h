// Primality for 64-bit integers and the reference's distinct-prime head-size procedure.
#ifndef ENGRAM_CLIENT_PRIMES_H_
#define ENGRAM_CLIENT_PRIMES_H_

#include <cstdint>
#include <set>

namespace engram::client {

// Deterministic Miller-Rabin (bases 2..37 are exact for all n < 2^64). Thread-safe.
bool IsPrime(uint64_t n);

// The smallest prime p > start with p not in `taken` (the reference's find_next_prime).
// REQUIRES: such a prime below 2^64 exists (true for start < 2^63).
uint64_t NextUnusedPrime(uint64_t start, const std::set<uint64_t>& taken);

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_PRIMES_H_
