// safetensors header parsing and positioned reads/writes.
#include "cluster/engramctl/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

namespace engram::ctl {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;

Status Errno(const std::string& what) { return Status::IoError(what + ": " + std::strerror(errno)); }

}  // namespace

size_t TensorInfo::element_size() const {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  return 1;  // F8_E4M3, F8_E5M2, F8_E8M0, U8, I8, BOOL.
}

StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
  SafetensorsReader r;
  r.path_ = path;
  r.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r.fd_ < 0) return errno == ENOENT ? Status::NotFound("no file '" + path + "'") : Errno("open " + path);
  uint64_t n = 0;
  if (pread(r.fd_, &n, 8, 0) != 8) return Status::InvalidArgument(path + ": too short for a safetensors file");
  if (n == 0 || n > kMaxHeader) return Status::InvalidArgument(path + ": implausible header length " + std::to_string(n));
  std::string header(n, '\0');
  if (pread(r.fd_, header.data(), n, 8) != static_cast<ssize_t>(n)) return Status::InvalidArgument(path + ": header truncated");
  const off_t file_size = lseek(r.fd_, 0, SEEK_END);
  auto j = nlohmann::json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument(path + ": header is not a JSON object");
  for (const auto& [name, t] : j.items()) {
    if (name == "__metadata__") continue;
    TensorInfo info;
    try {
      info.dtype = t.at("dtype").get<std::string>();
      info.shape = t.at("shape").get<std::vector<uint64_t>>();
      const auto off = t.at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2 || off[1] < off[0]) throw std::invalid_argument("data_offsets");
      info.begin = 8 + n + off[0];
      info.end = 8 + n + off[1];
    } catch (const std::exception& e) {
      return Status::InvalidArgument(path + ": tensor '" + name + "' has a malformed entry (" + e.what() + ")");
    }
    uint64_t elems = 1;
    for (uint64_t d : info.shape) elems *= d;
    if (elems * info.element_size() != info.end - info.begin || info.end > static_cast<uint64_t>(file_size)) {
      return Status::InvalidArgument(path + ": tensor '" + name + "' data does not match its shape or the file size");
    }
    r.tensors_[name] = info;
  }
  return r;
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& o) noexcept
    : fd_(o.fd_), path_(std::move(o.path_)), tensors_(std::move(o.tensors_)) {
  o.fd_ = -1;
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<TensorInfo> SafetensorsReader::Tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  std::string have;
  for (const auto& [n, t] : tensors_) have += (have.empty() ? "" : ", ") + n;
  return Status::NotFound(path_ + " has no tensor '" + name + "' (it has: " + have + ")");
}

Status SafetensorsReader::Read(uint64_t offset, size_t bytes, uint8_t* out) const {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t got = pread(fd_, out + done, bytes - done, static_cast<off_t>(offset + done));
    if (got < 0) return Errno("read " + path_);
    if (got == 0) return Status::DataLoss(path_ + ": unexpected end of file");
    done += static_cast<size_t>(got);
  }
  return Status::OK();
}

StatusOr<SafetensorsWriter> SafetensorsWriter::Create(const std::string& path, const std::vector<Spec>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t at = 0;
  std::vector<uint64_t> rel;
  for (const auto& t : tensors) {
    uint64_t bytes = t.element_size;
    for (uint64_t d : t.shape) bytes *= d;
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
    rel.push_back(at);
    at += bytes;
  }
  h["__metadata__"] = {{"format", "pt"}, {"producer", "engramctl export"}};
  std::string header = h.dump();
  header.resize((header.size() + 7) / 8 * 8, ' ');  // Keep tensor data 8-aligned.
  SafetensorsWriter w;
  w.path_ = path;
  w.fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w.fd_ < 0) return Errno("create " + path);
  const uint64_t n = header.size();
  ENGRAM_RETURN_IF_ERROR(w.Write(0, reinterpret_cast<const uint8_t*>(&n), 8));
  ENGRAM_RETURN_IF_ERROR(w.Write(8, reinterpret_cast<const uint8_t*>(header.data()), header.size()));
  for (uint64_t r : rel) w.offsets_.push_back(8 + n + r);
  if (ftruncate(w.fd_, static_cast<off_t>(8 + n + at)) != 0) return Errno("size " + path);
  return w;
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& o) noexcept
    : fd_(o.fd_), path_(std::move(o.path_)), offsets_(std::move(o.offsets_)) {
  o.fd_ = -1;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status SafetensorsWriter::Write(uint64_t offset, const uint8_t* data, size_t bytes) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t put = pwrite(fd_, data + done, bytes - done, static_cast<off_t>(offset + done));
    if (put < 0) return Errno("write " + path_);
    done += static_cast<size_t>(put);
  }
  return Status::OK();
}

Status SafetensorsWriter::Close() {
  if (fd_ >= 0 && ::fsync(fd_) != 0) return Errno("fsync " + path_);
  if (fd_ >= 0 && ::close(fd_) != 0) return Errno("close " + path_);
  fd_ = -1;
  return Status::OK();
}

}  // namespace engram::ctl
