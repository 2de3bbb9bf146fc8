// Shared pieces of the engram-ps benchmarks: starting a daemon, row workloads, and timing calls
// from one or more client threads.
#ifndef ENGRAM_BENCH_BENCH_UTIL_H_
#define ENGRAM_BENCH_BENCH_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engram/status.h"

namespace engram::bench {

// An engram-server child process on 127.0.0.1 (ephemeral ports), killed with the benchmark.
class DaemonProcess {
 public:
  // `bin` empty: the engram-server of the build tree that holds `argv0`'s directory.
  static StatusOr<std::unique_ptr<DaemonProcess>> Start(const std::string& bin, const std::string& argv0,
                                                        const std::vector<std::string>& extra_flags = {});
  ~DaemonProcess();  // Stops the daemon and removes its temporary directory (logs, data).
  const std::string& address() const { return address_; }

 private:
  DaemonProcess() = default;
  pid_t pid_ = -1;
  std::string address_;
  std::string dir_;  // Port file and --data_dir live here.
};

// Row ids drawn uniformly (exponent 0) or from Zipf(exponent) over [0, rows). Zipf ranks are
// scattered over the table by a fixed odd multiplier, so hot rows are not packed together.
class RowSampler {
 public:
  RowSampler(uint64_t rows, double exponent, uint64_t seed);
  uint64_t Next();
  // `count` batches of `batch` rows.
  std::vector<std::vector<uint64_t>> Batches(size_t batch, int count);
  // Batches of up to `batch` distinct rows, sorted (pushes whose rows need no summing).
  std::vector<std::vector<uint64_t>> UniqueBatches(size_t batch, int count);

 private:
  uint64_t rows_;
  double exponent_;
  std::mt19937_64 gen_;
  std::vector<double> cdf_;
};

struct Timing {
  double p50_us = 0, p99_us = 0;
  double calls_per_s = 0;  // All threads together.
  int calls = 0;           // Timed calls, all threads together.
};

// Runs `call(thread, i)` from `threads` threads at once (after 2 warm-up calls each), each thread
// for at least `min_calls` calls and until `budget_s` seconds passed (at most `max_calls`).
// Latency percentiles are over all timed calls.
Timing Measure(int threads, double budget_s, int min_calls, int max_calls, const std::function<void(int, int)>& call);

// "1,2,3" -> {"1","2","3"}.
std::vector<std::string> SplitList(const std::string& s);

}  // namespace engram::bench

#endif  // ENGRAM_BENCH_BENCH_UTIL_H_
