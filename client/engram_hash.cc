// EngramHasher: multipliers, distinct-prime head sizes and the n-gram hash.
#include "client/engram_hash.h"

#include <limits>
#include <set>
#include <string>

#include "client/numpy_random.h"
#include "client/primes.h"

namespace engram::client {
namespace {

constexpr int64_t kLayerSeedPrime = 10007;  // The reference's PRIME_1.

std::vector<int64_t> DrawMultipliers(const EngramSpec& spec, int64_t layer) {
  const int64_t m_max = std::numeric_limits<int64_t>::max() / spec.compressed_vocab_size;
  const int64_t half = std::max<int64_t>(1, m_max / 2);
  Pcg64 rng(spec.seed + static_cast<uint64_t>(kLayerSeedPrime * layer));
  std::vector<int64_t> m(spec.max_ngram_size);
  for (auto& v : m) {
    // 2 * r + 1 in int64 with numpy's wrapping (r < 2^62, so it never wraps in practice).
    v = static_cast<int64_t>(2 * static_cast<uint64_t>(rng.IntegersInt64(0, half)) + 1);
  }
  return m;
}

}  // namespace

StatusOr<EngramHasher> EngramHasher::Create(const EngramSpec& spec) {
  ENGRAM_RETURN_IF_ERROR(spec.Validate());
  EngramHasher h;
  h.spec_ = spec;
  h.pad_ = spec.compression.empty() ? spec.pad_id : spec.compression[spec.pad_id];
  std::set<uint64_t> taken;
  for (int64_t id : spec.layer_ids) {
    LayerTable layer;
    layer.id = id;
    auto it = spec.multipliers.find(id);
    layer.multipliers = it != spec.multipliers.end() ? it->second : DrawMultipliers(spec, id);
    for (int n = 2; n <= spec.max_ngram_size; ++n) {
      uint64_t start = static_cast<uint64_t>(spec.engram_vocab_size[n - 2] - 1);
      for (int j = 0; j < spec.n_head_per_ngram; ++j) {
        const uint64_t p = NextUnusedPrime(start, taken);
        taken.insert(p);
        layer.offsets.push_back(layer.table_rows);
        layer.head_sizes.push_back(p);
        layer.mods.emplace_back(p);
        layer.table_rows += p;
        start = p;
      }
    }
    h.layers_.push_back(std::move(layer));
  }
  return h;
}

const EngramHasher::LayerTable* EngramHasher::layer(int64_t id) const {
  for (const auto& l : layers_) {
    if (l.id == id) return &l;
  }
  return nullptr;
}

Status EngramHasher::Compress(int64_t id, int64_t* out) const {
  if (spec_.compression.empty() || id < 0) {
    *out = id;
    return Status::OK();
  }
  if (static_cast<uint64_t>(id) >= spec_.compression.size()) {
    return Status::InvalidArgument("token id " + std::to_string(id) + " is outside the compression map of " +
                                   std::to_string(spec_.compression.size()) + " ids");
  }
  *out = spec_.compression[id];
  return Status::OK();
}

Status EngramHasher::Hash(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq,
                          std::span<const int64_t> left_context, uint64_t* out,
                          HashScratch* scratch) const {
  const LayerTable* lt = this->layer(layer);
  if (lt == nullptr) return Status::InvalidArgument("layer " + std::to_string(layer) + " has no Engram module");
  if (tokens.size() != batch * seq) {
    return Status::InvalidArgument("tokens hold " + std::to_string(tokens.size()) + " ids, expected batch*seq = " +
                                   std::to_string(batch * seq));
  }
  const size_t ctx = static_cast<size_t>(spec_.max_ngram_size - 1);
  if (!left_context.empty() && left_context.size() != batch * ctx) {
    return Status::InvalidArgument("left_context must hold batch * (max_ngram_size - 1) = " +
                                   std::to_string(batch * ctx) + " ids");
  }
  const LayerTable& L = *lt;
  HashScratch local;
  HashScratch& s = scratch ? *scratch : local;
  // Each sequence, compressed, with ctx positions of left context (or pad) in front.
  const size_t width = seq + ctx;
  s.padded.resize(batch * width);
  for (size_t b = 0; b < batch; ++b) {
    int64_t* row = s.padded.data() + b * width;
    for (size_t k = 0; k < ctx; ++k) {
      if (left_context.empty()) {
        row[k] = pad_;
      } else {
        ENGRAM_RETURN_IF_ERROR(Compress(left_context[b * ctx + k], &row[k]).WithContext("left_context"));
      }
    }
    for (size_t t = 0; t < seq; ++t) ENGRAM_RETURN_IF_ERROR(Compress(tokens[b * seq + t], &row[ctx + t]));
  }

  const int max_n = spec_.max_ngram_size;
  const int heads = spec_.n_head_per_ngram;
  const size_t k_out = static_cast<size_t>(lookups_per_token());
  const uint64_t* m = reinterpret_cast<const uint64_t*>(L.multipliers.data());
  for (size_t b = 0; b < batch; ++b) {
    const int64_t* row = s.padded.data() + b * width + ctx;  // row[t - k] is token k back.
    for (size_t t = 0; t < seq; ++t) {
      uint64_t* o = out + (b * seq + t) * k_out;
      // int64 products wrap exactly like numpy's; the mix is built order by order.
      uint64_t mix = static_cast<uint64_t>(row[t]) * m[0];
      const FastMod64* mod = L.mods.data();
      const uint64_t* off = L.offsets.data();
      for (int n = 2; n <= max_n; ++n) {
        mix ^= static_cast<uint64_t>(row[static_cast<ptrdiff_t>(t) - (n - 1)]) * m[n - 1];
        const int64_t smix = static_cast<int64_t>(mix);
        for (int j = 0; j < heads; ++j) *o++ = mod[j].FloorMod(smix) + off[j];
        mod += heads;
        off += heads;
      }
    }
  }
  return Status::OK();
}

}  // namespace engram::client
