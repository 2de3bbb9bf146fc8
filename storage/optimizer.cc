// SGD, Adagrad and Adam row updates.
#include "storage/optimizer.h"

#include <cmath>
#include <cstring>

namespace engram::storage {

size_t OptimizerStateBytes(const OptimizerConfig& cfg, uint32_t dim) {
  switch (cfg.kind) {
    case OptimizerKind::kNone:
    case OptimizerKind::kSgd: return 0;
    case OptimizerKind::kAdagrad: return size_t{4} * dim;
    case OptimizerKind::kAdam: return 8 + size_t{8} * dim;  // [u32 step, u32 pad][m (dim)][v (dim)]
  }
  return 0;
}

void InitOptimizerState(const OptimizerConfig& cfg, uint32_t dim, uint8_t* state) {
  const size_t n = OptimizerStateBytes(cfg, dim);
  if (n == 0) return;
  std::memset(state, 0, n);
  if (cfg.kind == OptimizerKind::kAdagrad) {
    float* acc = reinterpret_cast<float*>(state);
    for (uint32_t i = 0; i < dim; ++i) acc[i] = cfg.initial_accumulator;
  }
}

uint32_t AdamStepCount(const OptimizerConfig& cfg, const uint8_t* state) {
  if (cfg.kind != OptimizerKind::kAdam) return 0;
  uint32_t t;
  std::memcpy(&t, state, 4);
  return t;
}

namespace {

// Hyper-parameters are copied to locals: the rows are floats too, so through the config
// reference the compiler would have to assume every row store may change them, which blocks
// vectorisation of these loops.

void ApplySgd(const OptimizerConfig& c, uint32_t dim, float* __restrict w, const float* __restrict g) {
  const float lr = c.lr, wd = c.weight_decay;
  for (uint32_t i = 0; i < dim; ++i) w[i] -= lr * (g[i] + wd * w[i]);
}

void ApplyAdagrad(const OptimizerConfig& c, uint32_t dim, float* __restrict w, float* __restrict acc,
                  const float* __restrict g) {
  const float lr = c.lr, wd = c.weight_decay, eps = c.eps;
  for (uint32_t i = 0; i < dim; ++i) {
    const float gi = g[i] + wd * w[i];
    acc[i] += gi * gi;
    w[i] -= lr * gi / (std::sqrt(acc[i]) + eps);
  }
}

void ApplyAdam(const OptimizerConfig& c, uint32_t dim, float* __restrict w, uint8_t* state,
               const float* __restrict g) {
  uint32_t t;
  std::memcpy(&t, state, 4);
  t += 1;
  std::memcpy(state, &t, 4);
  float* __restrict m = reinterpret_cast<float*>(state + 8);
  float* __restrict v = m + dim;
  const float b1 = c.beta1, b2 = c.beta2, lr = c.lr, wd = c.weight_decay, eps = c.eps;
  // Bias corrections in double: b^t for large t underflows gracefully and stays exact enough.
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), t));
  for (uint32_t i = 0; i < dim; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float mhat = m[i] / bc1;
    const float vhat = v[i] / bc2;
    w[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * w[i]);
  }
}

}  // namespace

void ApplyOptimizer(const OptimizerConfig& cfg, uint32_t dim, float* w, uint8_t* state, const float* g) {
  switch (cfg.kind) {
    case OptimizerKind::kNone: return;
    case OptimizerKind::kSgd: ApplySgd(cfg, dim, w, g); return;
    case OptimizerKind::kAdagrad: ApplyAdagrad(cfg, dim, w, reinterpret_cast<float*>(state), g); return;
    case OptimizerKind::kAdam: ApplyAdam(cfg, dim, w, state, g); return;
  }
}

}  // namespace engram::storage
