// Sparse row optimizers: SGD, Adagrad and Adam (per-row step count, bias correction), applied
// in place to one row's f32 value and its f32 state.
//
// The math (g = the summed gradient of the row for this push, wd = weight_decay):
//   SGD:     w -= lr * (g + wd * w)
//   Adagrad: g' = g + wd * w;  acc += g'^2;  w -= lr * g' / (sqrt(acc) + eps)
//   Adam:    t += 1;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//            w -= lr * ( (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * w )   (AdamW)
// The step count t is per row: a row updated k times has seen exactly k Adam steps, however
// many global steps the trainer ran (the sparse-Adam convention of the Engram paper's training).
//
// Thread-safety: stateless; the caller holds the row's slot exclusively (RowArena::Writer).
#ifndef ENGRAM_STORAGE_OPTIMIZER_H_
#define ENGRAM_STORAGE_OPTIMIZER_H_

#include <cstddef>
#include <cstdint>

#include "engram/table.h"

namespace engram::storage {

// Bytes of optimizer state per row: SGD 0, Adagrad 4*dim, Adam 8 + 8*dim.
size_t OptimizerStateBytes(const OptimizerConfig& cfg, uint32_t dim);

// Writes the state of a row that was never updated (Adagrad's initial accumulator, zeros).
void InitOptimizerState(const OptimizerConfig& cfg, uint32_t dim, uint8_t* state /* (state bytes) */);

// Applies one update. REQUIRES: every g[i] finite (the caller validates before applying).
void ApplyOptimizer(const OptimizerConfig& cfg, uint32_t dim, float* w /* (dim) */,
                    uint8_t* state /* (state bytes) */, const float* g /* (dim) */);

// The Adam step count stored in a row's state (0 for other optimizers).
uint32_t AdamStepCount(const OptimizerConfig& cfg, const uint8_t* state);

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_OPTIMIZER_H_
