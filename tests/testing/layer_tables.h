// Creates the Engram layer tables "<prefix>_layer<L>" of a hasher's spec on a cluster: SGD with
// lr 1 on zero rows, so that after k pushes of all-ones gradients a row is exactly -k x its hits.
#ifndef ENGRAM_TESTS_TESTING_LAYER_TABLES_H_
#define ENGRAM_TESTS_TESTING_LAYER_TABLES_H_

#include <string>

#include "client/client.h"
#include "client/engram_hash.h"

namespace engram::testing {

inline Status CreateSgdLayerTables(client::Client& c, const client::EngramHasher& hasher, const std::string& prefix,
                                   uint32_t dim, uint32_t shards) {
  for (int64_t layer : hasher.spec().layer_ids) {
    TableSchema s;
    s.name = prefix + "_layer" + std::to_string(layer);
    s.num_rows = hasher.layer(layer)->table_rows;
    s.dim = dim;
    s.optimizer.kind = OptimizerKind::kSgd;
    s.optimizer.lr = 1.0f;
    s.init = {InitKind::kZeros, 0.0f, 0};
    ENGRAM_RETURN_IF_ERROR(c.CreateTable(s, shards));
  }
  return Status::OK();
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_LAYER_TABLES_H_
