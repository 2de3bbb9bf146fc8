// RedisBaseline: the tier users compare against (HugeCTR's HPS keeps embeddings in Redis
// Cluster): a redis-server started on 127.0.0.1 for the benchmark, rows stored as keys, read
// with one MGET per batch from one client thread.
#ifndef ENGRAM_BENCH_REDIS_BASELINE_H_
#define ENGRAM_BENCH_REDIS_BASELINE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "engram/status.h"

struct redisContext;

namespace engram::bench {

class RedisBaseline {
 public:
  // Starts `redis_server_bin` on a free loopback port (no persistence) and connects.
  static StatusOr<std::unique_ptr<RedisBaseline>> Start(const std::string& redis_server_bin);
  ~RedisBaseline();  // Stops the server.

  // Stores rows [0, n) of `row_bytes` each; value(row) = fill(row, buffer).
  Status Load(uint64_t n, size_t row_bytes, void (*fill)(uint64_t row, uint8_t* out, size_t bytes));
  // One MGET of `rows`, values copied into out (row_bytes each, request order).
  Status MGet(std::span<const uint64_t> rows, size_t row_bytes, uint8_t* out);

 private:
  RedisBaseline() = default;
  pid_t pid_ = -1;
  redisContext* ctx_ = nullptr;
};

}  // namespace engram::bench

#endif  // ENGRAM_BENCH_REDIS_BASELINE_H_
