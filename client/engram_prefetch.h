// The Engram layer API: hash a micro-batch's tokens for a layer, pull the rows ahead of use,
// and push one summed gradient per unique row afterwards.
//
//   auto h = prefetcher->Prefetch(15, tokens, B, T);   // returns at once; pulls in flight
//   ... layers 1..14 compute ...
//   ENGRAM_RETURN_IF_ERROR(h->Wait());                 // rows land as [B][T][K][dim] f32
//   use(h->rows());
//   ENGRAM_RETURN_IF_ERROR(h->PushGrads(grads));       // grads in the same layout
//
// K = (max_ngram_size - 1) * n_head_per_ngram. Each layer's table is "<prefix>_layer<L>" with
// dim = n_embed_per_ngram / n_head_per_ngram (as `engramctl create-table --spec` makes them).
// Thread-safety: EngramPrefetcher is thread-safe; a PrefetchHandle belongs to one thread.
// Rows of a handle stay valid until the handle is destroyed; its buffers then go back to a
// bounded pool for the next Prefetch.
#ifndef ENGRAM_CLIENT_ENGRAM_PREFETCH_H_
#define ENGRAM_CLIENT_ENGRAM_PREFETCH_H_

#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "client/client.h"
#include "client/engram_hash.h"

namespace engram::client {

// Reusable row buffers shared by a prefetcher's handles: steady-state steps allocate (and
// page-fault) nothing. Keeps at most `kMaxPooled` buffers of each kind. Thread-safe.
class PrefetchBufferPool {
 public:
  static constexpr size_t kMaxPooled = 8;
  std::vector<float> TakeRows();
  std::vector<uint8_t> TakeStaging();
  void Give(std::vector<float> rows, std::vector<uint8_t> staging);

 private:
  std::mutex mu_;
  std::vector<std::vector<float>> rows_;       // GUARDED_BY(mu_)
  std::vector<std::vector<uint8_t>> staging_;  // GUARDED_BY(mu_)
};

class PrefetchHandle {
 public:
  ~PrefetchHandle();  // Returns the buffers to the prefetcher's pool.
  // Completes the pulls and lays the rows out. Idempotent after success.
  Status Wait();
  // [B][T][K][dim] f32 rows. REQUIRES: Wait() returned OK.
  const float* rows() const { return rows_.data(); }
  size_t num_lookups() const { return inverse_.size(); }
  size_t num_unique_rows() const { return unique_.size(); }
  // Sums `grads` ([B][T][K][dim], f32) per unique row and pushes them through the table's
  // optimizer. May be called once per handle.
  Status PushGrads(const float* grads);

 private:
  friend class EngramPrefetcher;
  TableHandle* table_ = nullptr;
  std::shared_ptr<PrefetchBufferPool> pool_;
  uint32_t dim_ = 0;
  std::vector<uint64_t> unique_;
  std::vector<uint32_t> inverse_;
  std::vector<uint8_t> staging_;  // Unique rows at rest, filled by the pull.
  PendingPull pull_;
  bool waited_ = false, pushed_ = false;
  std::vector<float> rows_;
};

class EngramPrefetcher {
 public:
  // Opens the table of every Engram layer of `spec`. REQUIRES: `client` outlives this object.
  static StatusOr<std::unique_ptr<EngramPrefetcher>> Create(Client* client, const EngramSpec& spec,
                                                            const std::string& table_prefix);

  const EngramHasher& hasher() const { return hasher_; }

  // Hashes tokens ([batch][seq] original ids), de-duplicates and issues the pulls; returns at
  // once. `left_context` ([batch][max_ngram_size - 1], optional) makes chunked prefill and
  // decode steps hash exactly like the full sequence (see EngramHasher::Hash).
  StatusOr<std::unique_ptr<PrefetchHandle>> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch,
                                                     size_t seq, std::span<const int64_t> left_context = {});

 private:
  explicit EngramPrefetcher(EngramHasher h) : hasher_(std::move(h)) {}
  EngramHasher hasher_;
  std::shared_ptr<PrefetchBufferPool> pool_ = std::make_shared<PrefetchBufferPool>();
  std::map<int64_t, std::unique_ptr<TableHandle>> tables_;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_ENGRAM_PREFETCH_H_
