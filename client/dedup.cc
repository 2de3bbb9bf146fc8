// Sort-based de-duplication with an inverse index, and segment sums.
#include "client/dedup.h"

#include <algorithm>
#include <cstring>

namespace engram::client {

void Deduplicate(std::span<const uint64_t> ids, std::vector<uint64_t>* unique, std::vector<uint32_t>* inverse,
                 DedupScratch* scratch) {
  DedupScratch local;
  DedupScratch& s = scratch ? *scratch : local;
  unique->clear();
  inverse->resize(ids.size());
  // Already sorted and distinct (e.g. rows that were de-duplicated before): nothing to sort.
  if (std::adjacent_find(ids.begin(), ids.end(), [](uint64_t a, uint64_t b) { return a >= b; }) == ids.end()) {
    unique->assign(ids.begin(), ids.end());
    for (size_t i = 0; i < ids.size(); ++i) (*inverse)[i] = static_cast<uint32_t>(i);
    return;
  }
  // Sort (id, position) pairs by id: equal ids become adjacent, each run is one unique row.
  s.keyed.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) s.keyed[i] = {ids[i], static_cast<uint32_t>(i)};
  std::sort(s.keyed.begin(), s.keyed.end(), [](const DedupScratch::Keyed& a, const DedupScratch::Keyed& b) {
    return a.id < b.id;
  });
  for (const auto& k : s.keyed) {
    if (unique->empty() || unique->back() != k.id) unique->push_back(k.id);
    (*inverse)[k.pos] = static_cast<uint32_t>(unique->size() - 1);
  }
}

void SumByInverse(std::span<const uint32_t> inverse, size_t num_unique, uint32_t dim, const float* grads,
                  float* out) {
  std::memset(out, 0, sizeof(float) * num_unique * dim);
  for (size_t i = 0; i < inverse.size(); ++i) {
    float* o = out + size_t{inverse[i]} * dim;
    const float* g = grads + i * dim;
    for (uint32_t c = 0; c < dim; ++c) o[c] += g[c];
  }
}

}  // namespace engram::client
