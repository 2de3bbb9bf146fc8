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
// Thread-safety: EngramPrefetcher is thread-safe; a PrefetchHandle belongs to one thread at a
// time (Wait on one thread and PushGrads on another, one after the other, is fine).
// Rows of a handle stay valid until the handle is destroyed; its buffers then go back to a
// bounded pool for the next Prefetch.
#ifndef ENGRAM_CLIENT_ENGRAM_PREFETCH_H_
#define ENGRAM_CLIENT_ENGRAM_PREFETCH_H_

#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "client/client.h"
#include "client/engram_hash.h"
#include "client/layer_prefetcher.h"

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

class EngramPrefetcher;

class PrefetchHandle {
 public:
  ~PrefetchHandle();  // Waits for work still in flight, then returns the buffers to the pool.
  // Completes the pulls and lays the rows out (with background completion: waits until the
  // prefetcher's thread did). Idempotent after success.
  Status Wait();
  // [B][T][K][dim] f32 rows. REQUIRES: Wait() returned OK (also for the two counts below).
  const float* rows() const;
  size_t num_lookups() const;
  size_t num_unique_rows() const;
  // Sums `grads` ([B][T][K][dim], f32) per unique row and pushes them through the table's
  // optimizer. May be called once per handle, after Wait(); may run on another thread than Wait.
  Status PushGrads(const float* grads);
  // PushGrads on a helper thread: the gradients are summed per unique row before it returns, so
  // `grads` may be reused at once; the handle may be destroyed before the future is ready (the
  // prefetcher and its client must not). A trainer that overlaps these pushes with the next
  // step's pulls reads rows up to one step stale (bounded staleness).
  std::future<Status> PushGradsAsync(const float* grads);

 private:
  friend class EngramPrefetcher;
  struct State;
  StatusOr<std::vector<float>> SumGrads(const float* grads);
  explicit PrefetchHandle(std::shared_ptr<State> st) : st_(std::move(st)) {}
  std::shared_ptr<State> st_;
};

struct PrefetchOptions {
  // Run each prefetch (hash, de-duplication, pulls, one-sided reads, layout) on the prefetcher's
  // own thread, so that Prefetch() returns in microseconds and Wait() finds the rows laid out
  // when they arrived in time. Without it, Prefetch() hashes and starts the pulls on the calling
  // thread and Wait() completes them and lays the rows out.
  bool background = true;
};

class EngramPrefetcher {
 public:
  // Opens the table of every Engram layer of `spec`. REQUIRES: `client` outlives this object,
  // and this object outlives its handles.
  static StatusOr<std::unique_ptr<EngramPrefetcher>> Create(Client* client, const EngramSpec& spec,
                                                            const std::string& table_prefix,
                                                            const PrefetchOptions& options = {});
  ~EngramPrefetcher();

  const EngramHasher& hasher() const { return hasher_; }

  // Hashes tokens ([batch][seq] original ids), de-duplicates and issues the pulls; returns at
  // once (`tokens` and `left_context` may be reused immediately). `left_context`
  // ([batch][max_ngram_size - 1], optional) makes chunked prefill and decode steps hash exactly
  // like the full sequence (see EngramHasher::Hash). Background prefetches run in call order.
  StatusOr<std::unique_ptr<PrefetchHandle>> Prefetch(int64_t layer, std::span<const int64_t> tokens, size_t batch,
                                                     size_t seq, std::span<const int64_t> left_context = {});

 private:
  EngramPrefetcher(EngramHasher h, PrefetchOptions o) : hasher_(std::move(h)), options_(o) {}
  void Run();  // The background thread.

  EngramHasher hasher_;
  const PrefetchOptions options_;
  std::shared_ptr<PrefetchBufferPool> pool_ = std::make_shared<PrefetchBufferPool>();
  std::map<int64_t, std::unique_ptr<TableHandle>> tables_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<PrefetchHandle::State>> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;                                         // GUARDED_BY(mu_)
  std::thread thread_;
};

// Opens the table of every Engram layer of `hasher`'s spec, "<table_prefix>_layer<L>", and
// checks its shape against the spec (FailedPrecondition when it differs).
StatusOr<std::map<int64_t, std::unique_ptr<TableHandle>>> OpenLayerTables(Client* client, const EngramHasher& hasher,
                                                                          const std::string& table_prefix);
// The RowIo of a LayerPrefetcher over those tables (pulls and pushes through `client`, which
// must outlive it).
StatusOr<RowIo> TableRowIo(Client* client, const EngramHasher& hasher, const std::string& table_prefix);

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_ENGRAM_PREFETCH_H_
