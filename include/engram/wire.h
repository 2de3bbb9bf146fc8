// The wire protocol between clients and engram-server: a fixed versioned header (sent as the
// UCX active-message header) and a payload of little-endian fields, every read bounds-checked.
//
// Requests go to AM id kAmRequest, replies come back on kAmReply with the request's id. A reply
// header's `status` is a Code; a non-OK reply's payload is the error message.
#ifndef ENGRAM_WIRE_H_
#define ENGRAM_WIRE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "engram/status.h"
#include "engram/table.h"

namespace engram::wire {

inline constexpr uint32_t kMagic = 0x454e4752;  // "ENGR"
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr unsigned kAmRequest = 17;
inline constexpr unsigned kAmReply = 18;
inline constexpr uint32_t kMaxPayload = 1u << 30;  // 1 GiB: larger frames are refused.

enum class MsgType : uint16_t {
  kHello = 1,
  kCreateTable = 2,
  kDropTable = 3,
  kListTables = 4,
  kDescribeTable = 5,
  kPull = 6,
  kPush = 7,
  kPut = 8,
  kStats = 9,
  kRmaInfo = 10,  // Table name -> the server's worker address and, per local shard, its arena's
                  // base address, slot stride, row range and packed rkey (one-sided reads).
  kCheckpoint = 11,  // [label] -> JSON of the checkpoint written (every table of the server).
  kRestore = 12,     // table, label -> JSON: the table rolled back to that checkpoint in place.
  kDropCheckpoint = 13,  // label -> JSON: the checkpoints with that label are no longer kept.
  // Live shard moves (cluster/shard_mover.h drives them; each takes table name, shard u32;
  // Prepare, Track, Freeze and Abort then the operation's id u64, nonzero: one operation at a
  // time per shard and node, see ps/table_registry.h):
  kShardPrepare = 14,  // -> (on the destination) an empty, unserved copy of the shard.
  kShardTrack = 15,    // -> (on the source) record the rows written to the shard from now on.
  kShardRead = 16,     // + cursor u64, max_rows u32, dirty u8 -> next cursor u64 + ShardImages.
  kShardWrite = 17,    // + ShardImages -> (destination) rows installed, logged.
  kShardFreeze = 18,   // -> (source) writes refused from now on; u64 rows written since tracking.
  kAdoptMap = 19,      // TableInfo [+ forwarded u8] -> the server installs that (newer) shard map
                       // (a map that gains it shards goes first to their old owners, flagged
                       // forwarded so that it goes no further).
  kShardAbort = 20,    // -> end the operation's state on this server (unfreeze, drop its copy).
  kNodes = 21,         // -> the cluster's live nodes: n u32, n x (node id u32, data address string).
  kShardPush = 22,     // + destination address string, cursor u64, max_rows u32, dirty u8 -> (on the
                       // source) kShardRead's images sent straight to the destination's
                       // kShardWrite; replies next cursor u64, images sent u32.
  kReplicate = 23,     // table, client u64, seq u64 (0, 0: a put), blocks u32, then per block:
                       // shard u32, kind u8 (1 gradients, 2 images), n u32, n x (row u64,
                       // version u64, dim f32 | value + state): a primary's applied write, for
                       // the backup node of those shards to apply in the same order.
  kPullAnyCopy = 24,   // As kPull, but served from this node's backup copy of a shard too (a
                       // client reading around a failed primary: a backup holds every
                       // acknowledged write).
  kShardAppliedRead = 25,   // -> (source, after its freeze) the push parts applied to the shard
                            // here: n u32, n x (client u64, seq u64).
  kShardAppliedWrite = 26,  // + operation id u64 + kShardAppliedRead's reply -> (destination) seals
                            // that operation's copy (complete: see ps/table_registry.h) and records
                            // the parts as applied to the shard, logged: the exactly-once table
                            // follows it.
};

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;
  uint64_t request_id = 0;
  uint32_t status = 0;       // Replies: a Code.
  uint32_t payload_len = 0;  // Must equal the AM data length.
  uint64_t epoch = 0;        // Shard-map epoch the sender routed with (0: not checked).
};
static_assert(sizeof(Header) == 32);

// Validates a received header against the bytes that came with it.
inline Status CheckHeader(const void* data, size_t len, size_t payload_len, Header* out) {
  if (len != sizeof(Header)) return Status::InvalidArgument("malformed frame: header of " + std::to_string(len) + " bytes");
  std::memcpy(out, data, sizeof(Header));
  if (out->magic != kMagic) return Status::InvalidArgument("malformed frame: bad magic");
  if (out->version != kProtocolVersion) {
    return Status::InvalidArgument("protocol version " + std::to_string(out->version) + " not supported (server speaks " +
                                   std::to_string(kProtocolVersion) + ")");
  }
  if (out->payload_len != payload_len) {
    return Status::InvalidArgument("malformed frame: header says " + std::to_string(out->payload_len) +
                                   " payload bytes, frame has " + std::to_string(payload_len));
  }
  return Status::OK();
}

// Appends little-endian fields. Arrays are aligned to 8 bytes within the payload.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* buf) : buf_(buf) {}
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const size_t at = buf_->size();
    buf_->resize(at + sizeof(T));
    std::memcpy(buf_->data() + at, &v, sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    const size_t at = buf_->size();
    buf_->resize(at + s.size());
    if (!s.empty()) std::memcpy(buf_->data() + at, s.data(), s.size());
  }
  void Align8() { buf_->resize((buf_->size() + 7) / 8 * 8); }
  // Reserves `bytes` (8-aligned) and returns where they start, for gathering straight in.
  // The pointer is valid only until the next call on this Writer (the buffer may move).
  uint8_t* Reserve(size_t bytes) {
    Align8();
    const size_t at = buf_->size();
    buf_->resize(at + bytes);
    return buf_->data() + at;
  }
  void PutBytes(const void* p, size_t n) {
    uint8_t* dst = Reserve(n);
    if (n > 0) std::memcpy(dst, p, n);
  }

 private:
  std::vector<uint8_t>* buf_;
};

// Reads fields written by Writer; every read checks the remaining length.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  Status Get(T* v) {
    if (n_ - off_ < sizeof(T)) return Short();
    std::memcpy(v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return Status::OK();
  }
  Status GetString(std::string* s, size_t max = 4096) {
    uint32_t len = 0;
    ENGRAM_RETURN_IF_ERROR(Get(&len));
    if (len > max) return Status::InvalidArgument("malformed frame: string of " + std::to_string(len) + " bytes");
    if (n_ - off_ < len) return Short();
    s->assign(reinterpret_cast<const char*>(p_ + off_), len);
    off_ += len;
    return Status::OK();
  }
  // Points at `bytes` 8-aligned bytes inside the payload (no copy).
  Status GetSpan(size_t bytes, const uint8_t** out) {
    off_ = std::min(n_, (off_ + 7) / 8 * 8);
    if (n_ - off_ < bytes) return Short();
    *out = p_ + off_;
    off_ += bytes;
    return Status::OK();
  }
  size_t remaining() const { return n_ - off_; }

 private:
  Status Short() const { return Status::InvalidArgument("malformed frame: payload too short"); }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

// One row entry of the write-ahead log, replica and shard-image formats: row u64, version u64,
// then `a_bytes` of `a` (a value at rest, or a summed f32 gradient) and, if `b_bytes` > 0,
// `b_bytes` of `b` (optimizer state), each 8-aligned.
inline void PutRowEntry(Writer& w, uint64_t row, uint64_t version, const void* a, size_t a_bytes, const void* b = nullptr,
                        size_t b_bytes = 0) {
  w.Put<uint64_t>(row);
  w.Put<uint64_t>(version);
  w.PutBytes(a, a_bytes);
  if (b_bytes > 0) w.PutBytes(b, b_bytes);
}
// Reads what PutRowEntry wrote; `*b` stays untouched when `b_bytes` is 0. Points into the
// payload (no copy).
inline Status GetRowEntry(Reader& r, uint64_t* row, uint64_t* version, const uint8_t** a, size_t a_bytes,
                          const uint8_t** b = nullptr, size_t b_bytes = 0) {
  ENGRAM_RETURN_IF_ERROR(r.Get(row));
  ENGRAM_RETURN_IF_ERROR(r.Get(version));
  ENGRAM_RETURN_IF_ERROR(r.GetSpan(a_bytes, a));
  if (b_bytes > 0) ENGRAM_RETURN_IF_ERROR(r.GetSpan(b_bytes, b));
  return Status::OK();
}

inline void PutSchema(Writer& w, const TableSchema& s) {
  w.PutString(s.name);
  w.Put<uint64_t>(s.num_rows);
  w.Put<uint32_t>(s.dim);
  w.Put<uint8_t>(static_cast<uint8_t>(s.dtype));
  w.Put<uint8_t>(static_cast<uint8_t>(s.optimizer.kind));
  w.Put<float>(s.optimizer.lr);
  w.Put<float>(s.optimizer.weight_decay);
  w.Put<float>(s.optimizer.beta1);
  w.Put<float>(s.optimizer.beta2);
  w.Put<float>(s.optimizer.eps);
  w.Put<float>(s.optimizer.initial_accumulator);
  w.Put<uint8_t>(static_cast<uint8_t>(s.init.kind));
  w.Put<float>(s.init.scale);
  w.Put<uint64_t>(s.init.seed);
  w.Put<uint64_t>(s.dram_bytes);
}

inline Status GetSchema(Reader& r, TableSchema* s) {
  uint8_t dtype = 0, opt = 0, init = 0;
  ENGRAM_RETURN_IF_ERROR(r.GetString(&s->name, 128));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->num_rows));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->dim));
  ENGRAM_RETURN_IF_ERROR(r.Get(&dtype));
  ENGRAM_RETURN_IF_ERROR(r.Get(&opt));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.lr));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.weight_decay));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.beta1));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.beta2));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.eps));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->optimizer.initial_accumulator));
  ENGRAM_RETURN_IF_ERROR(r.Get(&init));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->init.scale));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->init.seed));
  ENGRAM_RETURN_IF_ERROR(r.Get(&s->dram_bytes));
  if (dtype > static_cast<uint8_t>(DType::kBytes)) return Status::InvalidArgument("unknown dtype code " + std::to_string(dtype));
  if (opt > static_cast<uint8_t>(OptimizerKind::kAdam)) return Status::InvalidArgument("unknown optimizer code");
  if (init > static_cast<uint8_t>(InitKind::kUniform)) return Status::InvalidArgument("unknown init code");
  s->dtype = static_cast<DType>(dtype);
  s->optimizer.kind = static_cast<OptimizerKind>(opt);
  s->init.kind = static_cast<InitKind>(init);
  return Status::OK();
}

// A table as the cluster sees it: schema, shard placement, and (in replies) usage.
// ShardImages: n u32, value_bytes u32, state_bytes u32, then n x (row u64, version u64, value,
// state). Readers check n against the bytes that follow.

struct TableInfo {
  TableSchema schema;
  uint64_t epoch = 0;
  std::vector<uint32_t> owners;  // Node id per virtual shard (its primary).
  std::vector<uint32_t> backups;  // Per shard the node with its replica (UINT32_MAX: none); empty: none.
  uint32_t node_id = 0;          // The node that answered / is addressed.
  uint64_t touched_rows = 0;     // Replies only: rows materialised on that node.
  uint64_t bytes_per_row = 0;
};

inline void PutTableInfo(Writer& w, const TableInfo& t) {
  PutSchema(w, t.schema);
  w.Put<uint64_t>(t.epoch);
  w.Put<uint32_t>(static_cast<uint32_t>(t.owners.size()));
  for (uint32_t o : t.owners) w.Put<uint32_t>(o);
  w.Put<uint32_t>(t.node_id);
  w.Put<uint64_t>(t.touched_rows);
  w.Put<uint64_t>(t.bytes_per_row);
  w.Put<uint32_t>(static_cast<uint32_t>(t.backups.size()));
  for (uint32_t b : t.backups) w.Put<uint32_t>(b);
}

inline Status GetTableInfo(Reader& r, TableInfo* t) {
  ENGRAM_RETURN_IF_ERROR(GetSchema(r, &t->schema));
  uint32_t n = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&t->epoch));
  ENGRAM_RETURN_IF_ERROR(r.Get(&n));
  if (n == 0 || n > (1u << 20) || n > r.remaining() / 4) return Status::InvalidArgument("malformed frame: shard count");
  t->owners.resize(n);
  for (auto& o : t->owners) ENGRAM_RETURN_IF_ERROR(r.Get(&o));
  ENGRAM_RETURN_IF_ERROR(r.Get(&t->node_id));
  ENGRAM_RETURN_IF_ERROR(r.Get(&t->touched_rows));
  ENGRAM_RETURN_IF_ERROR(r.Get(&t->bytes_per_row));
  uint32_t nb = 0;
  ENGRAM_RETURN_IF_ERROR(r.Get(&nb));
  if (nb != 0 && nb != n) return Status::InvalidArgument("malformed frame: backup count");
  t->backups.resize(nb);
  for (auto& b : t->backups) ENGRAM_RETURN_IF_ERROR(r.Get(&b));
  return Status::OK();
}

}  // namespace engram::wire

#endif  // ENGRAM_WIRE_H_
