// Memory for row arenas: an RAII region and the allocator hook that provides it.
//
// The hook exists because the transport must sometimes own the allocation: UCX can export over
// shared memory only memory it allocated itself (ucp_mem_map with UCP_MEM_MAP_ALLOCATE). The
// default allocator maps anonymous, lazily committed memory: pages cost nothing until a row on
// them is first written.
#ifndef ENGRAM_STORAGE_MEMORY_H_
#define ENGRAM_STORAGE_MEMORY_H_

#include <cstddef>
#include <functional>
#include <memory>

#include "engram/status.h"

namespace engram::storage {

// An owned, zero-filled memory region. Move-only; releases the memory on destruction.
class MemoryRegion {
 public:
  using Releaser = std::function<void(void* data, size_t size)>;
  MemoryRegion() = default;
  // `exposed`: other processes may read the region one-sidedly (a transport registered it).
  MemoryRegion(void* data, size_t size, bool huge_pages, Releaser release, bool exposed = false)
      : data_(data), size_(size), huge_pages_(huge_pages), exposed_(exposed), release_(std::move(release)) {}
  MemoryRegion(MemoryRegion&& o) noexcept { *this = std::move(o); }
  MemoryRegion& operator=(MemoryRegion&& o) noexcept;
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  ~MemoryRegion() { Reset(); }

  void* data() const { return data_; }
  size_t size() const { return size_; }
  // True when the region is backed (or advised to be backed) by huge pages.
  bool huge_pages() const { return huge_pages_; }
  bool exposed() const { return exposed_; }

 private:
  void Reset();
  void* data_ = nullptr;
  size_t size_ = 0;
  bool huge_pages_ = false;
  bool exposed_ = false;
  Releaser release_;
};

enum class HugePages : uint8_t {
  kNever = 0,        // Plain 4 KiB pages.
  kTransparent = 1,  // madvise(MADV_HUGEPAGE) when the kernel offers transparent huge pages.
  kRequired = 2,     // MAP_HUGETLB from the reserved pool; allocation fails if none are free.
};

// Provides arena memory. Implementations must return zero-filled memory aligned to at least
// 64 bytes. Thread-safe: may be called from any thread.
class ArenaAllocator {
 public:
  virtual ~ArenaAllocator() = default;
  virtual StatusOr<MemoryRegion> Allocate(size_t bytes, HugePages huge_pages) = 0;
};

// Anonymous mmap(MAP_NORESERVE): virtual space only until pages are touched.
class MmapAllocator final : public ArenaAllocator {
 public:
  StatusOr<MemoryRegion> Allocate(size_t bytes, HugePages huge_pages) override;
};

// The process-wide default allocator (stateless, so sharing it hides no state).
ArenaAllocator* DefaultArenaAllocator();

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_MEMORY_H_
