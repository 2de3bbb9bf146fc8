// UcxArenaAllocator: ucp_mem_map(ALLOCATE) regions with packed rkeys, mmap fallback.
#include "ps/ucx_arena.h"

#include <cstring>

#include <glog/logging.h>

namespace engram::ps {

StatusOr<storage::MemoryRegion> UcxArenaAllocator::Allocate(size_t bytes, storage::HugePages huge_pages) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (registered_bytes_ + bytes > max_total_bytes_) {
      LOG(INFO) << "arena of " << bytes << " bytes would exceed --rma_max_bytes=" << max_total_bytes_ << " ("
                << registered_bytes_ << " registered): plain lazily committed memory, served by RPC only";
      return storage::MmapAllocator().Allocate(bytes, huge_pages);
    }
    registered_bytes_ += bytes;  // Reserved now; returned below if registration fails.
  }
  ucp_mem_map_params_t p{};
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  p.address = nullptr;
  p.length = bytes;
  p.flags = UCP_MEM_MAP_ALLOCATE;
  ucp_mem_h memh = nullptr;
  ucs_status_t st = ucp_mem_map(context_, &p, &memh);
  void* base = nullptr;
  std::vector<uint8_t> rkey;
  if (st == UCS_OK) {
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
    st = ucp_mem_query(memh, &attr);
    base = attr.address;
    void* packed = nullptr;
    size_t packed_size = 0;
    if (st == UCS_OK) st = ucp_rkey_pack(context_, memh, &packed, &packed_size);
    if (st == UCS_OK) {
      rkey.assign(static_cast<uint8_t*>(packed), static_cast<uint8_t*>(packed) + packed_size);
      ucp_rkey_buffer_release(packed);
    }
    if (st == UCS_OK && reinterpret_cast<uintptr_t>(base) % 64 != 0) st = UCS_ERR_INVALID_ADDR;
    if (st != UCS_OK) ucp_mem_unmap(context_, memh);
  }
  if (st != UCS_OK) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      registered_bytes_ -= bytes;
    }
    fallbacks_++;
    LOG(WARNING) << "UCX could not allocate a registered arena of " << bytes << " bytes (" << ucs_status_string(st)
                 << "); falling back to plain memory: this table is served by RPC only, no one-sided reads";
    return storage::MmapAllocator().Allocate(bytes, huge_pages);
  }
  // Fresh shared-memory segments are zero, but UCX may also serve ALLOCATE from its heap
  // methods: zero explicitly. This commits the arena now (bounded by max_total_bytes_).
  std::memset(base, 0, bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    regions_[base] = Registered{memh, std::move(rkey)};
  }
  return storage::MemoryRegion(base, bytes, false, [this](void* b, size_t n) { Release(b, n); }, /*exposed=*/true);
}

void UcxArenaAllocator::Release(void* base, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(base);
  if (it == regions_.end()) return;
  registered_bytes_ -= bytes;
  ucp_mem_unmap(context_, it->second.memh);
  regions_.erase(it);
}

std::vector<uint8_t> UcxArenaAllocator::Rkey(const void* base) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(base);
  return it == regions_.end() ? std::vector<uint8_t>{} : it->second.rkey;
}

}  // namespace engram::ps
