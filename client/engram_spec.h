// EngramSpec: the Engram module configuration, with the reference demo's field names.
#ifndef ENGRAM_CLIENT_ENGRAM_SPEC_H_
#define ENGRAM_CLIENT_ENGRAM_SPEC_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engram/status.h"

namespace engram::client {

struct EngramSpec {
  // Target rows per head, one entry per n-gram order 2..max_ngram_size.
  std::vector<int64_t> engram_vocab_size;
  int max_ngram_size = 3;
  int n_embed_per_ngram = 512;
  int n_head_per_ngram = 8;
  std::vector<int64_t> layer_ids;  // Transformer layers with an Engram module.
  int64_t pad_id = 2;              // Original (uncompressed) token id used left of the start.
  uint64_t seed = 0;
  int64_t compressed_vocab_size = 0;  // V: number of compressed ids.
  // Optional: original id -> compressed id. Empty: token ids are already compressed.
  std::vector<int64_t> compression;
  // Optional: explicit multipliers per layer (max_ngram_size each), replacing numpy's draw.
  std::map<int64_t, std::vector<int64_t>> multipliers;

  // Row dim of one head: n_embed_per_ngram / n_head_per_ngram.
  int head_dim() const { return n_embed_per_ngram / n_head_per_ngram; }
  // Lookups per token per layer: (max_ngram_size - 1) * n_head_per_ngram.
  int lookups_per_token() const { return (max_ngram_size - 1) * n_head_per_ngram; }

  // Checks that the spec describes a possible configuration; the message names the field.
  Status Validate() const;

  // Parses a JSON object (unknown keys are ignored, e.g. the reference's tokenizer path).
  static StatusOr<EngramSpec> FromJson(std::string_view json);
  static StatusOr<EngramSpec> FromFile(const std::string& path);
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_ENGRAM_SPEC_H_
