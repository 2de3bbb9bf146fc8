// Small shared helpers with no dependencies: a 64-bit bit mixer and a steady clock in ms.
#ifndef ENGRAM_MIX_H_
#define ENGRAM_MIX_H_

#include <chrono>
#include <cstdint>

namespace engram {

// splitmix64's finaliser: a bijection of 64-bit values whose every output bit depends on every
// input bit (sketch hashing, key mixing). Not cryptographic.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The steady clock in milliseconds (timeouts and idle times, never wall time).
inline int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace engram

#endif  // ENGRAM_MIX_H_
