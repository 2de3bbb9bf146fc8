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
  // Sort positions by id: equal ids become adjacent, and each run is one unique row.
  s.order.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) s.order[i] = i;
  std::sort(s.order.begin(), s.order.end(), [&](uint64_t a, uint64_t b) { return ids[a] < ids[b]; });
  for (size_t k = 0; k < s.order.size(); ++k) {
    const uint64_t pos = s.order[k];
    if (unique->empty() || unique->back() != ids[pos]) unique->push_back(ids[pos]);
    (*inverse)[pos] = static_cast<uint32_t>(unique->size() - 1);
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
