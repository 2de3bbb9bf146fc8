#include "client/numpy_random.h"

#include <gtest/gtest.h>

#include "../testing/vectors.h"

namespace engram::client {
namespace {

uint64_t U64(const nlohmann::json& s) { return std::stoull(s.get<std::string>()); }
int64_t I64(const nlohmann::json& s) { return std::stoll(s.get<std::string>()); }

TEST(NumpyRandomTest, SeedSequenceStateMatchesNumpy) {
  for (const auto& v : testing::EngramVectors()["numpy_random"]["seed_sequence"]) {
    const auto state = SeedSequenceState(U64(v["entropy"]), 4);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(state[i], U64(v["state"][i])) << "entropy " << v["entropy"];
  }
}

TEST(NumpyRandomTest, Pcg64RawOutputsMatchNumpy) {
  for (const auto& v : testing::EngramVectors()["numpy_random"]["pcg64"]) {
    Pcg64 rng(U64(v["seed"]));
    for (const auto& want : v["raw"]) EXPECT_EQ(rng.NextU64(), U64(want)) << "seed " << v["seed"];
  }
}

TEST(NumpyRandomTest, BoundedInt64DrawsMatchNumpyOnEveryBranch) {
  for (const auto& v : testing::EngramVectors()["numpy_random"]["integers"]) {
    Pcg64 rng(v["seed"].get<uint64_t>());
    for (const auto& want : v["values"]) {
      EXPECT_EQ(rng.IntegersInt64(I64(v["low"]), I64(v["high"])), I64(want))
          << "seed " << v["seed"] << " range [" << v["low"] << ", " << v["high"] << ")";
    }
  }
}

}  // namespace
}  // namespace engram::client
