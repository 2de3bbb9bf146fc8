// EngramSpec parsing and validation.
#include "client/engram_spec.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace engram::client {
namespace {

using Json = nlohmann::json;

Status Field(const Json& j, const char* key, bool required, auto* out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return required ? Status::InvalidArgument(std::string("spec: missing field '") + key + "'") : Status::OK();
  }
  try {
    *out = it->template get<std::remove_pointer_t<decltype(out)>>();
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("spec: field '") + key + "' has the wrong type (" + e.what() + ")");
  }
  return Status::OK();
}

}  // namespace

Status EngramSpec::Validate() const {
  auto bad = [](const std::string& m) { return Status::InvalidArgument("spec: " + m); };
  if (max_ngram_size < 2 || max_ngram_size > 16) return bad("max_ngram_size must be in [2, 16]");
  if (engram_vocab_size.size() != static_cast<size_t>(max_ngram_size - 1)) {
    return bad("engram_vocab_size needs max_ngram_size - 1 = " + std::to_string(max_ngram_size - 1) +
               " entries (orders 2.." + std::to_string(max_ngram_size) + "), got " +
               std::to_string(engram_vocab_size.size()));
  }
  for (int64_t v : engram_vocab_size) {
    if (v < 2 || v > (int64_t{1} << 40)) return bad("engram_vocab_size entries must be in [2, 2^40]");
  }
  if (n_head_per_ngram < 1 || n_head_per_ngram > 1024) return bad("n_head_per_ngram must be in [1, 1024]");
  if (n_embed_per_ngram < 1 || n_embed_per_ngram % n_head_per_ngram != 0) {
    return bad("n_embed_per_ngram must be a positive multiple of n_head_per_ngram");
  }
  if (layer_ids.empty()) return bad("layer_ids must not be empty");
  std::set<int64_t> seen(layer_ids.begin(), layer_ids.end());
  if (seen.size() != layer_ids.size()) return bad("layer_ids must be distinct");
  for (int64_t l : layer_ids) {
    if (l < 0 || l > 100000) return bad("layer_ids must be in [0, 100000]");
  }
  if (seed > (uint64_t{1} << 62)) return bad("seed must be in [0, 2^62]");
  if (compressed_vocab_size < 1) return bad("compressed_vocab_size (V) must be >= 1");
  if (!compression.empty()) {
    for (size_t i = 0; i < compression.size(); ++i) {
      if (compression[i] < 0 || compression[i] >= compressed_vocab_size) {
        return bad("compression[" + std::to_string(i) + "] = " + std::to_string(compression[i]) +
                   " is outside [0, compressed_vocab_size)");
      }
    }
    if (pad_id < 0 || static_cast<size_t>(pad_id) >= compression.size()) {
      return bad("pad_id must index the compression map");
    }
  }
  for (const auto& [layer, m] : multipliers) {
    if (!seen.contains(layer)) return bad("multipliers given for layer " + std::to_string(layer) + " not in layer_ids");
    if (m.size() != static_cast<size_t>(max_ngram_size)) {
      return bad("multipliers of layer " + std::to_string(layer) + " need max_ngram_size entries");
    }
  }
  return Status::OK();
}

StatusOr<EngramSpec> EngramSpec::FromJson(std::string_view text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("spec: not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("spec: expected a JSON object");
  EngramSpec s;
  ENGRAM_RETURN_IF_ERROR(Field(j, "engram_vocab_size", true, &s.engram_vocab_size));
  ENGRAM_RETURN_IF_ERROR(Field(j, "max_ngram_size", true, &s.max_ngram_size));
  ENGRAM_RETURN_IF_ERROR(Field(j, "n_embed_per_ngram", true, &s.n_embed_per_ngram));
  ENGRAM_RETURN_IF_ERROR(Field(j, "n_head_per_ngram", true, &s.n_head_per_ngram));
  ENGRAM_RETURN_IF_ERROR(Field(j, "layer_ids", true, &s.layer_ids));
  ENGRAM_RETURN_IF_ERROR(Field(j, "pad_id", true, &s.pad_id));
  ENGRAM_RETURN_IF_ERROR(Field(j, "compressed_vocab_size", true, &s.compressed_vocab_size));
  ENGRAM_RETURN_IF_ERROR(Field(j, "compression", false, &s.compression));
  int64_t seed = 0;
  ENGRAM_RETURN_IF_ERROR(Field(j, "seed", false, &seed));
  if (seed < 0) return Status::InvalidArgument("spec: seed must be >= 0");
  s.seed = static_cast<uint64_t>(seed);
  std::map<std::string, std::vector<int64_t>> mult;
  ENGRAM_RETURN_IF_ERROR(Field(j, "multipliers", false, &mult));
  for (const auto& [key, v] : mult) {
    try {
      size_t used = 0;
      const int64_t layer = std::stoll(key, &used);
      if (used != key.size()) throw std::invalid_argument(key);
      s.multipliers[layer] = v;
    } catch (const std::exception&) {
      return Status::InvalidArgument("spec: multipliers key '" + key + "' is not a layer id");
    }
  }
  ENGRAM_RETURN_IF_ERROR(s.Validate());
  return s;
}

StatusOr<EngramSpec> EngramSpec::FromFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::NotFound("spec: cannot open '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  auto spec = FromJson(ss.str());
  if (!spec.ok()) return spec.status().WithContext(path);
  return spec;
}

}  // namespace engram::client
