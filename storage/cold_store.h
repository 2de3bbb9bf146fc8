// ColdStore: the rows of one table on one node that do not fit its DRAM budget, in RocksDB.
//
// Key: the global row id, 8 bytes big endian (a shard's rows are one contiguous key range).
// Value: the row's version (8 bytes little endian), its value at rest, its optimizer state.
// Only rows that were written are ever stored; a row absent here and absent from the DRAM cache
// has its initial value.
//
// The store is a cache of what the write-ahead log and checkpoints already hold, not a second
// source of truth: it is opened empty (any previous contents are wiped) and recovery refills it
// through the DRAM cache. So its own writes skip RocksDB's log, and a row evicted before its
// push reached the write-ahead log can never resurface after a crash.
//
// Thread-safety: all methods may be called concurrently.
#ifndef ENGRAM_STORAGE_COLD_STORE_H_
#define ENGRAM_STORAGE_COLD_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engram/status.h"

namespace rocksdb {
class DB;
class Cache;
}  // namespace rocksdb

namespace engram::storage {

struct ColdStoreOptions {
  // RocksDB's block cache for uncompressed data blocks. Part of the table's DRAM use, so small
  // by default: the row cache in front of it holds the hot rows.
  size_t block_cache_bytes = size_t{32} << 20;
};

// One row as the cold tier holds it.
struct ColdRow {
  uint64_t version = 0;  // 0: not stored (the row is untouched).
  std::vector<uint8_t> value, state;
};

class ColdStore {
 public:
  // Creates (wiping whatever was there) a store in directory `dir` for rows of `value_bytes`
  // plus `state_bytes` of optimizer state.
  static StatusOr<std::unique_ptr<ColdStore>> Open(const std::string& dir, size_t value_bytes,
                                                   size_t state_bytes, const ColdStoreOptions& options);
  ~ColdStore();
  ColdStore(const ColdStore&) = delete;
  ColdStore& operator=(const ColdStore&) = delete;

  // Removes the directory when the store closes (the table was dropped).
  void RemoveOnClose() { remove_on_close_ = true; }

  // Reads one row into value_out/state_out (state_out may be nullptr when state_bytes is 0).
  // Returns its version, 0 when the row is not stored (outputs untouched).
  StatusOr<uint64_t> Get(uint64_t row, uint8_t* value_out, uint8_t* state_out) const;
  // Reads many rows in one RocksDB MultiGet. versions_out[i] = 0 for rows not stored; values_out
  // (n, value_bytes) and states_out (n, state_bytes; may be nullptr) are filled for the rest.
  Status MultiGet(std::span<const uint64_t> rows, uint64_t* versions_out, uint8_t* values_out,
                  uint8_t* states_out) const;
  // Stores one row image. REQUIRES: version > 0.
  Status Put(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state);
  // Calls fn(row, version, value, state) for every stored row in [first, first + count), in row
  // order, from a consistent RocksDB snapshot taken at the call.
  Status ForEach(uint64_t first, uint64_t count,
                 const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn) const;

  // Moves what RocksDB holds in memory tables into sorted files (after a bulk load, so reads
  // take the files' bloom filters and block cache instead of searching large memtables).
  Status Flush();

  size_t value_bytes() const { return value_bytes_; }
  size_t state_bytes() const { return state_bytes_; }
  // Rows written to the store over its life (evictions and write-throughs).
  uint64_t puts() const { return puts_.load(std::memory_order_relaxed); }
  // Rows looked up (point gets and MultiGet keys).
  uint64_t reads() const { return reads_.load(std::memory_order_relaxed); }

 private:
  ColdStore(std::string dir, size_t vb, size_t sb);

  std::string dir_;
  size_t value_bytes_, state_bytes_;
  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::unique_ptr<rocksdb::DB> db_;
  bool remove_on_close_ = false;
  std::atomic<uint64_t> puts_{0};
  mutable std::atomic<uint64_t> reads_{0};
};

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_COLD_STORE_H_
