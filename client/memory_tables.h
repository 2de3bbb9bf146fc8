// MemoryTables: every Engram layer's table in this process's memory, as rows of a given dtype
// filled with random N(0, 1) values, with SGD (lr 1) pushes: a LayerPrefetcher's RowIo for
// tests, benchmarks (no servers: the GPU machine has none) and dry runs. Thread-safe.
#ifndef ENGRAM_CLIENT_MEMORY_TABLES_H_
#define ENGRAM_CLIENT_MEMORY_TABLES_H_

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "client/engram_hash.h"
#include "client/layer_prefetcher.h"
#include "engram/row_codec.h"

namespace engram::client {

class MemoryTables {
 public:
  MemoryTables(const EngramHasher& hasher, DType dtype, uint32_t dim, uint64_t seed)
      : dtype_(dtype), dim_(dim), vb_(ValueBytes(dtype, dim)) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> v(dim);
    for (int64_t layer : hasher.spec().layer_ids) {
      auto& rows = tables_[layer];
      const uint64_t n = hasher.layer(layer)->table_rows;
      rows.resize(n * vb_);
      for (uint64_t r = 0; r < n; ++r) {
        for (auto& x : v) x = g(rng);
        EncodeRow(dtype, dim, v.data(), rows.data() + r * vb_);
      }
    }
  }
  // Each pull also sleeps this long (outside the lock): a stand-in for a network round trip.
  void set_pull_delay(std::chrono::microseconds d) { pull_delay_us_.store(d.count()); }
  RowIo io() {
    RowIo io;
    io.pull = [this](int64_t layer, std::span<const uint64_t> ids, uint8_t* out) -> Status {
      if (const int64_t us = pull_delay_us_.load(); us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
      std::lock_guard<std::mutex> lock(mu_);
      auto it = tables_.find(layer);
      if (it == tables_.end()) return Status::NotFound("no table for layer " + std::to_string(layer));
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] * vb_ >= it->second.size()) return Status::OutOfRange("row " + std::to_string(ids[i]));
        std::memcpy(out + i * vb_, it->second.data() + ids[i] * vb_, vb_);
      }
      ++pulls_;
      return Status::OK();
    };
    io.push = [this](int64_t layer, std::span<const uint64_t> ids, const float* grads) -> Status {
      std::lock_guard<std::mutex> lock(mu_);
      auto& rows = tables_.at(layer);
      std::vector<float> v(dim_);
      for (size_t i = 0; i < ids.size(); ++i) {
        DecodeRow(dtype_, dim_, rows.data() + ids[i] * vb_, v.data());
        for (uint32_t c = 0; c < dim_; ++c) v[c] -= grads[i * dim_ + c];
        EncodeRow(dtype_, dim_, v.data(), rows.data() + ids[i] * vb_);
      }
      ++pushes_;
      return Status::OK();
    };
    return io;
  }
  // Row `id` of `layer`'s table, decoded.
  std::vector<float> Row(int64_t layer, uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<float> v(dim_);
    DecodeRow(dtype_, dim_, tables_.at(layer).data() + id * vb_, v.data());
    return v;
  }
  int pulls() {
    std::lock_guard<std::mutex> lock(mu_);
    return pulls_;
  }

 private:
  std::atomic<int64_t> pull_delay_us_{0};
  const DType dtype_;
  const uint32_t dim_;
  const size_t vb_;
  std::mutex mu_;
  std::map<int64_t, std::vector<uint8_t>> tables_;  // GUARDED_BY(mu_)
  int pulls_ = 0, pushes_ = 0;                        // GUARDED_BY(mu_)
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_MEMORY_TABLES_H_
