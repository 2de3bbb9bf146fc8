#include "storage/shard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "engram/init.h"
#include "engram/row_codec.h"
#include "storage/optimizer.h"

namespace engram::storage {
namespace {

TableSchema Schema(DType dtype = DType::kF32, OptimizerKind opt = OptimizerKind::kSgd, uint32_t dim = 8) {
  TableSchema s;
  s.name = "t";
  s.num_rows = 1000;
  s.dim = dim;
  s.dtype = dtype;
  s.optimizer.kind = opt;
  s.optimizer.lr = 0.5f;
  s.init = {InitKind::kNormal, 0.1f, 42};
  if (!IsTrainable(dtype)) {
    s.optimizer.kind = OptimizerKind::kNone;
    s.init.kind = InitKind::kZeros;
  }
  return s;
}

std::unique_ptr<Shard> MakeShard(const TableSchema& s, uint64_t first = 0, uint64_t n = 1000) {
  auto shard = Shard::Create(s, first, n, {});
  EXPECT_TRUE(shard.ok()) << shard.status().ToString();
  return std::move(shard).value();
}

std::vector<float> Row(const Shard& shard, uint64_t row) {
  std::vector<float> v(shard.schema().dim);
  EXPECT_TRUE(shard.GatherF32(std::vector<uint64_t>{row}, v.data()).ok());
  return v;
}

std::vector<float> Init(const TableSchema& s, uint64_t row) {
  std::vector<float> v(s.dim);
  InitialRow(s.init, row, s.dim, v.data());
  return v;
}

TEST(ShardTest, UntouchedRowsReadAsTheirInitialValueWithoutStorage) {
  const TableSchema s = Schema();
  auto shard = MakeShard(s, 500, 500);
  EXPECT_EQ(Row(*shard, 777), Init(s, 777));
  std::vector<uint8_t> raw(s.value_bytes());
  ASSERT_TRUE(shard->Gather(std::vector<uint64_t>{777}, raw.data()).ok());
  EXPECT_EQ(std::memcmp(raw.data(), Init(s, 777).data(), raw.size()), 0);
  EXPECT_EQ(shard->stats().touched_rows, 0u);
}

TEST(ShardTest, Bf16InitialValueIsRoundedOnceAndStable) {
  const TableSchema s = Schema(DType::kBF16);
  auto shard = MakeShard(s);
  std::vector<float> want = Init(s, 3);
  for (auto& x : want) x = Bf16ToF32(F32ToBf16(x));
  EXPECT_EQ(Row(*shard, 3), want);
}

TEST(ShardTest, DuplicateRowsAreSummedBeforeApply) {
  TableSchema s = Schema(DType::kF32, OptimizerKind::kAdam);
  auto shard = MakeShard(s);
  const std::vector<uint64_t> rows = {5, 9, 5};
  std::vector<float> g(3 * s.dim);
  for (uint32_t c = 0; c < s.dim; ++c) {
    g[c] = 1.0f;
    g[s.dim + c] = 2.0f;
    g[2 * s.dim + c] = -3.0f;  // Row 5 sums to -2: one Adam step of +lr per weight.
  }
  ASSERT_TRUE(shard->ApplyGradients(rows, g.data()).ok());
  const auto init5 = Init(s, 5), init9 = Init(s, 9), now5 = Row(*shard, 5), now9 = Row(*shard, 9);
  for (uint32_t c = 0; c < s.dim; ++c) {
    EXPECT_NEAR(now5[c], init5[c] + s.optimizer.lr, 1e-5);
    EXPECT_NEAR(now9[c], init9[c] - s.optimizer.lr, 1e-5);
  }
  // One step per unique row, whatever the duplicates.
  std::vector<uint8_t> raw(s.value_bytes());
  EXPECT_EQ(shard->arena().version(5), 2u);
}

TEST(ShardTest, NonFiniteGradientIsRefusedAndNoRowChanges) {
  const TableSchema s = Schema();
  auto shard = MakeShard(s);
  std::vector<float> g(2 * s.dim, 0.25f);
  g[s.dim + 3] = std::nanf("");
  Status st = shard->ApplyGradients(std::vector<uint64_t>{1, 2}, g.data());
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
  EXPECT_NE(st.message().find("row 2"), std::string::npos) << st.message();
  EXPECT_EQ(shard->arena().version(1), 0u);
  EXPECT_EQ(shard->arena().version(2), 0u);
  g[s.dim + 3] = INFINITY;
  EXPECT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{1, 2}, g.data()).IsInvalidArgument());
  EXPECT_EQ(Row(*shard, 1), Init(s, 1));
}

TEST(ShardTest, DuplicatesWhoseSumOverflowsAreRefused) {
  const TableSchema s = Schema(DType::kF32, OptimizerKind::kSgd, 1);
  auto shard = MakeShard(s);
  std::vector<float> g = {1.0f, 3e38f, 3e38f};
  EXPECT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{0, 4, 4}, g.data()).IsInvalidArgument());
  EXPECT_EQ(shard->arena().version(0), 0u);
}

TEST(ShardTest, RowOutsideTheShardIsOutOfRangeAndNothingApplies) {
  const TableSchema s = Schema();
  auto shard = MakeShard(s, 100, 50);
  std::vector<float> g(2 * s.dim, 1.0f), out(2 * s.dim);
  EXPECT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{120, 150}, g.data()).IsOutOfRange());
  EXPECT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{120, 99}, g.data()).IsOutOfRange());
  EXPECT_EQ(shard->arena().version(20), 0u);
  EXPECT_TRUE(shard->GatherF32(std::vector<uint64_t>{100, 1u << 30}, out.data()).IsOutOfRange());
}

TEST(ShardTest, OversizedBatchIsRefused) {
  const TableSchema s = Schema();
  ShardOptions o;
  o.max_batch_rows = 4;
  auto shard = Shard::Create(s, 0, 1000, o);
  ASSERT_TRUE(shard.ok());
  std::vector<uint64_t> rows = {1, 2, 3, 4, 5};
  std::vector<float> out(5 * s.dim);
  EXPECT_TRUE((*shard)->GatherF32(rows, out.data()).IsInvalidArgument());
}

TEST(ShardTest, ServingRowsRefusePushesAndRoundTripPuts) {
  const TableSchema s = Schema(DType::kFp8E4M3Ue8m0, OptimizerKind::kNone, 256);
  auto shard = MakeShard(s);
  std::vector<float> g(256, 0.1f);
  Status st = shard->ApplyGradients(std::vector<uint64_t>{1}, g.data());
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  std::vector<uint8_t> row(264);
  for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<uint8_t>(i * 7 % 120);
  ASSERT_TRUE(shard->Put(std::vector<uint64_t>{1}, row.data()).ok());
  std::vector<uint8_t> back(264);
  ASSERT_TRUE(shard->Gather(std::vector<uint64_t>{1}, back.data()).ok());
  EXPECT_EQ(back, row);
  std::vector<float> decoded(256), want(256);
  ASSERT_TRUE(shard->GatherF32(std::vector<uint64_t>{1}, decoded.data()).ok());
  DecodeRow(DType::kFp8E4M3Ue8m0, 256, row.data(), want.data());
  EXPECT_EQ(decoded, want);
}

TEST(ShardTest, OpaqueByteRowsHaveNoFloatValue) {
  const TableSchema s = Schema(DType::kBytes, OptimizerKind::kNone, 40);
  auto shard = MakeShard(s);
  std::vector<float> out(40);
  EXPECT_TRUE(shard->GatherF32(std::vector<uint64_t>{1}, out.data()).IsInvalidArgument());
}

TEST(ShardTest, PutOfNonFiniteTrainableValueIsRefused) {
  const TableSchema s = Schema();
  auto shard = MakeShard(s);
  std::vector<float> v(s.dim, 1.0f);
  v[2] = INFINITY;
  EXPECT_TRUE(shard->Put(std::vector<uint64_t>{7}, reinterpret_cast<uint8_t*>(v.data())).IsInvalidArgument());
  EXPECT_EQ(shard->arena().version(7), 0u);
}

TEST(ShardTest, PutKeepsOptimizerStateAndPushContinuesFromPutValue) {
  TableSchema s = Schema(DType::kF32, OptimizerKind::kSgd);
  auto shard = MakeShard(s);
  std::vector<float> v(s.dim, 2.0f), g(s.dim, 1.0f);
  ASSERT_TRUE(shard->Put(std::vector<uint64_t>{7}, reinterpret_cast<uint8_t*>(v.data())).ok());
  ASSERT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{7}, g.data()).ok());
  EXPECT_EQ(Row(*shard, 7), std::vector<float>(s.dim, 2.0f - s.optimizer.lr));
}

TEST(ShardTest, AdagradInitialAccumulatorAppliesToUntouchedRows) {
  TableSchema s = Schema(DType::kF32, OptimizerKind::kAdagrad, 1);
  s.optimizer.initial_accumulator = 3.0f;
  s.optimizer.eps = 0.0f + 1e-10f;
  s.init.kind = InitKind::kZeros;
  auto shard = MakeShard(s);
  std::vector<float> g = {1.0f};
  ASSERT_TRUE(shard->ApplyGradients(std::vector<uint64_t>{11}, g.data()).ok());
  EXPECT_NEAR(Row(*shard, 11)[0], -s.optimizer.lr / 2.0f, 1e-6);  // acc = 3 + 1 = 4.
}

TEST(ShardTest, ConcurrentPushersToTheSameRowsLoseNoUpdate) {
  TableSchema s = Schema(DType::kF32, OptimizerKind::kSgd, 4);
  s.optimizer.lr = 1.0f;
  s.init.kind = InitKind::kZeros;
  auto shard = MakeShard(s);
  constexpr int kPushes = 5000;
  auto pusher = [&] {
    ApplyScratch scratch;
    std::vector<uint64_t> rows = {3, 4, 3};
    std::vector<float> g(3 * 4, 1.0f);
    for (int i = 0; i < kPushes; ++i) ASSERT_TRUE(shard->ApplyGradients(rows, g.data(), &scratch).ok());
  };
  std::thread a(pusher), b(pusher);
  a.join();
  b.join();
  // Integer-valued SGD with lr 1 is exact in f32: row 3 gets 2 per push, row 4 gets 1.
  EXPECT_EQ(Row(*shard, 3), std::vector<float>(4, -4.0f * kPushes));
  EXPECT_EQ(Row(*shard, 4), std::vector<float>(4, -2.0f * kPushes));
}

}  // namespace
}  // namespace engram::storage

namespace engram::storage {
namespace {

// Records what a write reported, as the write-ahead log does.
struct Captured final : RowImageSink {
  struct Step {
    uint64_t row, version;
    std::vector<float> grad;
  };
  struct Image {
    uint64_t row, version;
    std::vector<uint8_t> value, state;
  };
  std::vector<Step> steps;
  std::vector<Image> images;
  size_t dim = 0, vb = 0, sb = 0;
  void Add(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) override {
    images.push_back({row, version, {value, value + vb}, state ? std::vector<uint8_t>(state, state + sb) : std::vector<uint8_t>{}});
  }
  void AddGradient(uint64_t row, uint64_t version, const float* grad) override {
    steps.push_back({row, version, {grad, grad + dim}});
  }
};

TableSchema AdamBf16() {
  TableSchema s;
  s.name = "t";
  s.num_rows = 64;
  s.dim = 8;
  s.dtype = DType::kBF16;
  s.optimizer.kind = OptimizerKind::kAdam;
  s.optimizer.lr = 0.01f;
  s.init = {InitKind::kNormal, 0.1f, 3};
  return s;
}

TEST(ShardReplayTest, ReplayedGradientsReproduceTheRowsBitForBitOnceEach) {
  const TableSchema s = AdamBf16();
  auto live = Shard::Create(s, 0, s.num_rows, {});
  auto replica = Shard::Create(s, 0, s.num_rows, {});
  ASSERT_TRUE(live.ok() && replica.ok());
  Captured log;
  log.dim = s.dim;
  const std::vector<uint64_t> rows = {5, 9, 5, 63};  // Row 5 twice: one summed step.
  std::vector<float> g(rows.size() * s.dim);
  for (size_t i = 0; i < g.size(); ++i) g[i] = 0.01f * float(i % 7) - 0.02f;
  for (int k = 0; k < 3; ++k) ASSERT_TRUE((*live)->ApplyGradients(rows, g.data(), nullptr, &log).ok());
  ASSERT_EQ(log.steps.size(), 9u);  // 3 unique rows x 3 pushes.
  for (int pass = 0; pass < 2; ++pass) {  // The second pass finds every step applied: no change.
    for (const auto& st : log.steps) ASSERT_TRUE((*replica)->ReplayGradient(st.row, st.version, st.grad.data()).ok());
  }
  std::vector<float> a(3 * s.dim), b(3 * s.dim);
  const std::vector<uint64_t> probe = {5, 9, 63};
  ASSERT_TRUE((*live)->GatherF32(probe, a.data()).ok());
  ASSERT_TRUE((*replica)->GatherF32(probe, b.data()).ok());
  EXPECT_EQ(a, b);
  // One more live step, replayed after skipping the one before it: the gap is refused.
  ASSERT_TRUE((*live)->ApplyGradients(std::vector<uint64_t>{9}, g.data(), nullptr, &log).ok());
  ASSERT_TRUE((*live)->ApplyGradients(std::vector<uint64_t>{9}, g.data(), nullptr, &log).ok());
  const auto& last = log.steps.back();
  EXPECT_EQ((*replica)->ReplayGradient(last.row, last.version, last.grad.data()).code(), Code::kDataLoss);
}

TEST(ShardReplayTest, ImagesRestoreOnlyNewerVersionsAndRewriteLogsAnImage) {
  TableSchema s = AdamBf16();
  auto a = Shard::Create(s, 0, s.num_rows, {});
  auto b = Shard::Create(s, 0, s.num_rows, {});
  ASSERT_TRUE(a.ok() && b.ok());
  Captured log;
  log.dim = s.dim;
  log.vb = s.value_bytes();
  log.sb = (*a)->state_bytes();
  std::vector<float> g(s.dim, 0.5f);
  ASSERT_TRUE((*a)->ApplyGradients(std::vector<uint64_t>{7}, g.data()).ok());
  ASSERT_TRUE((*a)->Rewrite(7, nullptr, nullptr, &log).ok());  // Back to the initial value, as version 4.
  ASSERT_EQ(log.images.size(), 1u);
  EXPECT_EQ(log.images[0].version, 4u);
  const auto& im = log.images[0];
  ASSERT_TRUE((*b)->Restore(im.row, im.version, im.value.data(), im.state.data()).ok());
  std::vector<float> va(s.dim), vb(s.dim), init(s.dim);
  ASSERT_TRUE((*a)->GatherF32(std::vector<uint64_t>{7}, va.data()).ok());
  ASSERT_TRUE((*b)->GatherF32(std::vector<uint64_t>{7}, vb.data()).ok());
  ASSERT_TRUE((*b)->GatherF32(std::vector<uint64_t>{8}, init.data()).ok());
  EXPECT_EQ(va, vb);
  // An older image does not overwrite a newer row.
  std::vector<uint8_t> zeros(s.value_bytes(), 0), zstate((*a)->state_bytes(), 0);
  ASSERT_TRUE((*b)->Restore(7, 2, zeros.data(), zstate.data()).ok());
  ASSERT_TRUE((*b)->GatherF32(std::vector<uint64_t>{7}, vb.data()).ok());
  EXPECT_EQ(va, vb);
}

}  // namespace
}  // namespace engram::storage
