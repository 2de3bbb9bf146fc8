// EngramHasher: token ids -> global Engram row ids, bit-exact with the reference demo
// (../shared/engram.md, "Row addressing, exactly").
//
// For each layer in spec.layer_ids, the layer's table has table_rows(layer) rows: the heads'
// distinct-prime sub-tables laid end to end (orders outer, heads inner). Hash() writes, for each
// token position, lookups_per_token() row ids into that table.
//
// Thread-safety: immutable after Create(); Hash() may run concurrently from many threads (each
// with its own scratch).
#ifndef ENGRAM_CLIENT_ENGRAM_HASH_H_
#define ENGRAM_CLIENT_ENGRAM_HASH_H_

#include <cstdint>
#include <span>
#include <vector>

#include "client/engram_spec.h"
#include "engram/fast_mod.h"
#include "engram/status.h"

namespace engram::client {

// Reusable buffer for Hash(); one per thread.
struct HashScratch {
  std::vector<int64_t> padded;
};

class EngramHasher {
 public:
  static StatusOr<EngramHasher> Create(const EngramSpec& spec);

  // One Engram layer's table: its hash multipliers and the heads' sub-tables.
  struct LayerTable {
    int64_t id = 0;
    std::vector<int64_t> multipliers;  // m[0..max_ngram_size), numpy-drawn or overridden.
    std::vector<uint64_t> head_sizes;  // Primes, orders outer, heads inner.
    std::vector<uint64_t> offsets;     // First row of each head in the layer's table.
    std::vector<FastMod64> mods;       // One divider per head.
    uint64_t table_rows = 0;           // Sum of head_sizes.
  };

  const EngramSpec& spec() const { return spec_; }
  // The layer's table, or nullptr when `layer` has no Engram module.
  const LayerTable* layer(int64_t layer) const;
  int lookups_per_token() const { return spec_.lookups_per_token(); }
  // The compressed pad id.
  int64_t compressed_pad() const { return pad_; }

  // Hashes `tokens` (original ids, row-major [batch][seq]) for `layer` into
  // out[batch][seq][lookups_per_token()] global row ids of that layer's table.
  // `left_context`, if not empty, is [batch][max_ngram_size - 1]: the original ids of the tokens
  // just before each sequence (oldest first), so a chunk or a decode step hashes exactly as the
  // full sequence would; use pad_id where fewer tokens exist. Without it, pad fills the left.
  // Errors: InvalidArgument for an unknown layer, a shape mismatch, or an id the compression
  // map does not cover (negative ids pass through uncompressed, as in the reference).
  Status Hash(int64_t layer, std::span<const int64_t> tokens, size_t batch, size_t seq,
              std::span<const int64_t> left_context, uint64_t* out /* (batch, seq, lookups) */,
              HashScratch* scratch = nullptr) const;

 private:
  Status Compress(int64_t id, int64_t* out) const;

  EngramSpec spec_;
  int64_t pad_ = 0;
  std::vector<LayerTable> layers_;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_ENGRAM_HASH_H_
