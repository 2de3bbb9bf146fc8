// The cold tier: ColdStore (RocksDB), RowCache (set-associative DRAM cache with admission) and a
// Shard that uses them, pinned against a shard that holds every row in DRAM.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "engram/init.h"
#include "storage/cold_store.h"
#include "storage/optimizer.h"
#include "storage/row_cache.h"
#include "storage/shard.h"

namespace engram::storage {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/engram-cold-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TableSchema Schema(OptimizerKind opt = OptimizerKind::kAdam, uint64_t rows = 4096, uint32_t dim = 8) {
  TableSchema s;
  s.name = "cold";
  s.num_rows = rows;
  s.dim = dim;
  s.dtype = DType::kF32;
  s.optimizer.kind = opt;
  s.optimizer.lr = 0.05f;
  s.init = {InitKind::kNormal, 0.1f, 7};
  return s;
}

size_t StateBytes(const TableSchema& s) { return OptimizerStateBytes(s.optimizer, s.dim); }

std::unique_ptr<ColdStore> OpenStore(const std::string& dir, const TableSchema& s) {
  auto st = ColdStore::Open(dir, s.value_bytes(), StateBytes(s), {});
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  return std::move(st).value();
}

std::unique_ptr<Shard> CachedShard(const TableSchema& s, ColdStore* cold, uint64_t cache_rows,
                                   AdmissionPolicy policy = AdmissionPolicy::kTinyLfu, uint32_t ways = 8) {
  ShardOptions o;
  o.cold = cold;
  o.cache_rows = cache_rows;
  o.cache.admission = policy;
  o.cache.ways = ways;
  auto shard = Shard::Create(s, 0, s.num_rows, o);
  EXPECT_TRUE(shard.ok()) << shard.status().ToString();
  return std::move(shard).value();
}

std::unique_ptr<Shard> DramShard(const TableSchema& s) {
  auto shard = Shard::Create(s, 0, s.num_rows, {});
  EXPECT_TRUE(shard.ok()) << shard.status().ToString();
  return std::move(shard).value();
}

// Every row of both shards, value and (via ForEachTouched) optimizer state and version.
void ExpectSameRows(const Shard& a, const Shard& b) {
  const TableSchema& s = a.schema();
  std::vector<uint64_t> all(s.num_rows);
  for (uint64_t r = 0; r < s.num_rows; ++r) all[r] = r;
  std::vector<uint8_t> va(all.size() * s.value_bytes()), vb(va.size());
  ASSERT_TRUE(a.Gather(all, va.data()).ok());
  ASSERT_TRUE(b.Gather(all, vb.data()).ok());
  for (uint64_t r = 0; r < s.num_rows; ++r) {
    ASSERT_EQ(std::memcmp(va.data() + r * s.value_bytes(), vb.data() + r * s.value_bytes(), s.value_bytes()), 0)
        << "row " << r;
  }
  using Image = std::pair<uint64_t, std::vector<uint8_t>>;  // Version, value + state.
  auto images = [&](const Shard& sh) {
    std::map<uint64_t, Image> m;
    EXPECT_TRUE(sh.ForEachTouched([&](uint64_t row, uint64_t v, const uint8_t* value, const uint8_t* state) {
                  std::vector<uint8_t> bytes(value, value + s.value_bytes());
                  if (state) bytes.insert(bytes.end(), state, state + sh.state_bytes());
                  auto& slot = m[row];
                  EXPECT_GE(v, slot.first) << "an older image of row " << row << " after a newer one";
                  slot = {v, std::move(bytes)};
                }).ok());
    return m;
  };
  const auto ia = images(a), ib = images(b);
  ASSERT_EQ(ia.size(), ib.size());
  for (const auto& [row, img] : ia) {
    auto it = ib.find(row);
    ASSERT_NE(it, ib.end()) << "row " << row;
    EXPECT_EQ(img.first, it->second.first) << "version of row " << row;
    EXPECT_EQ(img.second, it->second.second) << "value/state of row " << row;
  }
}

std::vector<uint64_t> ZipfRows(std::mt19937_64& rng, uint64_t n, size_t count, double s) {
  // Inverse-CDF sampling over ranks, ranks scattered over rows by a fixed permutation.
  static thread_local std::vector<double> cdf;
  static thread_local uint64_t cdf_n = 0;
  static thread_local double cdf_s = 0;
  if (cdf_n != n || cdf_s != s) {
    cdf.resize(n);
    double acc = 0;
    for (uint64_t k = 0; k < n; ++k) cdf[k] = acc += 1.0 / std::pow(static_cast<double>(k + 1), s);
    for (double& c : cdf) c /= acc;
    cdf_n = n, cdf_s = s;
  }
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint64_t> out(count);
  for (auto& r : out) {
    const uint64_t rank = static_cast<uint64_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
    r = (std::min(rank, n - 1) * 2654435761u) % n;  // n is a power of two: a bijection.
  }
  return out;
}

TEST(ColdStoreTest, StoresImagesByRowAndScansAShardRange) {
  TempDir dir;
  const TableSchema s = Schema();
  auto store = OpenStore(dir.path() + "/t", s);
  std::vector<uint8_t> value(s.value_bytes(), 0xab), state(StateBytes(s), 0xcd), v2(value.size()), s2(state.size());
  ASSERT_TRUE(store->Put(300, 6, value.data(), state.data()).ok());
  ASSERT_TRUE(store->Put(10, 2, value.data(), state.data()).ok());
  auto got = store->Get(300, v2.data(), s2.data());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 6u);
  EXPECT_EQ(v2, value);
  EXPECT_EQ(s2, state);
  EXPECT_EQ(*store->Get(11, v2.data(), s2.data()), 0u) << "a row never stored";
  const std::vector<uint64_t> rows = {10, 11, 300};
  uint64_t versions[3];
  std::vector<uint8_t> values(3 * value.size()), states(3 * state.size());
  ASSERT_TRUE(store->MultiGet(rows, versions, values.data(), states.data()).ok());
  EXPECT_EQ(versions[0], 2u);
  EXPECT_EQ(versions[1], 0u);
  EXPECT_EQ(versions[2], 6u);
  std::vector<uint64_t> seen;
  ASSERT_TRUE(store->ForEach(0, 256, [&](uint64_t row, uint64_t, const uint8_t*, const uint8_t*) { seen.push_back(row); }).ok());
  EXPECT_EQ(seen, std::vector<uint64_t>{10}) << "the range [0, 256) holds row 10 only";
}

TEST(ColdStoreTest, OpeningWipesWhatAnEarlierStoreLeft) {
  TempDir dir;
  const TableSchema s = Schema();
  std::vector<uint8_t> value(s.value_bytes(), 1), state(StateBytes(s), 2);
  {
    auto store = OpenStore(dir.path() + "/t", s);
    ASSERT_TRUE(store->Put(5, 2, value.data(), state.data()).ok());
  }
  auto store = OpenStore(dir.path() + "/t", s);
  EXPECT_EQ(*store->Get(5, value.data(), state.data()), 0u);
}

TEST(ColdTierTest, UntouchedRowsAreComputedAndNeverStored) {
  TempDir dir;
  const TableSchema s = Schema();
  auto store = OpenStore(dir.path() + "/t", s);
  auto shard = CachedShard(s, store.get(), 64);
  ASSERT_TRUE(shard->cached());
  std::vector<uint64_t> rows(2000);
  for (uint64_t i = 0; i < rows.size(); ++i) rows[i] = i * 2;
  std::vector<float> got(rows.size() * s.dim), want(s.dim);
  ASSERT_TRUE(shard->GatherF32(rows, got.data()).ok());
  for (size_t i = 0; i < rows.size(); ++i) {
    InitialRow(s.init, rows[i], s.dim, want.data());
    ASSERT_EQ(std::memcmp(got.data() + i * s.dim, want.data(), sizeof(float) * s.dim), 0) << "row " << rows[i];
  }
  EXPECT_EQ(store->puts(), 0u);
  EXPECT_EQ(shard->stats().cache.resident, 0u);
}

// The same random pushes, puts, restores and pulls on a cached shard (DRAM for 1/8 of the rows)
// and on an all-DRAM shard leave every row, optimizer state and version identical.
TEST(ColdTierTest, MatchesAnAllDramShardUnderPushesPutsAndPulls) {
  for (AdmissionPolicy policy : {AdmissionPolicy::kTinyLfu, AdmissionPolicy::kLru}) {
    TempDir dir;
    const TableSchema s = Schema(OptimizerKind::kAdam, 1024);
    auto store = OpenStore(dir.path() + "/t", s);
    auto cached = CachedShard(s, store.get(), 128, policy);
    auto dram = DramShard(s);
    std::mt19937_64 rng(99);
    std::normal_distribution<float> g(0, 1);
    for (int step = 0; step < 60; ++step) {
      auto rows = ZipfRows(rng, s.num_rows, 200, 0.9);
      std::vector<float> grads(rows.size() * s.dim);
      for (float& x : grads) x = g(rng);
      ASSERT_TRUE(cached->ApplyGradients(rows, grads.data()).ok());
      ASSERT_TRUE(dram->ApplyGradients(rows, grads.data()).ok());
      if (step % 10 == 3) {
        std::vector<uint64_t> put_rows = {rng() % s.num_rows, rng() % s.num_rows};
        std::vector<float> vals(2 * s.dim);
        for (float& x : vals) x = g(rng);
        ASSERT_TRUE(cached->Put(put_rows, reinterpret_cast<uint8_t*>(vals.data())).ok());
        ASSERT_TRUE(dram->Put(put_rows, reinterpret_cast<uint8_t*>(vals.data())).ok());
      }
      auto pulled = ZipfRows(rng, s.num_rows, 300, 0.9);
      std::vector<uint8_t> a(pulled.size() * s.value_bytes()), b(a.size());
      ASSERT_TRUE(cached->Gather(pulled, a.data()).ok());
      ASSERT_TRUE(dram->Gather(pulled, b.data()).ok());
      ASSERT_EQ(a, b) << "step " << step;
    }
    const RowCacheStats cs = cached->stats().cache;
    EXPECT_GT(store->puts(), 0u) << "the test must push rows out of DRAM";
    EXPECT_GT(cs.evictions, 0u);
    EXPECT_LE(cs.resident, cs.capacity);
    ExpectSameRows(*cached, *dram);
  }
}

// Recovery's paths (logged images and gradient replay) work on rows wherever they live.
TEST(ColdTierTest, ReplayAndRestoreReachColdRows) {
  TempDir dir;
  const TableSchema s = Schema(OptimizerKind::kAdagrad, 512);
  auto store = OpenStore(dir.path() + "/t", s);
  auto src = DramShard(s);
  struct Step {
    uint64_t row, version;
    std::vector<float> grad;
  };
  struct Sink : RowImageSink {
    std::vector<Step>* log;
    void Add(uint64_t, uint64_t, const uint8_t*, const uint8_t*) override {}
    void AddGradient(uint64_t row, uint64_t version, const float* g) override {
      log->push_back({row, version, std::vector<float>(g, g + 8)});
    }
  };
  std::vector<Step> log;
  Sink sink;
  sink.log = &log;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g(0, 1);
  for (int i = 0; i < 40; ++i) {
    std::vector<uint64_t> rows(32);
    for (auto& r : rows) r = rng() % s.num_rows;
    std::vector<float> grads(rows.size() * s.dim);
    for (float& x : grads) x = g(rng);
    ASSERT_TRUE(src->ApplyGradients(rows, grads.data(), nullptr, &sink).ok());
  }
  auto replica = CachedShard(s, store.get(), 32);
  for (const Step& st : log) ASSERT_TRUE(replica->ReplayGradient(st.row, st.version, st.grad.data()).ok());
  for (const Step& st : log) ASSERT_TRUE(replica->ReplayGradient(st.row, st.version, st.grad.data()).ok()) << "twice";
  ExpectSameRows(*replica, *src);
  // A logged image older than the row is skipped; a newer one lands even on a cold row.
  std::vector<uint8_t> value(s.value_bytes(), 0), state(replica->state_bytes(), 0);
  const uint64_t row = log.front().row;
  ASSERT_TRUE(replica->Restore(row, 2, value.data(), state.data()).ok());
  std::vector<float> now(s.dim);
  ASSERT_TRUE(replica->GatherF32(std::vector<uint64_t>{row}, now.data()).ok());
  EXPECT_NE(now, std::vector<float>(s.dim, 0.0f)) << "an older image must not overwrite the row";
  ASSERT_TRUE(replica->Restore(row, 1000, value.data(), state.data()).ok());
  ASSERT_TRUE(replica->GatherF32(std::vector<uint64_t>{row}, now.data()).ok());
  EXPECT_EQ(now, std::vector<float>(s.dim, 0.0f));
}

// Readers racing writers that keep reusing slots: every row read is one whole write of that row,
// and no older than what the reader's previous batch saw (within one batch, a row read twice may
// come from DRAM and from the cold tier at different moments, so only batches are ordered).
TEST(ColdTierTest, ReadersNeverSeeAReusedSlotsBytesUnderTheWrongRow) {
  TempDir dir;
  TableSchema s = Schema(OptimizerKind::kSgd, 2048, 16);
  s.init.kind = InitKind::kZeros;
  auto store = OpenStore(dir.path() + "/t", s);
  // Two direct-mapped slots for the 8 rows in play, LRU admission: nearly every miss (by the
  // writer or by a reader) reuses a slot another thread may be reading.
  auto shard = CachedShard(s, store.get(), 2, AdmissionPolicy::kLru, 1);
  constexpr uint64_t kHot = 8;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, reads{0};
  // Row r's value is (r, c, c, ..., c) for a write counter c; untouched rows are zeros.
  auto writer = std::thread([&] {
    std::mt19937_64 rng(1);
    std::vector<float> vals(s.dim);
    for (uint32_t c = 1; c < 20000; ++c) {
      const uint64_t row = rng() % kHot;
      vals[0] = static_cast<float>(row);
      std::fill(vals.begin() + 1, vals.end(), static_cast<float>(c));
      ASSERT_TRUE(shard->Put(std::vector<uint64_t>{row}, reinterpret_cast<uint8_t*>(vals.data())).ok());
    }
    stop = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      std::vector<float> last(s.num_rows, 0.0f), seen(s.num_rows, 0.0f), got(64 * s.dim);
      while (!stop) {
        std::vector<uint64_t> rows(64);
        for (auto& r : rows) r = rng() % kHot;
        ASSERT_TRUE(shard->GatherF32(rows, got.data()).ok());
        for (size_t i = 0; i < rows.size(); ++i) {
          const float* v = got.data() + i * s.dim;
          bool ok = (v[0] == static_cast<float>(rows[i]) || v[1] == 0.0f) && v[1] >= last[rows[i]];
          for (uint32_t c = 2; c < s.dim; ++c) ok = ok && v[c] == v[1];
          if (!ok && bad++ < 5) {
            ADD_FAILURE() << "row " << rows[i] << " read (" << v[0] << ", " << v[1] << ", ..., " << v[s.dim - 1]
                          << ") after c = " << last[rows[i]];
          }
          seen[rows[i]] = std::max(seen[rows[i]], v[1]);
          ++reads;
        }
        last = seen;
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0u) << "of " << reads.load() << " rows read";
  EXPECT_GT(shard->stats().cache.evictions, 100u);
}

// On Zipf(1.1) pulls of a table 4x its DRAM budget, TinyLFU admission keeps more of the hot set
// resident than LRU (the baseline the issue asks to beat).
TEST(ColdTierTest, TinyLfuHitsMoreThanLruOnZipf) {
  const TableSchema s = Schema(OptimizerKind::kSgd, 8192, 8);
  double rate[2];
  for (AdmissionPolicy policy : {AdmissionPolicy::kTinyLfu, AdmissionPolicy::kLru}) {
    TempDir dir;
    auto store = OpenStore(dir.path() + "/t", s);
    auto shard = CachedShard(s, store.get(), s.num_rows / 4, policy);
    std::vector<uint64_t> all(s.num_rows);
    for (uint64_t r = 0; r < s.num_rows; ++r) all[r] = r;
    std::vector<float> vals(all.size() * s.dim, 0.5f);
    ASSERT_TRUE(shard->Put(all, reinterpret_cast<uint8_t*>(vals.data())).ok());  // Every row stored.
    std::mt19937_64 rng(3);
    std::vector<uint8_t> out(1024 * s.value_bytes());
    for (int warm = 0; warm < 20; ++warm) ASSERT_TRUE(shard->Gather(ZipfRows(rng, s.num_rows, 1024, 1.1), out.data()).ok());
    const RowCacheStats before = shard->stats().cache;
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(shard->Gather(ZipfRows(rng, s.num_rows, 1024, 1.1), out.data()).ok());
    const RowCacheStats after = shard->stats().cache;
    const double hits = static_cast<double>(after.hits - before.hits);
    rate[policy == AdmissionPolicy::kLru] = hits / (hits + static_cast<double>(after.misses - before.misses));
  }
  // Deterministic (one thread, fixed seeds): 0.886 vs 0.865 here; the best possible is 0.907.
  EXPECT_GT(rate[0], rate[1] + 0.01) << "TinyLFU " << rate[0] << " vs LRU " << rate[1];
}

}  // namespace
}  // namespace engram::storage
