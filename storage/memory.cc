// Anonymous-mmap arena memory with optional huge pages.
#include "storage/memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace engram::storage {

MemoryRegion& MemoryRegion::operator=(MemoryRegion&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = o.data_;
    size_ = o.size_;
    huge_pages_ = o.huge_pages_;
    exposed_ = o.exposed_;
    release_ = std::move(o.release_);
    o.data_ = nullptr;
    o.size_ = 0;
    o.release_ = nullptr;
  }
  return *this;
}

void MemoryRegion::Reset() {
  if (data_ != nullptr && release_) release_(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

namespace {

constexpr size_t kHugePageSize = size_t{2} << 20;

bool TransparentHugePagesAvailable() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(f, line)) return false;
  return line.find("[never]") == std::string::npos;
}

void Unmap(void* p, size_t n) { munmap(p, n); }

}  // namespace

StatusOr<MemoryRegion> MmapAllocator::Allocate(size_t bytes, HugePages huge_pages) {
  if (bytes == 0) return Status::InvalidArgument("cannot allocate an empty arena");
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  size_t len = bytes;
  if (huge_pages == HugePages::kRequired) {
    len = (bytes + kHugePageSize - 1) / kHugePageSize * kHugePageSize;
    flags |= MAP_HUGETLB;
  }
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    std::string msg = "mmap of " + std::to_string(len) + " bytes failed: " + std::strerror(err);
    if (huge_pages == HugePages::kRequired) msg += " (are enough huge pages reserved in vm.nr_hugepages?)";
    return err == ENOMEM ? Status::ResourceExhausted(msg) : Status::IoError(msg);
  }
  bool huge = huge_pages == HugePages::kRequired;
  if (huge_pages == HugePages::kTransparent && len >= kHugePageSize && TransparentHugePagesAvailable()) {
    huge = madvise(p, len, MADV_HUGEPAGE) == 0;
  }
  return MemoryRegion(p, len, huge, Unmap);
}

ArenaAllocator* DefaultArenaAllocator() {
  static MmapAllocator allocator;
  return &allocator;
}

}  // namespace engram::storage
