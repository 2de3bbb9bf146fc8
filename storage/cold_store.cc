// ColdStore: rows beyond the DRAM budget in RocksDB.
#include "storage/cold_store.h"

#include <cstring>
#include <filesystem>
#include <system_error>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>

namespace engram::storage {
namespace {

void EncodeKey(uint64_t row, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(row >> (56 - 8 * i));
}

uint64_t DecodeKey(const rocksdb::Slice& k) {
  uint64_t row = 0;
  for (int i = 0; i < 8; ++i) row = (row << 8) | static_cast<uint8_t>(k.data()[i]);
  return row;
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  return Status::IoError("cold tier: " + what + ": " + s.ToString());
}

}  // namespace

StatusOr<std::unique_ptr<ColdStore>> ColdStore::Open(const std::string& dir, size_t value_bytes, size_t state_bytes,
                                                     const ColdStoreOptions& options) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);  // The log and checkpoints refill it (see the header).
  if (ec) return Status::IoError("cold tier: cannot clear " + dir + ": " + ec.message());
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cold tier: cannot create " + dir + ": " + ec.message());
  std::unique_ptr<ColdStore> store(new ColdStore(dir, value_bytes, state_bytes));
  rocksdb::Options o;
  o.create_if_missing = true;
  o.error_if_exists = true;
  o.compression = rocksdb::kNoCompression;  // Trained embeddings do not compress; reads stay cheap.
  o.max_background_jobs = 2;
  rocksdb::BlockBasedTableOptions t;
  store->block_cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);
  t.block_cache = store->block_cache_;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));  // Misses (untouched rows) skip the data blocks.
  t.whole_key_filtering = true;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  rocksdb::DB* db = nullptr;
  ENGRAM_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(o, dir, &db), "open " + dir));
  store->db_.reset(db);
  return store;
}

ColdStore::ColdStore(std::string dir, size_t vb, size_t sb) : dir_(std::move(dir)), value_bytes_(vb), state_bytes_(sb) {}

ColdStore::~ColdStore() {
  if (db_) (void)db_->Close();
  db_.reset();
  if (remove_on_close_) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

StatusOr<uint64_t> ColdStore::Get(uint64_t row, uint8_t* value_out, uint8_t* state_out) const {
  char key[8];
  EncodeKey(row, key);
  rocksdb::PinnableSlice v;
  reads_.fetch_add(1, std::memory_order_relaxed);
  const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), rocksdb::Slice(key, 8), &v);
  if (s.IsNotFound()) return uint64_t{0};
  ENGRAM_RETURN_IF_ERROR(FromRocks(s, "get row " + std::to_string(row)));
  if (v.size() != 8 + value_bytes_ + state_bytes_) {
    return Status::DataLoss("cold tier: row " + std::to_string(row) + " has " + std::to_string(v.size()) + " bytes");
  }
  uint64_t version = 0;
  std::memcpy(&version, v.data(), 8);
  std::memcpy(value_out, v.data() + 8, value_bytes_);
  if (state_bytes_ > 0) std::memcpy(state_out, v.data() + 8 + value_bytes_, state_bytes_);
  return version;
}

Status ColdStore::MultiGet(std::span<const uint64_t> rows, uint64_t* versions_out, uint8_t* values_out,
                           uint8_t* states_out) const {
  const size_t n = rows.size();
  if (n == 0) return Status::OK();
  std::vector<char> keys(8 * n);
  std::vector<rocksdb::Slice> slices(n);
  for (size_t i = 0; i < n; ++i) {
    EncodeKey(rows[i], keys.data() + 8 * i);
    slices[i] = rocksdb::Slice(keys.data() + 8 * i, 8);
  }
  std::vector<rocksdb::PinnableSlice> vals(n);
  std::vector<rocksdb::Status> st(n);
  reads_.fetch_add(n, std::memory_order_relaxed);
  db_->MultiGet(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), n, slices.data(), vals.data(), st.data());
  for (size_t i = 0; i < n; ++i) {
    if (st[i].IsNotFound()) {
      versions_out[i] = 0;
      continue;
    }
    ENGRAM_RETURN_IF_ERROR(FromRocks(st[i], "multiget row " + std::to_string(rows[i])));
    if (vals[i].size() != 8 + value_bytes_ + state_bytes_) {
      return Status::DataLoss("cold tier: row " + std::to_string(rows[i]) + " has " + std::to_string(vals[i].size()) +
                              " bytes");
    }
    std::memcpy(&versions_out[i], vals[i].data(), 8);
    std::memcpy(values_out + i * value_bytes_, vals[i].data() + 8, value_bytes_);
    if (states_out != nullptr && state_bytes_ > 0) {
      std::memcpy(states_out + i * state_bytes_, vals[i].data() + 8 + value_bytes_, state_bytes_);
    }
  }
  return Status::OK();
}

Status ColdStore::Put(uint64_t row, uint64_t version, const uint8_t* value, const uint8_t* state) {
  char key[8];
  EncodeKey(row, key);
  std::vector<char> v(8 + value_bytes_ + state_bytes_);
  std::memcpy(v.data(), &version, 8);
  std::memcpy(v.data() + 8, value, value_bytes_);
  if (state_bytes_ > 0) std::memcpy(v.data() + 8 + value_bytes_, state, state_bytes_);
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;  // The engram write-ahead log covers every row (see the header).
  puts_.fetch_add(1, std::memory_order_relaxed);
  return FromRocks(db_->Put(wo, rocksdb::Slice(key, 8), rocksdb::Slice(v.data(), v.size())),
                   "put row " + std::to_string(row));
}

Status ColdStore::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo), "flush");
}

Status ColdStore::ForEach(uint64_t first, uint64_t count,
                          const std::function<void(uint64_t, uint64_t, const uint8_t*, const uint8_t*)>& fn) const {
  char lo[8], hi[8];
  EncodeKey(first, lo);
  EncodeKey(first + count, hi);
  rocksdb::ReadOptions ro;
  const rocksdb::Slice upper(hi, 8);
  if (first + count != 0) ro.iterate_upper_bound = &upper;  // first + count wraps only at 2^64.
  ro.fill_cache = false;  // A full scan must not push the hot blocks out.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->Seek(rocksdb::Slice(lo, 8)); it->Valid(); it->Next()) {
    const rocksdb::Slice v = it->value();
    if (it->key().size() != 8 || v.size() != 8 + value_bytes_ + state_bytes_) {
      return Status::DataLoss("cold tier: a stored row has the wrong size");
    }
    uint64_t version = 0;
    std::memcpy(&version, v.data(), 8);
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    fn(DecodeKey(it->key()), version, p + 8, state_bytes_ > 0 ? p + 8 + value_bytes_ : nullptr);
  }
  return FromRocks(it->status(), "scan");
}

}  // namespace engram::storage
