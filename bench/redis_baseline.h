// RedisBaseline: the tier users compare against (HugeCTR's HPS keeps embeddings in Redis
// Cluster): a redis-server started on 127.0.0.1 for the benchmark, rows stored as keys, read
// with pipelined MGETs (chunks of kMgetChunk keys, all sent before the first reply is read), one
// connection per client thread.
#ifndef ENGRAM_BENCH_REDIS_BASELINE_H_
#define ENGRAM_BENCH_REDIS_BASELINE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engram/status.h"

struct redisContext;

namespace engram::bench {

class RedisBaseline {
 public:
  static constexpr size_t kMgetChunk = 512;
  // Starts `redis_server_bin` on a free loopback port (no persistence) and opens `connections`
  // connections (one per client thread).
  static StatusOr<std::unique_ptr<RedisBaseline>> Start(const std::string& redis_server_bin, int connections = 1);
  ~RedisBaseline();  // Stops the server.

  // Stores rows [0, n) of `row_bytes` each; value(row) = fill(row, buffer).
  Status Load(uint64_t n, size_t row_bytes, void (*fill)(uint64_t row, uint8_t* out, size_t bytes));
  // Pipelined MGETs of `rows` on connection `conn` (one thread per connection), values copied
  // into out (row_bytes each, request order).
  Status MGet(int conn, std::span<const uint64_t> rows, size_t row_bytes, uint8_t* out);

 private:
  RedisBaseline() = default;
  pid_t pid_ = -1;
  std::vector<redisContext*> ctx_;
};

}  // namespace engram::bench

#endif  // ENGRAM_BENCH_REDIS_BASELINE_H_
