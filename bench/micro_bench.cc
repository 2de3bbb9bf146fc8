// Micro-benchmarks of the foundation's hot loops, each beside a memory-bandwidth baseline that
// moves the same bytes in the same run:
//   Hash/<layout>           Engram row ids per second (demo defaults: 16 ids per token;
//                           DeepSeek-V4.1-Flash: 24), vs WriteIds: writing as many ids to memory.
//   ApplyAdam/<dim>         Sparse Adam row updates per second on materialised rows (random
//                           unique rows), vs RowCopy: reading and writing the same bytes per row.
//   Gather/<bytes>          Shard::Gather of random rows (version-checked copy), vs MemcpyGather:
//                           a plain memcpy gather of the same rows from a flat array.
// bench/summarize.py turns the JSON output into the ratio table of docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "client/engram_hash.h"
#include "storage/shard.h"

namespace {

using namespace engram;

constexpr size_t kBatch = 8, kSeq = 4096;  // 32 K tokens per call.

client::EngramSpec DemoSpec() {
  client::EngramSpec s;
  s.engram_vocab_size = {646400, 646400};
  s.layer_ids = {1, 15};
  s.compressed_vocab_size = 128000;
  return s;
}

client::EngramSpec FlashSpec() {
  client::EngramSpec s;
  s.engram_vocab_size = {16000000, 16000000, 16000000};
  s.max_ngram_size = 4;
  s.n_embed_per_ngram = 2048;
  s.layer_ids = {1, 14};
  s.compressed_vocab_size = 99092;
  return s;
}

std::vector<int64_t> Tokens(int64_t vocab) {
  std::mt19937_64 gen(1);
  std::vector<int64_t> t(kBatch * kSeq);
  for (auto& x : t) x = static_cast<int64_t>(gen() % vocab);
  return t;
}

void RunHash(benchmark::State& state, const client::EngramSpec& spec) {
  auto h = client::EngramHasher::Create(spec);
  if (!h.ok()) {
    state.SkipWithError(h.status().ToString().c_str());
    return;
  }
  const auto tokens = Tokens(spec.compressed_vocab_size);
  std::vector<uint64_t> out(tokens.size() * h->lookups_per_token());
  client::HashScratch scratch;
  for (auto _ : state) {
    if (!h->Hash(1, tokens, kBatch, kSeq, {}, out.data(), &scratch).ok()) state.SkipWithError("hash failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * out.size());
  state.SetBytesProcessed(state.iterations() * out.size() * sizeof(uint64_t));
}

void BM_Hash_DemoDefaults(benchmark::State& state) { RunHash(state, DemoSpec()); }
void BM_Hash_Flash(benchmark::State& state) { RunHash(state, FlashSpec()); }

// Baseline: write the same number of 8-byte ids (the output of Hash/Flash) to memory.
void BM_WriteIds(benchmark::State& state) {
  std::vector<uint64_t> out(kBatch * kSeq * 24);
  uint64_t v = 0;
  for (auto _ : state) {
    for (auto& x : out) x = v++;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * out.size());
  state.SetBytesProcessed(state.iterations() * out.size() * sizeof(uint64_t));
}

constexpr uint64_t kTableRows = 1 << 20;
constexpr size_t kBatchRows = 16384;

std::vector<uint64_t> RandomUniqueRows(uint64_t n, size_t count, uint64_t seed) {
  std::vector<uint64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 gen(seed);
  std::shuffle(all.begin(), all.end(), gen);
  all.resize(count);
  return all;
}

void BM_ApplyAdam(benchmark::State& state) {
  const uint32_t dim = static_cast<uint32_t>(state.range(0));
  TableSchema s;
  s.name = "bench";
  s.num_rows = kTableRows;
  s.dim = dim;
  s.optimizer.kind = OptimizerKind::kAdam;
  auto shard = storage::Shard::Create(s, 0, kTableRows, {});
  if (!shard.ok()) {
    state.SkipWithError(shard.status().ToString().c_str());
    return;
  }
  // Materialise every row first so page faults and initialisation are not measured.
  std::vector<float> g(kBatchRows * dim, 1e-3f);
  storage::ApplyScratch scratch;
  for (uint64_t first = 0; first < kTableRows; first += kBatchRows) {
    std::vector<uint64_t> rows(kBatchRows);
    std::iota(rows.begin(), rows.end(), first);
    (void)(*shard)->ApplyGradients(rows, g.data(), &scratch).ok();
  }
  const auto rows = RandomUniqueRows(kTableRows, kBatchRows, 2);
  for (auto _ : state) {
    if (!(*shard)->ApplyGradients(rows, g.data(), &scratch).ok()) state.SkipWithError("apply failed");
  }
  state.SetItemsProcessed(state.iterations() * rows.size());
  state.counters["bytes_per_row"] = static_cast<double>((*shard)->stats().bytes_per_row);
}

// Baseline: per random row, read and write the bytes Adam touches (value + m + v + step).
void BM_RowCopy(benchmark::State& state) {
  const size_t bytes = size_t{4} * state.range(0) * 3 + 8;
  std::vector<uint8_t> table(kTableRows * bytes, 1);
  std::vector<uint8_t> tmp(bytes);
  const auto rows = RandomUniqueRows(kTableRows, kBatchRows, 2);
  for (auto _ : state) {
    for (uint64_t r : rows) {
      std::memcpy(tmp.data(), &table[r * bytes], bytes);
      tmp[0] ^= 1;
      std::memcpy(&table[r * bytes], tmp.data(), bytes);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * rows.size());
}

void BM_Gather(benchmark::State& state) {
  const uint32_t bytes = static_cast<uint32_t>(state.range(0));
  TableSchema s;
  s.name = "bench";
  s.num_rows = kTableRows;
  s.dim = bytes;
  s.dtype = DType::kBytes;
  s.optimizer.kind = OptimizerKind::kNone;
  s.init.kind = InitKind::kZeros;
  auto shard = storage::Shard::Create(s, 0, kTableRows, {});
  if (!shard.ok()) {
    state.SkipWithError(shard.status().ToString().c_str());
    return;
  }
  std::vector<uint8_t> vals(kBatchRows * bytes, 7);
  for (uint64_t first = 0; first < kTableRows; first += kBatchRows) {
    std::vector<uint64_t> rows(kBatchRows);
    std::iota(rows.begin(), rows.end(), first);
    (void)(*shard)->Put(rows, vals.data()).ok();
  }
  std::mt19937_64 gen(3);
  std::vector<uint64_t> rows(kBatchRows);
  for (auto& r : rows) r = gen() % kTableRows;
  std::vector<uint8_t> out(kBatchRows * bytes);
  for (auto _ : state) {
    if (!(*shard)->Gather(rows, out.data()).ok()) state.SkipWithError("gather failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * rows.size());
  state.SetBytesProcessed(state.iterations() * rows.size() * bytes);
}

// Baseline: the same random rows gathered with plain memcpy from a flat array.
void BM_MemcpyGather(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> table(kTableRows * bytes, 7);
  std::mt19937_64 gen(3);
  std::vector<uint64_t> rows(kBatchRows);
  for (auto& r : rows) r = gen() % kTableRows;
  std::vector<uint8_t> out(kBatchRows * bytes);
  for (auto _ : state) {
    for (size_t i = 0; i < rows.size(); ++i) std::memcpy(&out[i * bytes], &table[rows[i] * bytes], bytes);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * rows.size());
  state.SetBytesProcessed(state.iterations() * rows.size() * bytes);
}

BENCHMARK(BM_Hash_DemoDefaults)->UseRealTime();
BENCHMARK(BM_Hash_Flash)->UseRealTime();
BENCHMARK(BM_WriteIds)->UseRealTime();
BENCHMARK(BM_ApplyAdam)->Arg(64)->Arg(256)->UseRealTime();
BENCHMARK(BM_RowCopy)->Arg(64)->Arg(256)->UseRealTime();
BENCHMARK(BM_Gather)->Arg(264)->Arg(1024)->UseRealTime();
BENCHMARK(BM_MemcpyGather)->Arg(264)->Arg(1024)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
