// De-duplication of row ids with an inverse index: the step between hashing and pulling (pull
// each unique row once) and between backward and pushing (sum gradients per unique row).
#ifndef ENGRAM_CLIENT_DEDUP_H_
#define ENGRAM_CLIENT_DEDUP_H_

#include <cstdint>
#include <span>
#include <vector>

namespace engram::client {

// Reusable buffers, so a steady stream of batches allocates nothing. One per thread.
struct DedupScratch {
  struct Keyed {
    uint64_t id;
    uint32_t pos;
  };
  std::vector<Keyed> keyed;  // (id, position), sorted by id: a direct-key sort, no indirection.
};

// unique := the sorted distinct ids; inverse[i] := index of ids[i] in unique.
// REQUIRES: ids.size() < 2^32. Thread-safe with distinct outputs and scratch.
void Deduplicate(std::span<const uint64_t> ids, std::vector<uint64_t>* unique, std::vector<uint32_t>* inverse,
                 DedupScratch* scratch = nullptr);

// out[u] := sum of grads[i] over i with inverse[i] == u (in order of i). The segment-sum that
// turns per-lookup gradients into one gradient per unique row.
void SumByInverse(std::span<const uint32_t> inverse, size_t num_unique, uint32_t dim,
                  const float* grads /* (inverse.size(), dim) */, float* out /* (num_unique, dim) */);

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_DEDUP_H_
