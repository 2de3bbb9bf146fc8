// Minimal safetensors access for engramctl import/export: the format is an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw
// little-endian tensor data. Reads and writes by row ranges with pread/pwrite, so tables of any
// size stream through bounded memory.
#ifndef ENGRAM_CLUSTER_ENGRAMCTL_SAFETENSORS_H_
#define ENGRAM_CLUSTER_ENGRAMCTL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engram/status.h"

namespace engram::ctl {

struct TensorInfo {
  std::string dtype;           // "F32", "BF16", "F16", "F8_E4M3", "F8_E8M0", "U8", ...
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;  // Byte offsets into the file (absolute).
  size_t element_size() const;
};

class SafetensorsReader {
 public:
  static StatusOr<SafetensorsReader> Open(const std::string& path);
  SafetensorsReader(SafetensorsReader&& o) noexcept;
  ~SafetensorsReader();
  // NotFound (listing the tensors present) if there is no such tensor.
  StatusOr<TensorInfo> Tensor(const std::string& name) const;
  // Reads `bytes` bytes at `offset` (absolute) into out.
  Status Read(uint64_t offset, size_t bytes, uint8_t* out) const;

 private:
  SafetensorsReader() = default;
  int fd_ = -1;
  std::string path_;
  std::map<std::string, TensorInfo> tensors_;
};

// Writes a file whose tensors are laid out back to back in the given order; data is then
// written by offset. The header is written at Create.
class SafetensorsWriter {
 public:
  struct Spec {
    std::string name, dtype;
    std::vector<uint64_t> shape;
    size_t element_size;
  };
  static StatusOr<SafetensorsWriter> Create(const std::string& path, const std::vector<Spec>& tensors);
  SafetensorsWriter(SafetensorsWriter&& o) noexcept;
  ~SafetensorsWriter();
  // Absolute offset of tensor i's data.
  uint64_t offset(size_t i) const { return offsets_[i]; }
  Status Write(uint64_t offset, const uint8_t* data, size_t bytes);
  Status Close();

 private:
  SafetensorsWriter() = default;
  int fd_ = -1;
  std::string path_;
  std::vector<uint64_t> offsets_;
};

}  // namespace engram::ctl

#endif  // ENGRAM_CLUSTER_ENGRAMCTL_SAFETENSORS_H_
