// Table schema: what every module agrees a table is (rows, width, format, optimizer, init).
//
// A table is one logical array of rows [0, num_rows). Each row is `dim` values in `dtype` at
// rest. Trainable dtypes (f32, bf16, f16) carry f32 optimizer state beside the value; serving
// dtypes (FP8 E4M3 with UE8M0 block scales, opaque bytes) are read-only to the optimizer: a push
// to them is refused.
#ifndef ENGRAM_TABLE_H_
#define ENGRAM_TABLE_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engram/status.h"

namespace engram {

enum class DType : uint8_t {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  // DeepSeek-V4.1-Flash serving rows: dim FP8 E4M3 bytes then dim/32 UE8M0 scale bytes
  // (dim 256 -> 264 bytes). REQUIRES dim % 32 == 0.
  kFp8E4M3Ue8m0 = 3,
  // Opaque fixed-width rows of `dim` bytes, for any other serving format.
  kBytes = 4,
};

inline constexpr size_t kFp8BlockSize = 32;  // Values per UE8M0 scale byte.

// True for dtypes the optimizer may update.
inline bool IsTrainable(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// Bytes one row's values occupy at rest.
inline size_t ValueBytes(DType t, uint32_t dim) {
  switch (t) {
    case DType::kF32: return size_t{4} * dim;
    case DType::kBF16:
    case DType::kF16: return size_t{2} * dim;
    case DType::kFp8E4M3Ue8m0: return dim + dim / kFp8BlockSize;
    case DType::kBytes: return dim;
  }
  return 0;
}

inline const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kFp8E4M3Ue8m0: return "fp8_e4m3_ue8m0";
    case DType::kBytes: return "bytes";
  }
  return "unknown";
}

inline StatusOr<DType> ParseDType(std::string_view s) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3Ue8m0, DType::kBytes}) {
    if (s == DTypeName(t)) return t;
  }
  return Status::InvalidArgument("unknown dtype '" + std::string(s) +
                                 "' (expected f32, bf16, f16, fp8_e4m3_ue8m0 or bytes)");
}

enum class OptimizerKind : uint8_t { kNone = 0, kSgd = 1, kAdagrad = 2, kAdam = 3 };

inline const char* OptimizerName(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::kNone: return "none";
    case OptimizerKind::kSgd: return "sgd";
    case OptimizerKind::kAdagrad: return "adagrad";
    case OptimizerKind::kAdam: return "adam";
  }
  return "unknown";
}

inline StatusOr<OptimizerKind> ParseOptimizer(std::string_view s) {
  for (auto k : {OptimizerKind::kNone, OptimizerKind::kSgd, OptimizerKind::kAdagrad,
                 OptimizerKind::kAdam}) {
    if (s == OptimizerName(k)) return k;
  }
  return Status::InvalidArgument("unknown optimizer '" + std::string(s) +
                                 "' (expected none, sgd, adagrad or adam)");
}

// Hyper-parameters; fields unused by a kind are ignored. Defaults follow PyTorch's.
struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.01f;            // Learning rate, > 0.
  float weight_decay = 0.0f;   // SGD/Adagrad: L2 added to the gradient; Adam: decoupled (AdamW).
  float beta1 = 0.9f;          // Adam.
  float beta2 = 0.999f;        // Adam.
  float eps = 1e-8f;           // Adam (1e-8) and Adagrad (PyTorch uses 1e-10; set it so).
  float initial_accumulator = 0.0f;  // Adagrad.
};

enum class InitKind : uint8_t { kZeros = 0, kNormal = 1, kUniform = 2 };

inline const char* InitName(InitKind k) {
  switch (k) {
    case InitKind::kZeros: return "zeros";
    case InitKind::kNormal: return "normal";
    case InitKind::kUniform: return "uniform";
  }
  return "unknown";
}

inline StatusOr<InitKind> ParseInit(std::string_view s) {
  for (auto k : {InitKind::kZeros, InitKind::kNormal, InitKind::kUniform}) {
    if (s == InitName(k)) return k;
  }
  return Status::InvalidArgument("unknown init '" + std::string(s) +
                                 "' (expected zeros, normal or uniform)");
}

// A row's initial value is a pure function of (seed, row, column): see engram/init.h.
struct InitConfig {
  InitKind kind = InitKind::kNormal;
  float scale = 0.02f;  // normal: sigma; uniform: a, values in [-a, a).
  uint64_t seed = 0;
};

struct TableSchema {
  std::string name;
  uint64_t num_rows = 0;
  uint32_t dim = 0;  // Values per row (bytes per row for kBytes).
  DType dtype = DType::kF32;
  OptimizerConfig optimizer;
  InitConfig init;
  // DRAM each node may spend on this table's rows (value slots, optimizer state, bookkeeping);
  // rows beyond it live in the node's cold tier (RocksDB under --data_dir). 0: every row in DRAM.
  uint64_t dram_bytes = 0;

  size_t value_bytes() const { return ValueBytes(dtype, dim); }

  // Checks every field; the message names the offending one.
  Status Validate() const {
    if (name.empty() || name.size() > 128) return Status::InvalidArgument("table name must be 1..128 chars");
    for (char c : name) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
      if (!ok) return Status::InvalidArgument("table name '" + name + "' may hold only [A-Za-z0-9_.-]");
    }
    if (num_rows == 0) return Status::InvalidArgument("table '" + name + "': num_rows must be > 0");
    if (num_rows > (uint64_t{1} << 48)) {
      return Status::InvalidArgument("table '" + name + "': num_rows above 2^48 is not supported");
    }
    if (dim == 0 || dim > 65536) return Status::InvalidArgument("table '" + name + "': dim must be 1..65536");
    if (dtype == DType::kFp8E4M3Ue8m0 && dim % kFp8BlockSize != 0) {
      return Status::InvalidArgument("table '" + name + "': fp8_e4m3_ue8m0 needs dim % 32 == 0");
    }
    if (IsTrainable(dtype)) {
      const auto& o = optimizer;
      if (!(o.lr > 0.0f) || !std::isfinite(o.lr)) return Status::InvalidArgument("lr must be finite and > 0");
      if (!(o.weight_decay >= 0.0f) || !std::isfinite(o.weight_decay)) {
        return Status::InvalidArgument("weight_decay must be finite and >= 0");
      }
      if (!(o.beta1 >= 0.0f && o.beta1 < 1.0f) || !(o.beta2 >= 0.0f && o.beta2 < 1.0f)) {
        return Status::InvalidArgument("beta1 and beta2 must be in [0, 1)");
      }
      if (!(o.eps > 0.0f) || !std::isfinite(o.eps)) return Status::InvalidArgument("eps must be > 0");
      if (!(o.initial_accumulator >= 0.0f)) return Status::InvalidArgument("initial_accumulator must be >= 0");
    } else {
      if (optimizer.kind != OptimizerKind::kNone) {
        return Status::InvalidArgument("table '" + name + "': dtype " + DTypeName(dtype) +
                                       " is serving-only; its optimizer must be none");
      }
      if (init.kind != InitKind::kZeros) {
        return Status::InvalidArgument("table '" + name + "': dtype " + DTypeName(dtype) +
                                       " rows start as zeros (load values with put or import)");
      }
    }
    if (!(init.scale >= 0.0f) || !std::isfinite(init.scale)) {
      return Status::InvalidArgument("init scale must be finite and >= 0");
    }
    return Status::OK();
  }
};

}  // namespace engram

#endif  // ENGRAM_TABLE_H_
