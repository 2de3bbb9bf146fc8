// engramctl hash: token ids -> global Engram row ids per layer, as JSON.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/engram_hash.h"
#include "cluster/engramctl/commands.h"

namespace engram::ctl {
namespace {

using Json = nlohmann::json;

int Fail(const std::string& msg) {
  std::cerr << "engramctl hash: " << msg << "\n";
  return 1;
}

// Reads a [B][T] JSON array of integer token ids.
Status ReadTokens(const std::string& path, std::vector<int64_t>* ids, size_t* batch, size_t* seq) {
  std::ifstream f(path);
  if (!f) return Status::NotFound("cannot open tokens file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  const Json j = Json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(path + ": not valid JSON");
  if (!j.is_array() || j.empty()) return Status::InvalidArgument(path + ": expected a non-empty [B][T] array");
  *batch = j.size();
  *seq = 0;
  for (size_t b = 0; b < j.size(); ++b) {
    const Json& row = j[b];
    if (!row.is_array()) return Status::InvalidArgument(path + ": row " + std::to_string(b) + " is not an array");
    if (b == 0) *seq = row.size();
    if (row.size() != *seq) {
      return Status::InvalidArgument(path + ": row " + std::to_string(b) + " has " + std::to_string(row.size()) +
                                     " tokens, row 0 has " + std::to_string(*seq) + " (rows must be equal)");
    }
    for (size_t t = 0; t < row.size(); ++t) {
      if (!row[t].is_number_integer()) {
        return Status::InvalidArgument(path + ": token [" + std::to_string(b) + "][" + std::to_string(t) +
                                       "] is not an integer");
      }
      ids->push_back(row[t].get<int64_t>());
    }
  }
  if (*seq == 0) return Status::InvalidArgument(path + ": sequences are empty");
  return Status::OK();
}

}  // namespace

int RunHash(const std::string& spec_path, const std::string& tokens_path) {
  if (spec_path.empty() || tokens_path.empty()) return Fail("--spec and --tokens are required");
  auto spec = client::EngramSpec::FromFile(spec_path);
  if (!spec.ok()) return Fail(spec.status().ToString());
  auto hasher = client::EngramHasher::Create(*spec);
  if (!hasher.ok()) return Fail(hasher.status().ToString());
  std::vector<int64_t> ids;
  size_t batch = 0, seq = 0;
  if (Status s = ReadTokens(tokens_path, &ids, &batch, &seq); !s.ok()) return Fail(s.ToString());

  const size_t k = static_cast<size_t>(hasher->lookups_per_token());
  std::vector<uint64_t> rows(batch * seq * k);
  Json out = Json::object();
  for (int64_t layer : spec->layer_ids) {
    if (Status s = hasher->Hash(layer, ids, batch, seq, {}, rows.data()); !s.ok()) return Fail(s.ToString());
    Json lj = Json::array();
    for (size_t b = 0; b < batch; ++b) {
      Json bj = Json::array();
      for (size_t t = 0; t < seq; ++t) {
        const uint64_t* r = rows.data() + (b * seq + t) * k;
        bj.push_back(std::vector<uint64_t>(r, r + k));
      }
      lj.push_back(std::move(bj));
    }
    out[std::to_string(layer)] = std::move(lj);
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace engram::ctl
