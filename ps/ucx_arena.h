// UcxArenaAllocator: arena memory allocated and registered by UCX (ucp_mem_map with
// UCP_MEM_MAP_ALLOCATE), so peers can read rows one-sidedly: over shared memory on the same
// host (UCX exports only memory it allocated itself) or with RDMA where a NIC exists. Each
// region's packed rkey is kept for the handshake (Service's kRmaInfo).
//
// If UCX cannot allocate a region, the allocator falls back to plain mmap for it, logs that
// loudly and counts it (engram_rma_fallback_regions_total): that table is then served by RPC
// only. Thread-safe.
#ifndef ENGRAM_PS_UCX_ARENA_H_
#define ENGRAM_PS_UCX_ARENA_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

#include "storage/memory.h"

namespace engram::ps {

class UcxArenaAllocator final : public storage::ArenaAllocator {
 public:
  // REQUIRES: `context` outlives this allocator and every region it returned.
  // At most `max_total_bytes` of arenas are registered at a time; arenas beyond that budget get
  // plain lazily committed memory (RPC only). Registered arenas are shared memory and are
  // committed (zeroed) when created, so the budget bounds that cost.
  UcxArenaAllocator(ucp_context_h context, size_t max_total_bytes)
      : context_(context), max_total_bytes_(max_total_bytes) {}

  StatusOr<storage::MemoryRegion> Allocate(size_t bytes, storage::HugePages huge_pages) override;

  // The packed rkey of the region starting at `base`; empty if it is not UCX-registered.
  std::vector<uint8_t> Rkey(const void* base) const;
  uint64_t fallback_regions() const { return fallbacks_.load(); }

 private:
  struct Registered {
    ucp_mem_h memh;
    std::vector<uint8_t> rkey;
  };
  void Release(void* base, size_t bytes);

  ucp_context_h context_;
  const size_t max_total_bytes_;
  size_t registered_bytes_ = 0;  // GUARDED_BY(mu_)
  mutable std::mutex mu_;
  std::map<const void*, Registered> regions_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> fallbacks_{0};
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_UCX_ARENA_H_
