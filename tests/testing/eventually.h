// Polls a condition in tests that wait for the cluster (a failover, a re-replication): a bound,
// not a pace, since a loaded CI box under a sanitizer is slow.
#ifndef ENGRAM_TESTS_TESTING_EVENTUALLY_H_
#define ENGRAM_TESTS_TESTING_EVENTUALLY_H_

#include <chrono>
#include <thread>

namespace engram::testing {

// Polls `pred` every 100 ms for up to `seconds`; its last value.
template <typename F>
bool Eventually(double seconds, F&& pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_EVENTUALLY_H_
