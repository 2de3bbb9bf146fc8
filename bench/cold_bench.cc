// engram-bench-cold: a table 4x larger than its DRAM budget (issue 6, part 4).
//
// Every row of a --rows table is written once (so every row is stored: in DRAM or in the cold
// tier), then batches of distinct rows drawn Zipf(--zipf) are pulled, the way a prefetcher pulls
// one Engram layer's deduplicated rows. Variants, each on the same batches, in this process
// (storage::Shard, one shard), so the figures are the storage tiers' own:
//   dram             every row in DRAM (the table without a budget): the reference
//   tinylfu          DRAM for rows/--ratio rows (RowCache, TinyLFU admission) + RocksDB
//   lru              the same with plain LRU admission (the baseline policy to beat)
//   multiget         RocksDB alone, one MultiGet per batch, its block cache given the same DRAM
//                    budget (the cold-path baseline on the same keys)
//   multiget_small   RocksDB alone with the cold tier's own 32 MiB block cache
// Reports per variant: hit rate (row cache), rows/s, p50/p99 batch latency, and ratios.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "storage/cold_store.h"
#include "storage/row_cache.h"
#include "storage/shard.h"

DEFINE_uint64(rows, 1 << 20, "table rows");
DEFINE_uint32(dim, 256, "row dim (fp8_e4m3_ue8m0: dim + dim/32 bytes, 264 B at 256)");
DEFINE_string(dtype, "fp8_e4m3_ue8m0", "row dtype");
DEFINE_double(ratio, 4.0, "table rows / rows the DRAM budget holds");
DEFINE_double(zipf, 1.1, "Zipf exponent of row popularity");
DEFINE_int32(batch, 16384, "rows drawn per batch (deduplicated before the pull)");
DEFINE_int32(warmup, 300, "untimed batches per variant before timing (the cache fills and its sketch ages)");
DEFINE_double(seconds, 3.0, "timed seconds per variant (at least 20 batches)");
DEFINE_string(variants, "dram,tinylfu,lru,multiget,multiget_small", "variants to run");
DEFINE_string(dir, "", "directory for the RocksDB files (default: a fresh one under /tmp)");
DEFINE_bool(flush, true, "flush RocksDB's memtables to files after the load (as a long-running server's would be)");
DEFINE_bool(full, false, "longer runs and a second Zipf exponent (1.0)");
DEFINE_string(out, "", "write JSON results here");

namespace {

using namespace engram;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& what) {
  std::fprintf(stderr, "engram-bench-cold: %s\n", what.c_str());
  return 1;
}

struct Result {
  std::string variant;
  double zipf = 0;
  bench::Timing t;
  double rows_per_s = 0, hit_rate = -1, mean_rows = 0;
  uint64_t dram_rows = 0;
};

// Writes every row once (a deterministic value per row), in large batches.
Status Fill(storage::Shard* shard) {
  const size_t vb = shard->schema().value_bytes();
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<uint64_t> rows;
  std::vector<uint8_t> values;
  for (uint64_t first = 0; first < shard->num_rows(); first += kChunk) {
    const uint64_t n = std::min(kChunk, shard->num_rows() - first);
    rows.resize(n);
    values.resize(n * vb);
    for (uint64_t i = 0; i < n; ++i) {
      rows[i] = first + i;
      for (size_t b = 0; b < vb; ++b) values[i * vb + b] = static_cast<uint8_t>((rows[i] * 131 + b) & 0x3f);
    }
    ENGRAM_RETURN_IF_ERROR(shard->Put(rows, values.data()));
  }
  return Status::OK();
}

Status FillStore(storage::ColdStore* store, size_t vb) {
  std::vector<uint8_t> value(vb);
  for (uint64_t r = 0; r < FLAGS_rows; ++r) {
    for (size_t b = 0; b < vb; ++b) value[b] = static_cast<uint8_t>((r * 131 + b) & 0x3f);
    ENGRAM_RETURN_IF_ERROR(store->Put(r, 2, value.data(), nullptr));
  }
  return Status::OK();
}

StatusOr<Result> Run(const std::string& variant, const TableSchema& schema, double zipf, const std::string& dir) {
  const size_t vb = schema.value_bytes();
  const uint64_t budget_rows = static_cast<uint64_t>(static_cast<double>(FLAGS_rows) / FLAGS_ratio);
  const uint64_t budget_bytes = budget_rows * storage::RowCache::BytesPerSlot(vb, 0);
  std::unique_ptr<storage::ColdStore> store;
  std::unique_ptr<storage::Shard> shard;
  const std::string path = dir + "/" + variant;
  if (variant == "multiget" || variant == "multiget_small") {
    storage::ColdStoreOptions o;
    if (variant == "multiget") o.block_cache_bytes = budget_bytes;
    ENGRAM_ASSIGN_OR_RETURN(store, storage::ColdStore::Open(path, vb, 0, o));
    ENGRAM_RETURN_IF_ERROR(FillStore(store.get(), vb));
    if (FLAGS_flush) ENGRAM_RETURN_IF_ERROR(store->Flush());
  } else {
    storage::ShardOptions o;
    if (variant != "dram") {
      ENGRAM_ASSIGN_OR_RETURN(store, storage::ColdStore::Open(path, vb, 0, {}));
      o.cold = store.get();
      o.cache_rows = budget_rows;
      o.cache.admission = variant == "lru" ? storage::AdmissionPolicy::kLru : storage::AdmissionPolicy::kTinyLfu;
    } else if (variant != "dram") {
      return Status::InvalidArgument("unknown variant " + variant);
    }
    ENGRAM_ASSIGN_OR_RETURN(shard, storage::Shard::Create(schema, 0, FLAGS_rows, o));
    ENGRAM_RETURN_IF_ERROR(Fill(shard.get()));
    if (store && FLAGS_flush) ENGRAM_RETURN_IF_ERROR(store->Flush());
  }
  bench::RowSampler sampler(FLAGS_rows, zipf, 1234);  // Same seed: every variant pulls the same batches.
  const int timed_max = 4000;
  auto warm = sampler.UniqueBatches(FLAGS_batch, FLAGS_warmup);
  std::vector<uint8_t> out(static_cast<size_t>(FLAGS_batch) * vb);
  std::vector<uint64_t> versions(FLAGS_batch);
  Status failed;
  auto pull = [&](const std::vector<uint64_t>& rows) {
    Status s = store && !shard ? store->MultiGet(rows, versions.data(), out.data(), nullptr)
                               : shard->Gather(rows, out.data());
    if (!s.ok() && failed.ok()) failed = s;
  };
  for (const auto& b : warm) pull(b);
  const storage::RowCacheStats before = shard && shard->cached() ? shard->stats().cache : storage::RowCacheStats{};
  // Batches drawn ahead of time (sampling is not what is measured); reused if the run outlasts them.
  auto batches = sampler.UniqueBatches(FLAGS_batch, 200);
  double rows_total = 0;
  Result r;
  r.variant = variant;
  r.zipf = zipf;
  r.t = bench::Measure(1, FLAGS_seconds, 20, timed_max, [&](int, int i) {
    const auto& b = batches[static_cast<size_t>(i) % batches.size()];
    pull(b);
    rows_total += static_cast<double>(b.size());
  });
  ENGRAM_RETURN_IF_ERROR(failed);
  r.mean_rows = rows_total / (r.t.calls + 2);  // Measure's 2 warm-up calls count too.
  r.rows_per_s = r.t.calls_per_s * r.mean_rows;
  r.dram_rows = variant == "dram" ? FLAGS_rows : (variant == "multiget_small" ? 0 : budget_rows);
  if (shard && shard->cached()) {
    const storage::RowCacheStats after = shard->stats().cache;
    const double hits = static_cast<double>(after.hits - before.hits);
    const double misses = static_cast<double>(after.misses - before.misses);
    r.hit_rate = hits / std::max(1.0, hits + misses);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("engram-bench-cold: pulls from a table 4x its DRAM budget (see the source header)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_full) FLAGS_seconds = std::max(FLAGS_seconds, 10.0);
  TableSchema schema;
  schema.name = "cold";
  schema.num_rows = FLAGS_rows;
  schema.dim = FLAGS_dim;
  auto dt = ParseDType(FLAGS_dtype);
  if (!dt.ok()) return Fail(dt.status().ToString());
  schema.dtype = *dt;
  schema.optimizer.kind = IsTrainable(schema.dtype) ? OptimizerKind::kSgd : OptimizerKind::kNone;
  schema.init.kind = InitKind::kZeros;
  if (Status s = schema.Validate(); !s.ok()) return Fail(s.ToString());
  std::string dir = FLAGS_dir;
  bool own_dir = false;
  if (dir.empty()) {
    char tmpl[] = "/tmp/engram-bench-cold-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return Fail("mkdtemp failed");
    dir = tmpl;
    own_dir = true;
  }
  std::vector<double> exps = {FLAGS_zipf};
  if (FLAGS_full && FLAGS_zipf != 1.0) exps.push_back(1.0);
  std::vector<Result> results;
  std::printf("table: %llu rows of %zu B (%s), DRAM budget %.0f rows (1/%.0f), batches of %d Zipf draws, deduplicated\n",
              static_cast<unsigned long long>(FLAGS_rows), schema.value_bytes(), FLAGS_dtype.c_str(),
              static_cast<double>(FLAGS_rows) / FLAGS_ratio, FLAGS_ratio, FLAGS_batch);
  std::printf("%-15s %5s %9s %9s %11s %10s %10s %9s %9s\n", "variant", "zipf", "rows/b", "hit rate", "M rows/s",
              "p50 ms", "p99 ms", "x dram", "x mget");
  for (double z : exps) {
    std::map<std::string, double> rps;
    for (const auto& v : bench::SplitList(FLAGS_variants)) {
      auto r = Run(v, schema, z, dir);
      std::error_code ec;
      std::filesystem::remove_all(dir + "/" + v, ec);
      if (!r.ok()) return Fail(v + ": " + r.status().ToString());
      rps[v] = r->rows_per_s;
      const double xd = rps.count("dram") ? r->rows_per_s / rps["dram"] : 0;
      const double xm = rps.count("multiget") ? r->rows_per_s / rps["multiget"] : 0;
      std::printf("%-15s %5.2f %9.0f %9s %11.3f %10.2f %10.2f %9.2f %9s\n", v.c_str(), z, r->mean_rows,
                  r->hit_rate < 0 ? "-" : (std::to_string(r->hit_rate).substr(0, 5)).c_str(), r->rows_per_s / 1e6,
                  r->t.p50_us / 1e3, r->t.p99_us / 1e3, xd, xm > 0 ? std::to_string(xm).substr(0, 5).c_str() : "-");
      std::fflush(stdout);
      results.push_back(*r);
    }
    // Ratios against the multiget baseline, printed once it has run (it runs after the caches).
    if (rps.count("multiget")) {
      for (const char* v : {"tinylfu", "lru"}) {
        if (rps.count(v)) std::printf("  %s / multiget (same DRAM): %.2fx\n", v, rps[v] / rps["multiget"]);
      }
    }
  }
  if (own_dir) std::filesystem::remove_all(dir);
  if (!FLAGS_out.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : results) {
      j.push_back({{"variant", r.variant}, {"zipf", r.zipf}, {"rows", FLAGS_rows}, {"row_bytes", schema.value_bytes()},
                   {"ratio", FLAGS_ratio}, {"dram_rows", r.dram_rows}, {"batch_draws", FLAGS_batch},
                   {"rows_per_batch", r.mean_rows}, {"hit_rate", r.hit_rate}, {"rows_per_s", r.rows_per_s},
                   {"p50_us", r.t.p50_us}, {"p99_us", r.t.p99_us}, {"batches", r.t.calls}});
    }
    std::ofstream(FLAGS_out) << j.dump(1) << "\n";
  }
  return 0;
}
