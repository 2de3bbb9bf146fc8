// engramctl import / export: stream a table from / to a safetensors file in bounded memory.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "client/client.h"
#include "cluster/engramctl/commands.h"
#include "cluster/engramctl/safetensors.h"

namespace engram::ctl {
namespace {

constexpr size_t kChunkBytes = 64u << 20;


// The safetensors dtype of a table's values (for fp8: of the value tensor).
const char* TensorDType(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kFp8E4M3Ue8m0: return "F8_E4M3";
    case DType::kBytes: return "U8";
  }
  return "?";
}

void Progress(const char* what, uint64_t done, uint64_t total) {
  std::fprintf(stderr, "\r%s: %llu / %llu rows (%.0f%%)", what, static_cast<unsigned long long>(done),
               static_cast<unsigned long long>(total), total ? 100.0 * done / total : 100.0);
  if (done == total) std::fprintf(stderr, "\n");
}

Status CheckTensor(const TensorInfo& t, const std::string& name, const std::vector<std::string>& dtypes,
                   uint64_t rows, uint64_t cols) {
  if (std::find(dtypes.begin(), dtypes.end(), t.dtype) == dtypes.end()) {
    return Status::InvalidArgument("tensor '" + name + "' is " + t.dtype + "; the table needs " + dtypes[0]);
  }
  if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
    std::string got;
    for (uint64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
    return Status::InvalidArgument("tensor '" + name + "' has shape [" + got + "]; the table needs [" +
                                   std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
  return Status::OK();
}

}  // namespace

int RunImportExport(const std::string& cmd, const CtlFlags& f, client::Client& cl) {
  if (f.table.empty() || f.safetensors.empty()) return Fail(cmd, Status::InvalidArgument("--table and --safetensors are required"));
  auto t = cl.OpenTable(f.table);
  if (!t.ok()) return Fail(cmd, t.status());
  const TableSchema& s = (*t)->schema();
  const bool fp8 = s.dtype == DType::kFp8E4M3Ue8m0;
  const uint64_t value_cols = s.dim;  // Values per row; fp8 scales travel in a second tensor.
  const size_t elem = fp8 ? 1 : ValueBytes(s.dtype, s.dim) / s.dim;
  const size_t value_part = value_cols * elem;  // Bytes of the value tensor per row.
  const size_t scale_part = fp8 ? s.dim / kFp8BlockSize : 0;
  const size_t vb = s.value_bytes();
  const uint64_t chunk = std::max<uint64_t>(1, std::min<uint64_t>(65536, kChunkBytes / vb));
  const std::string tensor = f.tensor.empty() ? "layers.0.engram.embed.weight" : f.tensor;
  const std::string scale_tensor = f.scale_tensor.empty() && fp8 ? tensor.substr(0, tensor.rfind('.')) + ".scale" : f.scale_tensor;
  std::vector<uint64_t> rows;
  std::vector<uint8_t> values(chunk * vb), part(chunk * std::max(value_part, scale_part));

  if (cmd == "import") {
    auto r = SafetensorsReader::Open(f.safetensors);
    if (!r.ok()) return Fail(cmd, r.status());
    auto ti = r->Tensor(tensor);
    if (!ti.ok()) return Fail(cmd, ti.status());
    if (Status st = CheckTensor(*ti, tensor, {TensorDType(s.dtype)}, s.num_rows, value_cols); !st.ok()) return Fail(cmd, st);
    TensorInfo si;
    if (fp8) {
      auto sc = r->Tensor(scale_tensor);
      if (!sc.ok()) return Fail(cmd, sc.status().WithContext("fp8 tables need the UE8M0 scale tensor (--scale-tensor)"));
      si = *sc;
      if (Status st = CheckTensor(si, scale_tensor, {"F8_E8M0", "U8"}, s.num_rows, scale_part); !st.ok()) return Fail(cmd, st);
    }
    for (uint64_t first = 0; first < s.num_rows; first += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, s.num_rows - first);
      rows.resize(n);
      for (uint64_t i = 0; i < n; ++i) rows[i] = first + i;
      if (Status st = r->Read(ti->begin + first * value_part, n * value_part, part.data()); !st.ok()) return Fail(cmd, st);
      for (uint64_t i = 0; i < n; ++i) std::memcpy(&values[i * vb], &part[i * value_part], value_part);
      if (fp8) {
        if (Status st = r->Read(si.begin + first * scale_part, n * scale_part, part.data()); !st.ok()) return Fail(cmd, st);
        for (uint64_t i = 0; i < n; ++i) std::memcpy(&values[i * vb + value_part], &part[i * scale_part], scale_part);
      }
      if (Status st = (*t)->Put(rows, values.data()); !st.ok()) return Fail(cmd, st.WithContext("rows from " + std::to_string(first)));
      Progress("import", first + n, s.num_rows);
    }
    return 0;
  }

  // export
  std::vector<SafetensorsWriter::Spec> specs = {{tensor, TensorDType(s.dtype), {s.num_rows, value_cols}, elem}};
  if (fp8) specs.push_back({scale_tensor, "F8_E8M0", {s.num_rows, scale_part}, 1});
  auto w = SafetensorsWriter::Create(f.safetensors, specs);
  if (!w.ok()) return Fail(cmd, w.status());
  for (uint64_t first = 0; first < s.num_rows; first += chunk) {
    const uint64_t n = std::min<uint64_t>(chunk, s.num_rows - first);
    rows.resize(n);
    for (uint64_t i = 0; i < n; ++i) rows[i] = first + i;
    if (Status st = (*t)->Pull(rows, values.data()); !st.ok()) return Fail(cmd, st);
    for (uint64_t i = 0; i < n; ++i) std::memcpy(&part[i * value_part], &values[i * vb], value_part);
    if (Status st = w->Write(w->offset(0) + first * value_part, part.data(), n * value_part); !st.ok()) return Fail(cmd, st);
    if (fp8) {
      for (uint64_t i = 0; i < n; ++i) std::memcpy(&part[i * scale_part], &values[i * vb + value_part], scale_part);
      if (Status st = w->Write(w->offset(1) + first * scale_part, part.data(), n * scale_part); !st.ok()) return Fail(cmd, st);
    }
    Progress("export", first + n, s.num_rows);
  }
  if (Status st = w->Close(); !st.ok()) return Fail(cmd, st);
  return 0;
}

}  // namespace engram::ctl
