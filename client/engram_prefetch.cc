// EngramPrefetcher: hash -> dedup -> pull in flight -> lay out; segment-sum -> push.
#include "client/engram_prefetch.h"

#include <cstring>

#include "client/dedup.h"
#include "engram/row_codec.h"

namespace engram::client {

namespace {
// The most recently pooled buffer, or an empty one.
template <typename T>
std::vector<T> PopOrEmpty(std::vector<std::vector<T>>* pool) {
  if (pool->empty()) return {};
  auto v = std::move(pool->back());
  pool->pop_back();
  return v;
}
}  // namespace

std::vector<float> PrefetchBufferPool::TakeRows() {
  std::lock_guard<std::mutex> lock(mu_);
  return PopOrEmpty(&rows_);
}

std::vector<uint8_t> PrefetchBufferPool::TakeStaging() {
  std::lock_guard<std::mutex> lock(mu_);
  return PopOrEmpty(&staging_);
}

void PrefetchBufferPool::Give(std::vector<float> rows, std::vector<uint8_t> staging) {
  std::lock_guard<std::mutex> lock(mu_);
  if (rows_.size() < kMaxPooled && rows.capacity() > 0) rows_.push_back(std::move(rows));
  if (staging_.size() < kMaxPooled && staging.capacity() > 0) staging_.push_back(std::move(staging));
}

// Everything one prefetch owns. Shared by the handle and (while queued or running) the
// background thread, so a handle dropped early never leaves the thread a dangling pointer.
struct PrefetchHandle::State {
  TableHandle* table = nullptr;
  const EngramHasher* hasher = nullptr;
  std::shared_ptr<PrefetchBufferPool> pool;
  uint32_t dim = 0;
  // Input, copied at Prefetch().
  int64_t layer = 0;
  size_t batch = 0, seq = 0;
  std::vector<int64_t> tokens, left_context;
  // Pipeline.
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  std::vector<uint8_t> staging;  // Unique rows at rest, filled by the pull.
  PendingPull pull;
  bool pull_started = false;
  bool queued = false;  // Runs on the prefetcher's thread.
  std::vector<float> rows;
  // Completion (background mode): set once by the thread that ran the job.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // GUARDED_BY(mu)
  Status status;      // GUARDED_BY(mu)
  bool waited = false, pushed = false;

  ~State() {
    if (pull_started) pull.Wait().IgnoreError();  // Collect (or time out) replies so none linger.
    if (pool) pool->Give(std::move(rows), std::move(staging));
  }
  // Hash, de-duplicate, start the pulls.
  Status Start() {
    std::vector<uint64_t> ids(batch * seq * hasher->lookups_per_token());
    ENGRAM_RETURN_IF_ERROR(hasher->Hash(layer, tokens, batch, seq, left_context, ids.data()));
    Deduplicate(ids, &unique, &inverse);
    staging.resize(unique.size() * table->schema().value_bytes());
    pull = table->StartPull(unique, staging.data());
    pull_started = true;
    return Status::OK();
  }
  // Complete the pulls, then one pass from the unique rows at rest to [B][T][K][dim].
  Status Finish() {
    pull_started = false;
    ENGRAM_RETURN_IF_ERROR(pull.Wait());
    const TableSchema& s = table->schema();
    const size_t vb = s.value_bytes();
    rows.resize(inverse.size() * dim);
    for (size_t i = 0; i < inverse.size(); ++i) {
      DecodeRow(s.dtype, dim, staging.data() + size_t{inverse[i]} * vb, rows.data() + i * dim);
    }
    return Status::OK();
  }
  void Complete(Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
    cv.notify_all();
  }
};

PrefetchHandle::~PrefetchHandle() {
  if (st_ == nullptr || !st_->queued) return;
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return st_->done; });  // Background work still uses the buffers.
}

const float* PrefetchHandle::rows() const { return st_->rows.data(); }
size_t PrefetchHandle::num_lookups() const { return st_->inverse.size(); }
size_t PrefetchHandle::num_unique_rows() const { return st_->unique.size(); }

StatusOr<std::map<int64_t, std::unique_ptr<TableHandle>>> OpenLayerTables(Client* client, const EngramHasher& hasher,
                                                                          const std::string& table_prefix) {
  const EngramSpec& spec = hasher.spec();
  std::map<int64_t, std::unique_ptr<TableHandle>> tables;
  for (int64_t layer : spec.layer_ids) {
    const std::string name = table_prefix + "_layer" + std::to_string(layer);
    ENGRAM_ASSIGN_OR_RETURN(auto t, client->OpenTable(name));
    const TableSchema& s = t->schema();
    if (s.num_rows != hasher.layer(layer)->table_rows || s.dim != static_cast<uint32_t>(spec.head_dim())) {
      return Status::FailedPrecondition("table '" + name + "' has " + std::to_string(s.num_rows) + " rows x " +
                                        std::to_string(s.dim) + ", the spec needs " +
                                        std::to_string(hasher.layer(layer)->table_rows) + " x " +
                                        std::to_string(spec.head_dim()));
    }
    if (s.dtype == DType::kBytes) return Status::FailedPrecondition("table '" + name + "' holds opaque bytes");
    tables[layer] = std::move(t);
  }
  return tables;
}

StatusOr<RowIo> TableRowIo(Client* client, const EngramHasher& hasher, const std::string& table_prefix) {
  ENGRAM_ASSIGN_OR_RETURN(auto opened, OpenLayerTables(client, hasher, table_prefix));
  auto tables = std::make_shared<std::map<int64_t, std::unique_ptr<TableHandle>>>(std::move(opened));
  auto table = [tables](int64_t layer) -> StatusOr<TableHandle*> {
    auto it = tables->find(layer);
    if (it == tables->end()) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram table");
    return it->second.get();
  };
  RowIo io;
  io.pull = [table](int64_t layer, std::span<const uint64_t> ids, uint8_t* out) -> Status {
    ENGRAM_ASSIGN_OR_RETURN(TableHandle * t, table(layer));
    return t->Pull(ids, out);
  };
  io.push = [table](int64_t layer, std::span<const uint64_t> ids, const float* grads) -> Status {
    ENGRAM_ASSIGN_OR_RETURN(TableHandle * t, table(layer));
    return t->Push(ids, grads);
  };
  return io;
}

StatusOr<std::unique_ptr<EngramPrefetcher>> EngramPrefetcher::Create(Client* client, const EngramSpec& spec,
                                                                     const std::string& table_prefix,
                                                                     const PrefetchOptions& options) {
  ENGRAM_ASSIGN_OR_RETURN(auto hasher, EngramHasher::Create(spec));
  auto p = std::unique_ptr<EngramPrefetcher>(new EngramPrefetcher(std::move(hasher), options));
  ENGRAM_ASSIGN_OR_RETURN(p->tables_, OpenLayerTables(client, p->hasher_, table_prefix));
  if (options.background) p->thread_ = std::thread([q = p.get()] { q->Run(); });
  return p;
}

EngramPrefetcher::~EngramPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngramPrefetcher::Run() {
  for (;;) {
    std::shared_ptr<PrefetchHandle::State> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // Stopping, nothing left.
      job = std::move(queue_.front());
      queue_.pop_front();
      if (stop_) {
        lock.unlock();
        job->Complete(Status::Unavailable("the prefetcher is shutting down"));
        continue;
      }
    }
    Status s = job->Start();
    if (s.ok()) s = job->Finish();
    job->Complete(std::move(s));
  }
}

StatusOr<std::unique_ptr<PrefetchHandle>> EngramPrefetcher::Prefetch(int64_t layer, std::span<const int64_t> tokens,
                                                                     size_t batch, size_t seq,
                                                                     std::span<const int64_t> left_context) {
  auto it = tables_.find(layer);
  if (it == tables_.end()) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram table");
  if (tokens.size() != batch * seq) {
    return Status::InvalidArgument("tokens hold " + std::to_string(tokens.size()) + " ids, batch x seq is " +
                                   std::to_string(batch * seq));
  }
  auto st = std::make_shared<PrefetchHandle::State>();
  st->table = it->second.get();
  st->hasher = &hasher_;
  st->dim = st->table->schema().dim;
  st->pool = pool_;
  st->rows = pool_->TakeRows();
  st->staging = pool_->TakeStaging();
  st->layer = layer;
  st->batch = batch;
  st->seq = seq;
  st->tokens.assign(tokens.begin(), tokens.end());
  st->left_context.assign(left_context.begin(), left_context.end());
  if (!options_.background) {
    ENGRAM_RETURN_IF_ERROR(st->Start());
    return std::unique_ptr<PrefetchHandle>(new PrefetchHandle(std::move(st)));
  }
  st->queued = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(st);
  }
  cv_.notify_one();
  return std::unique_ptr<PrefetchHandle>(new PrefetchHandle(std::move(st)));
}

Status PrefetchHandle::Wait() {
  State& s = *st_;
  if (s.waited) return Status::OK();
  Status result;
  if (!s.queued) {  // Foreground: finish here.
    result = s.Finish();
    s.Complete(result);
  } else {
    std::unique_lock<std::mutex> lock(s.mu);
    s.cv.wait(lock, [&] { return s.done; });
    result = s.status;
  }
  s.waited = result.ok();
  return result;
}

StatusOr<std::vector<float>> PrefetchHandle::SumGrads(const float* grads) {
  State& s = *st_;
  if (!s.waited) return Status::FailedPrecondition("PushGrads before a successful Wait");
  if (s.pushed) return Status::FailedPrecondition("PushGrads called twice on one prefetch");
  s.pushed = true;
  std::vector<float> summed(s.unique.size() * s.dim);
  SumByInverse(s.inverse, s.unique.size(), s.dim, grads, summed.data());
  return summed;
}

Status PrefetchHandle::PushGrads(const float* grads) {
  ENGRAM_ASSIGN_OR_RETURN(auto summed, SumGrads(grads));
  return st_->table->Push(st_->unique, summed.data());
}

std::future<Status> PrefetchHandle::PushGradsAsync(const float* grads) {
  auto summed = SumGrads(grads);
  if (!summed.ok()) {
    std::promise<Status> failed;
    failed.set_value(summed.status());
    return failed.get_future();
  }
  return std::async(std::launch::async, [table = st_->table, unique = st_->unique, g = std::move(summed).value()] {
    return table->Push(unique, g.data());
  });
}

}  // namespace engram::client
