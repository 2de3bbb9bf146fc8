#include "storage/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace engram::storage {
namespace {

constexpr uint32_t kDim = 16;
constexpr int kSteps = 300;

// The optimizer formulas evaluated in double, one row, for comparison.
struct DoubleReference {
  OptimizerConfig c;
  std::vector<double> w, s1, s2;
  int t = 0;
  DoubleReference(OptimizerConfig cfg, const std::vector<float>& w0)
      : c(cfg), w(w0.begin(), w0.end()), s1(w0.size(), cfg.kind == OptimizerKind::kAdagrad ? cfg.initial_accumulator : 0.0),
        s2(w0.size(), 0.0) {}
  void Step(const std::vector<float>& g) {
    ++t;
    for (size_t i = 0; i < w.size(); ++i) {
      const double gi = g[i];
      switch (c.kind) {
        case OptimizerKind::kSgd: w[i] -= c.lr * (gi + c.weight_decay * w[i]); break;
        case OptimizerKind::kAdagrad: {
          const double gw = gi + c.weight_decay * w[i];
          s1[i] += gw * gw;
          w[i] -= c.lr * gw / (std::sqrt(s1[i]) + c.eps);
          break;
        }
        case OptimizerKind::kAdam: {
          s1[i] = c.beta1 * s1[i] + (1 - double{c.beta1}) * gi;
          s2[i] = c.beta2 * s2[i] + (1 - double{c.beta2}) * gi * gi;
          const double mhat = s1[i] / (1 - std::pow(double{c.beta1}, t));
          const double vhat = s2[i] / (1 - std::pow(double{c.beta2}, t));
          w[i] -= c.lr * (mhat / (std::sqrt(vhat) + c.eps) + c.weight_decay * w[i]);
          break;
        }
        case OptimizerKind::kNone: break;
      }
    }
  }
};

void RunAgainstReference(const OptimizerConfig& cfg, double tol) {
  std::mt19937 gen(17);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> w(kDim), g(kDim);
  for (auto& x : w) x = d(gen);
  std::vector<uint8_t> state(OptimizerStateBytes(cfg, kDim));
  InitOptimizerState(cfg, kDim, state.data());
  DoubleReference ref(cfg, w);
  for (int step = 0; step < kSteps; ++step) {
    for (auto& x : g) x = d(gen) * 0.5f + 0.1f;
    ApplyOptimizer(cfg, kDim, w.data(), state.data(), g.data());
    ref.Step(g);
  }
  for (uint32_t i = 0; i < kDim; ++i) {
    EXPECT_NEAR(w[i], ref.w[i], tol * (1.0 + std::fabs(ref.w[i]))) << OptimizerName(cfg.kind) << " i=" << i;
  }
  if (cfg.kind == OptimizerKind::kAdam) {
    EXPECT_EQ(AdamStepCount(cfg, state.data()), uint32_t(kSteps));
  }
}

TEST(OptimizerTest, SgdMatchesItsFormulaInDoubleOverManySteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.lr = 0.01f;
  RunAgainstReference(c, 1e-5);
  c.weight_decay = 0.01f;
  RunAgainstReference(c, 1e-5);
}

TEST(OptimizerTest, AdagradMatchesItsFormulaInDoubleOverManySteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdagrad;
  c.lr = 0.05f;
  c.eps = 1e-10f;
  c.initial_accumulator = 0.1f;
  RunAgainstReference(c, 1e-5);
  c.weight_decay = 0.001f;
  RunAgainstReference(c, 1e-5);
}

TEST(OptimizerTest, AdamWithBiasCorrectionMatchesItsFormulaInDoubleOverManySteps) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdam;
  c.lr = 0.005f;  // The Engram paper trains tables with 5x the dense learning rate.
  RunAgainstReference(c, 1e-4);
  c.weight_decay = 0.01f;  // Decoupled (AdamW).
  RunAgainstReference(c, 1e-4);
}

TEST(OptimizerTest, FirstAdamStepMovesEachWeightByLearningRate) {
  // With bias correction, step 1 gives mhat = g and vhat = g^2: the update is lr * sign(g).
  OptimizerConfig c;
  c.kind = OptimizerKind::kAdam;
  c.lr = 0.1f;
  std::vector<float> w = {1.0f, 1.0f}, g = {3.0f, -0.001f};
  std::vector<uint8_t> state(OptimizerStateBytes(c, 2));
  InitOptimizerState(c, 2, state.data());
  ApplyOptimizer(c, 2, w.data(), state.data(), g.data());
  EXPECT_NEAR(w[0], 0.9f, 1e-6);
  EXPECT_NEAR(w[1], 1.1f, 1e-4);
}

TEST(OptimizerTest, StateSizes) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  EXPECT_EQ(OptimizerStateBytes(c, 64), 0u);
  c.kind = OptimizerKind::kAdagrad;
  EXPECT_EQ(OptimizerStateBytes(c, 64), 256u);
  c.kind = OptimizerKind::kAdam;
  EXPECT_EQ(OptimizerStateBytes(c, 64), 520u);
}

}  // namespace
}  // namespace engram::storage
