// Client and TableHandle: routing, de-duplication, parallel per-server requests, retries.
#include "client/client.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <cstring>
#include <random>
#include <thread>

#include "client/dedup.h"
#include "engram/host_port.h"
#include "engram/init.h"
#include "engram/mix.h"
#include "engram/row_codec.h"
#include "engram/row_slot.h"

namespace engram::client {
namespace {

bool Transient(const Status& s) { return s.IsUnavailable() || s.code() == Code::kDeadlineExceeded; }

std::vector<uint8_t> NamePayload(const std::string& name) {
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  w.PutString(name);
  return p;
}

}  // namespace

StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  if (options.servers.empty() || std::all_of(options.servers.begin(), options.servers.end(), [](const std::string& s) { return s.empty(); })) {
    return Status::InvalidArgument("no servers given");
  }
  if (options.max_attempts < 1) return Status::InvalidArgument("max_attempts must be >= 1");
  auto c = std::unique_ptr<Client>(new Client(options));
  std::random_device rd;
  auto random64 = [&rd] { return (uint64_t{rd()} << 32) ^ rd(); };
  c->client_id_ = options.client_id;
  while (c->client_id_ == 0) c->client_id_ = random64();
  // A new session per Client: the id mixed with a random incarnation.
  const uint64_t incarnation = random64();
  c->push_session_ = std::max<uint64_t>(Mix64(c->client_id_ ^ (incarnation + 0x9e3779b97f4a7c15ull)), 1);
  if (options.servers.size() > kMaxServers) return Status::InvalidArgument("more than 1024 servers");
  ENGRAM_ASSIGN_OR_RETURN(c->transport_, Transport::Create(options.progress_thread));
  for (size_t i = 0; i < options.servers.size(); ++i) ENGRAM_RETURN_IF_ERROR(c->AddServer(i, options.servers[i]));
  return c;
}

Status Client::AddServer(size_t i, const std::string& address) {
  if (i >= kMaxServers) return Status::ResourceExhausted("more than 1024 servers");
  if (address.empty()) {  // A node id with no live daemon: a slot without an address, for now.
    servers_[i] = "node " + std::to_string(i);
    conns_[i] = transport_->ConnectNowhere(servers_[i], "no live daemon was registered for this node id when the client connected");
    num_servers_.store(i + 1, std::memory_order_release);
    return Status::OK();
  }
  auto hp = ParseHostPort(address, /*allow_port_zero=*/false);
  if (!hp.ok()) return hp.status().WithContext("server");
  ENGRAM_ASSIGN_OR_RETURN(int conn, transport_->Connect(hp->host, hp->port));
  servers_[i] = address;
  conns_[i] = conn;
  // Calls to node i work before it is published: Call only needs its connection.
  ENGRAM_RETURN_IF_ERROR(Hello(i).WithContext("connecting to " + address));
  num_servers_.store(i + 1, std::memory_order_release);
  return Status::OK();
}

Status Client::Hello(size_t i) {
  ENGRAM_ASSIGN_OR_RETURN(auto r, Call(static_cast<int>(i), wire::MsgType::kHello, 0, {}));
  wire::Reader rd(r.payload.data(), r.payload.size());
  uint16_t version = 0;
  uint32_t node = 0;
  ENGRAM_RETURN_IF_ERROR(rd.Get(&version));
  ENGRAM_RETURN_IF_ERROR(rd.Get(&node));
  if (node != i) {
    return Status::FailedPrecondition("server " + servers_[i] + " says it is node " + std::to_string(node) +
                                      ", but it is entry " + std::to_string(i) +
                                      " of the server list (start it with --node_id=" + std::to_string(i) + ")");
  }
  uint32_t addr_len = 0;
  const uint8_t* addr = nullptr;
  if (rd.Get(&addr_len).ok() && (addr_len == 0 || rd.GetSpan(addr_len, &addr).ok())) {
    if (addr_len > 0 && options_.rpc_over_shared_memory) {
      // Best effort: without shared-memory lanes (another host) requests stay on tcp.
      (void)transport_->EnableSharedMemoryRpc(conns_[i], std::vector<uint8_t>(addr, addr + addr_len));
    }
    uint32_t pid = 0;
    if (rd.Get(&pid).ok()) pids_[i].store(pid, std::memory_order_release);
  }
  return Status::OK();
}

Status Client::LearnNodes() {
  std::lock_guard<std::mutex> lock(add_mu_);
  ENGRAM_ASSIGN_OR_RETURN(auto r, CallAny(wire::MsgType::kNodes, {}, /*attempts=*/1));
  wire::Reader rd(r.payload.data(), r.payload.size());
  uint32_t n = 0;
  ENGRAM_RETURN_IF_ERROR(rd.Get(&n));
  std::map<uint32_t, std::string> nodes;
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t id = 0;
    std::string addr;
    ENGRAM_RETURN_IF_ERROR(rd.Get(&id));
    ENGRAM_RETURN_IF_ERROR(rd.GetString(&addr, 256));
    nodes[id] = addr;
  }
  // Node ids that had no daemon when this client connected, and have one now.
  for (size_t i = 0; i < num_servers(); ++i) {
    auto it = nodes.find(static_cast<uint32_t>(i));
    if (it == nodes.end() || transport_->has_address(conns_[i])) continue;
    auto hp = ParseHostPort(it->second, /*allow_port_zero=*/false);
    if (!hp.ok()) continue;
    ENGRAM_RETURN_IF_ERROR(transport_->Retarget(conns_[i], hp->host, hp->port));
    ENGRAM_RETURN_IF_ERROR(Hello(i).WithContext("connecting to node " + std::to_string(i) + " at " + it->second));
  }
  // Nodes added to the cluster since.
  for (auto it = nodes.find(static_cast<uint32_t>(num_servers())); it != nodes.end() && it->first == num_servers(); ++it) {
    ENGRAM_RETURN_IF_ERROR(AddServer(it->first, it->second));
  }
  return Status::OK();
}

void Client::Backoff(int attempt, bool server_answered) const {
  if (attempt == 0 || options_.retry_backoff.count() <= 0) return;
  if (server_answered && attempt <= 6) {  // 1, 2, 4, ... 32 ms: the server is there and busy.
    std::this_thread::sleep_for(std::chrono::milliseconds(1 << (attempt - 1)));
    return;
  }
  const auto wait = options_.retry_backoff * (1 << std::min(attempt - 1, 4));
  std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(wait, std::chrono::milliseconds(1000)));
}

StatusOr<ReplyMessage> Client::CallAny(wire::MsgType type, const std::vector<uint8_t>& payload, int attempts) {
  StatusOr<ReplyMessage> got = Status::Unavailable("no server answered");
  for (size_t i = 0; i < num_servers() && !got.ok(); ++i) {
    if (transport_->has_address(conns_[i])) got = Call(static_cast<int>(i), type, 0, payload, attempts);
  }
  return got;
}

Status Client::EnsureConnected(int server) {
  if (transport_->alive(conns_[server])) return Status::OK();
  if (!transport_->has_address(conns_[server])) {
    // A node id that had no daemon: ask the cluster whether it has one now (twice a second at most).
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
    int64_t last = last_learn_ms_.load();
    if (now - last >= 500 && last_learn_ms_.compare_exchange_strong(last, now)) LearnNodes().IgnoreError();
    if (!transport_->has_address(conns_[server])) return transport_->Reconnect(conns_[server]);  // Says why.
    return Status::OK();
  }
  return transport_->Reconnect(conns_[server]);
}

StatusOr<ReplyMessage> Client::Call(int server, wire::MsgType type, uint64_t epoch,
                                    const std::vector<uint8_t>& payload, int attempts) {
  Status last;
  if (attempts <= 0) attempts = options_.max_attempts;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    Backoff(attempt);
    last = EnsureConnected(server);
    if (!last.ok()) continue;
    auto id = transport_->Send(conns_[server], type, epoch, payload);
    if (!id.ok()) {
      last = id.status();
      if (!Transient(last)) return last;
      continue;
    }
    auto r = transport_->Wait(*id, Deadline());
    if (r.ok() || !Transient(r.status())) return r;
    last = r.status();
  }
  return last.WithContext("after " + std::to_string(attempts) + " attempts");
}

Status Client::CreateTable(const TableSchema& schema, uint32_t num_shards, uint32_t replicas) {
  ENGRAM_RETURN_IF_ERROR(schema.Validate());
  if (replicas < 1 || replicas > 2) return Status::InvalidArgument("replicas must be 1 or 2");
  if (replicas == 2 && num_servers() < 2) return Status::InvalidArgument("2 replicas need at least 2 servers");
  std::vector<uint32_t> nodes(num_servers());
  for (size_t i = 0; i < nodes.size(); ++i) nodes[i] = static_cast<uint32_t>(i);
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Balanced(schema.num_rows, num_shards, nodes, 1));
  wire::TableInfo info;
  info.schema = schema;
  info.epoch = map.epoch();
  info.owners = map.owners();
  if (replicas == 2) {  // Each shard's backup: the next server after its owner.
    for (uint32_t o : info.owners) info.backups.push_back((o + 1) % static_cast<uint32_t>(num_servers()));
  }
  for (size_t i = 0; i < num_servers(); ++i) {
    info.node_id = static_cast<uint32_t>(i);
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    wire::PutTableInfo(w, info);
    auto r = Call(static_cast<int>(i), wire::MsgType::kCreateTable, 0, p);
    if (!r.ok()) {
      for (size_t j = 0; j < i; ++j) Call(static_cast<int>(j), wire::MsgType::kDropTable, 0, NamePayload(schema.name)).status().IgnoreError();
      return r.status().WithContext("server " + servers_[i]);
    }
  }
  return Status::OK();
}

Status Client::DropTable(const std::string& name) {
  Status first;
  for (size_t i = 0; i < num_servers(); ++i) {
    Status s = Call(static_cast<int>(i), wire::MsgType::kDropTable, 0, NamePayload(name)).status();
    if (!s.ok() && first.ok()) first = s.WithContext("server " + servers_[i]);
  }
  return first;
}

StatusOr<wire::TableInfo> Client::DescribeTable(const std::string& name) {
  wire::TableInfo total;
  for (size_t i = 0; i < num_servers(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(auto r, Call(static_cast<int>(i), wire::MsgType::kDescribeTable, 0, NamePayload(name)));
    wire::Reader rd(r.payload.data(), r.payload.size());
    wire::TableInfo info;
    ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(rd, &info));
    if (i == 0) {
      total = info;
    } else {
      total.touched_rows += info.touched_rows;
    }
  }
  return total;
}

StatusOr<std::vector<wire::TableInfo>> Client::ListTables() {
  ENGRAM_ASSIGN_OR_RETURN(auto r, CallAny(wire::MsgType::kListTables, {}));  // All hold every table.
  wire::Reader rd(r.payload.data(), r.payload.size());
  uint32_t n = 0;
  ENGRAM_RETURN_IF_ERROR(rd.Get(&n));
  std::vector<wire::TableInfo> out(n);
  for (auto& t : out) ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(rd, &t));
  for (auto& t : out) {
    auto d = DescribeTable(t.schema.name);
    if (d.ok()) t.touched_rows = d->touched_rows;
  }
  return out;
}

StatusOr<std::unique_ptr<TableHandle>> Client::OpenTable(const std::string& name) { return OpenTable(name, true); }

StatusOr<std::unique_ptr<TableHandle>> Client::OpenTable(const std::string& name, bool map_arenas) {
  // Any server that answers will do (all hold every table's map): node 0 may be the one down.
  StatusOr<ReplyMessage> got = Status::Unavailable("no server answered");
  for (int round = 0; round < options_.max_attempts; ++round) {
    Backoff(round);
    for (size_t i = 0; i < num_servers(); ++i) {
      got = Call(static_cast<int>(i), wire::MsgType::kDescribeTable, 0, NamePayload(name), /*attempts=*/1);
      if (got.ok() || !Transient(got.status())) break;
    }
    if (got.ok() || !Transient(got.status())) break;
  }
  ENGRAM_ASSIGN_OR_RETURN(auto r, std::move(got));
  wire::Reader rd(r.payload.data(), r.payload.size());
  wire::TableInfo info;
  ENGRAM_RETURN_IF_ERROR(wire::GetTableInfo(rd, &info));
  const uint32_t highest = info.owners.empty() ? 0 : *std::max_element(info.owners.begin(), info.owners.end());
  if (highest >= num_servers()) {
    // A node added to the cluster since this client connected: ask the cluster for it.
    Status learned = LearnNodes();
    if (highest >= num_servers()) {
      return Status::FailedPrecondition("table '" + name + "' has shards on node " + std::to_string(highest) +
                                        ", beyond the " + std::to_string(num_servers()) + " servers this client knows" +
                                        (learned.ok() ? "" : " (" + learned.ToString() + ")"));
    }
  }
  ENGRAM_ASSIGN_OR_RETURN(auto map, cluster::ShardMap::Create(info.schema.num_rows, info.owners, info.epoch, info.backups));
  auto handle = std::unique_ptr<TableHandle>(new TableHandle(this, std::move(info), std::move(map)));
  if (options_.one_sided && map_arenas) ENGRAM_RETURN_IF_ERROR(handle->MapArenas());
  return handle;
}

namespace {
// Fills this process's page tables for a mapped arena now, so that the first pulls do not take
// a page fault per row (a 4 KiB page maps ~14 rows of 264 B). Best effort: kernels before 5.14
// lack MADV_POPULATE_READ and the rows then fault in on first read.
void PopulateMapping(const uint8_t* base, size_t bytes) {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;
#endif
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(base) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(base) + bytes;
  (void)madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_READ);
}

// A writer holds a row for about a microsecond: spin a little longer after each torn copy.
void PauseAfterTornCopy(int attempt) {
  for (int spin = 0; spin < (16 << attempt) && spin < 4096; ++spin) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
}

// Finds `row` in a copy of a whole row-cache set (fetched with one get, no ordering inside it):
// kConsistent with the value in dst, kTorn if a way holding the row was torn, kUntouched if no
// way holds it (not resident: ask the server).
SlotCopyState FindInSetCopy(uint64_t row, uint32_t ways, size_t stride, size_t value_bytes, const uint8_t* set,
                            uint8_t* dst) {
  const SlotLayout layout = SlotLayout::For(value_bytes + 8);
  bool torn = false;
  for (uint32_t w = 0; w < ways; ++w) {
    const uint8_t* slot = set + w * stride;
    switch (ClassifySlotCopy(layout, slot)) {
      case SlotCopyState::kConsistent: {
        uint64_t tag;
        std::memcpy(&tag, slot + SlotLayout::kValueOffset, 8);
        if (tag != row) break;
        std::memcpy(dst, slot + SlotLayout::kValueOffset + 8, value_bytes);
        return SlotCopyState::kConsistent;
      }
      case SlotCopyState::kTorn: torn = true; break;  // It might have held the row.
      case SlotCopyState::kUntouched: break;
    }
  }
  return torn ? SlotCopyState::kTorn : SlotCopyState::kUntouched;
}

}  // namespace

std::vector<uint8_t> TableHandle::LeasesPassed(const std::vector<Direct>& direct, size_t num_servers) {
  std::vector<uint8_t> passed(num_servers, 0);
  if (direct.empty()) return passed;  // One-sided reads are off.
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  for (const Direct& d : direct) {
    if (d.lease != nullptr && d.server >= 0 && static_cast<size_t>(d.server) < num_servers) {
      passed[d.server] = now_ns >= d.lease->load(std::memory_order_acquire);
    }
  }
  return passed;
}

Status TableHandle::MapArenas() {
  auto m = map();
  // Servers that own no shard of the table are not asked, nor those whose lease word has passed
  // (hung, cut off): they would not answer.
  const std::vector<uint8_t> passed = LeasesPassed(*direct(), client_->num_servers());
  std::vector<uint8_t> skip(client_->num_servers(), 1);
  for (uint32_t s = 0; s < m->num_shards(); ++s) {
    if (m->Owner(s) < skip.size()) skip[m->Owner(s)] = passed[m->Owner(s)];
  }
  auto direct = std::make_shared<std::vector<Direct>>(m->num_shards());
  const size_t stride = SlotLayout::For(info_.schema.value_bytes()).stride;
  const size_t cached_stride = SlotLayout::For(info_.schema.value_bytes() + 8).stride;  // Row tag + value.
  for (size_t server = 0; server < client_->num_servers(); ++server) {
    if (skip[server]) continue;  // Its shards are read by RPC until it publishes a lease again.
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    w.PutString(info_.schema.name);
    auto got = client_->Call(static_cast<int>(server), wire::MsgType::kRmaInfo, 0, p, /*attempts=*/1);
    if (!got.ok()) continue;  // Down or busy: its shards are read by RPC until the next refresh.
    auto& r = *got;
    wire::Reader rd(r.payload.data(), r.payload.size());
    uint32_t addr_len = 0, n = 0;
    const uint8_t* addr = nullptr;
    ENGRAM_RETURN_IF_ERROR(rd.Get(&addr_len));
    ENGRAM_RETURN_IF_ERROR(rd.GetSpan(addr_len, &addr));
    const std::vector<uint8_t> address(addr, addr + addr_len);
    ENGRAM_RETURN_IF_ERROR(rd.Get(&n));
    std::vector<std::pair<uint32_t, Direct>> opened;  // This server's shards (shard, access).
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t shard = 0, key_len = 0;
      uint64_t base = 0;
      Direct d;
      const uint8_t* key = nullptr;
      ENGRAM_RETURN_IF_ERROR(rd.Get(&shard));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&d.first_row));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&d.num_rows));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&d.stride));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&d.sets));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&d.ways));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&base));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&key_len));
      ENGRAM_RETURN_IF_ERROR(rd.GetSpan(key_len, &key));
      // Only the owner's copy, by this handle's map: a restarted node may still hold a shard
      // that was failed over or moved while it was down.
      if (shard >= m->num_shards() || m->Owner(shard) != server) continue;
      const cluster::RowRange range = m->Range(shard);
      if (d.stride != (d.ways == 0 ? stride : cached_stride) || range.first != d.first_row ||
          range.count != d.num_rows || (d.ways != 0 && (d.sets == 0 || d.ways > 64))) {
        continue;  // Not ours to trust.
      }
      auto region = client_->transport_->OpenRegion(client_->conns_[server], address,
                                                    std::vector<uint8_t>(key, key + key_len), base,
                                                    client_->options_.force_rma_get);
      if (!region.ok()) continue;  // Not reachable one-sidedly from here: RPC for this shard.
      d.server = static_cast<int>(server);
      d.remote_base = base;
      d.generation = region->generation;
      if (region->access == Transport::RegionAccess::kMapped) {
        d.base = region->mapped;
        PopulateMapping(d.base, (d.ways == 0 ? d.num_rows : d.sets * d.ways) * d.stride);
      } else if (region->access == Transport::RegionAccess::kGet) {
        d.get_key = region->key;
      } else {
        continue;  // UCX would emulate gets (tcp): one batched RPC reply is faster.
      }
      opened.emplace_back(shard, d);
    }
    // The server's lease word, if it publishes one: mapped slots are read only while it holds.
    const std::atomic<int64_t>* lease = nullptr;
    if (rd.remaining() > 0) {
      uint64_t base = 0;
      uint32_t key_len = 0;
      const uint8_t* key = nullptr;
      ENGRAM_RETURN_IF_ERROR(rd.Get(&base));
      ENGRAM_RETURN_IF_ERROR(rd.Get(&key_len));
      ENGRAM_RETURN_IF_ERROR(rd.GetSpan(key_len, &key));
      auto region = client_->transport_->OpenRegion(client_->conns_[server], address,
                                                    std::vector<uint8_t>(key, key + key_len), base, false);
      if (region.ok() && region->access == Transport::RegionAccess::kMapped) {
        lease = reinterpret_cast<const std::atomic<int64_t>*>(region->mapped);
      } else {
        // A lease this process cannot watch: its mapped slots are not read (RPC instead).
        for (auto& [shard, d] : opened) {
          if (d.base != nullptr) d.base = nullptr;
        }
      }
    }
    for (auto& [shard, d] : opened) {
      d.lease = d.base != nullptr ? lease : nullptr;
      if (d.base != nullptr || d.get_key >= 0) (*direct)[shard] = d;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  direct_ = std::move(direct);
  return Status::OK();
}

std::shared_ptr<const std::vector<TableHandle::Direct>> TableHandle::CurrentDirect() {
  // One-sided reads send nothing: poll so that a server that died is noticed (its connection's
  // generation changes) instead of its last memory being read on and on. At most once per
  // millisecond per table: small pulls come far more often, and a dead server's memory holds
  // nothing newer than what it acknowledged.
  auto d = direct();
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  int64_t last = last_probe_ns_.load(std::memory_order_relaxed);
  if (now - last < 1'000'000 || !last_probe_ns_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    return d;
  }
  if (remap_pending_.exchange(false)) {  // After a refresh without arenas.
    if (MapArenas().ok()) return direct();
    remap_pending_ = true;
  }
  client_->transport_->Poll();
  // A mapped arena outlives its (same-host) server process: check the process is there.
  uint64_t probed = 0;  // Bit per server already checked (the first 64).
  for (const Direct& x : *d) {
    if (x.server < 0 || x.base == nullptr || (x.server < 64 && (probed >> x.server) & 1u)) continue;
    if (x.server < 64) probed |= uint64_t{1} << x.server;
    const uint32_t pid = client_->pids_[x.server];
    if (pid != 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      client_->transport_->CloseOneSided(client_->conns_[x.server]);
    }
  }
  uint64_t checked = 0;  // Bit per server already found current (the first 64 servers).
  for (const Direct& x : *d) {
    if (x.server < 0 || (x.server < 64 && (checked >> x.server) & 1u)) continue;
    if (client_->transport_->generation(client_->conns_[x.server]) != x.generation) {
      // Reopen: on failure (server still down) the table reads by RPC until the next pull.
      if (!MapArenas().ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        direct_ = std::make_shared<std::vector<Direct>>();
      }
      return direct();
    }
    if (x.server < 64) checked |= uint64_t{1} << x.server;
  }
  return d;
}

std::shared_ptr<const std::vector<TableHandle::Direct>> TableHandle::direct() const {
  std::lock_guard<std::mutex> lock(mu_);
  return direct_;
}

bool TableHandle::ReadDirect(const Direct& d, uint64_t row, uint8_t* dst, std::vector<float>* init_scratch) const {
  const SlotLayout layout = SlotLayout::For(info_.schema.value_bytes());
  if (d.ways != 0) return ReadCachedDirect(d, row, dst);
  const uint8_t* slot = d.base + d.Offset(row);
  for (int attempt = 0; attempt < 16; ++attempt) {
    // The arena is mapped into this process: coherent loads, so the seqlock protocol applies
    // exactly as for the server's own readers (engram/row_slot.h).
    const uint64_t v = SeqlockCopy(layout, slot, dst);
    if (v == 0) {  // Untouched: the row still has its initial value.
      InitialRowAtRest(info_.schema, row, init_scratch, dst);
      return true;
    }
    if ((v & 1u) == 0) return true;
    // Torn: a writer holds the row for about a microsecond; back off a little and re-read.
    client_->torn_copies_++;
    PauseAfterTornCopy(attempt);
  }
  return false;
}

// A row cache's set, mapped: the way tagged with `row` is copied with the seqlock protocol; the
// tag is inside the copied bytes, so a slot reused for another row meanwhile cannot pass.
bool TableHandle::ReadCachedDirect(const Direct& d, uint64_t row, uint8_t* dst) const {
  const size_t vb = info_.schema.value_bytes();
  const SlotLayout layout = SlotLayout::For(vb + 8);
  const uint8_t* set = d.base + d.Offset(row);
  for (uint32_t w = 0; w < d.ways; ++w) {
    const uint8_t* slot = set + w * d.stride;
    const uint64_t tag = SlotWord(slot + SlotLayout::kValueOffset).load(std::memory_order_relaxed);
    if (tag != row) continue;
    for (int attempt = 0; attempt < 16; ++attempt) {
      uint64_t t;
      const uint64_t v = SeqlockCopyTagged(layout, slot, &t, dst);
      if ((v & 1u) != 0) {
        client_->torn_copies_++;
        PauseAfterTornCopy(attempt);
        continue;
      }
      if (v == 0 || t != row) break;  // Reused for another row: look on (then ask the server).
      return true;
    }
  }
  return false;
}

std::vector<uint32_t> TableHandle::ReadByGets(const std::vector<Direct>& direct, const cluster::ShardMap& map,
                                              std::span<const uint64_t> rows, std::vector<uint32_t> positions,
                                              uint8_t* out, Clock::time_point deadline,
                                              std::vector<float>* init_scratch) const {
  const size_t vb = info_.schema.value_bytes();
  const SlotLayout layout = SlotLayout::For(vb);
  std::vector<uint32_t> unread;
  std::vector<uint32_t> torn, not_resident;
  std::vector<uint64_t> addrs;
  std::vector<uint8_t> slots;
  // One batch of gets per shard (each shard's arena is its own registered region).
  std::sort(positions.begin(), positions.end(), [&](uint32_t a, uint32_t b) {
    return map.ShardOf(rows[a]) < map.ShardOf(rows[b]);
  });
  for (size_t first = 0; first < positions.size();) {
    const Direct& d = direct[map.ShardOf(rows[positions[first]])];
    size_t last = first;
    while (last < positions.size() && &direct[map.ShardOf(rows[positions[last]])] == &d) ++last;
    std::vector<uint32_t> todo(positions.begin() + first, positions.begin() + last);
    first = last;
    // A few rounds: each gets every pending slot whole, then keeps the consistent copies.
    for (int round = 0; round < 4 && !todo.empty(); ++round) {
      addrs.resize(todo.size());
      for (size_t k = 0; k < todo.size(); ++k) addrs[k] = d.remote_base + d.Offset(rows[todo[k]]);
      const size_t span = d.ways == 0 ? layout.stride : d.ways * d.stride;  // A slot, or a cache set.
      slots.resize(todo.size() * span);
      if (!client_->transport_->Get(client_->conns_[d.server], d.get_key, addrs, span, slots.data(), deadline).ok()) {
        break;  // The rows left in `todo` go by RPC, which reports the server's state.
      }
      torn.clear();
      for (size_t k = 0; k < todo.size(); ++k) {
        const uint8_t* slot = slots.data() + k * span;
        uint8_t* dst = out + size_t{todo[k]} * vb;
        if (d.ways != 0) {
          switch (FindInSetCopy(rows[todo[k]], d.ways, d.stride, vb, slot, dst)) {
            case SlotCopyState::kConsistent: break;
            case SlotCopyState::kTorn: torn.push_back(todo[k]); break;
            case SlotCopyState::kUntouched: not_resident.push_back(todo[k]); break;
          }
          continue;
        }
        switch (ClassifySlotCopy(layout, slot)) {
          case SlotCopyState::kConsistent: std::memcpy(dst, slot + SlotLayout::kValueOffset, vb); break;
          case SlotCopyState::kUntouched: InitialRowAtRest(info_.schema, rows[todo[k]], init_scratch, dst); break;
          case SlotCopyState::kTorn: torn.push_back(todo[k]); break;
        }
      }
      client_->torn_copies_ += torn.size();
      todo.swap(torn);
    }
    unread.insert(unread.end(), todo.begin(), todo.end());
    unread.insert(unread.end(), not_resident.begin(), not_resident.end());
    not_resident.clear();
  }
  return unread;
}

StatusOr<std::vector<std::string>> Client::ServerStatus() {
  std::vector<std::string> out;
  for (size_t i = 0; i < num_servers(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(auto r, Call(static_cast<int>(i), wire::MsgType::kStats, 0, {}));
    wire::Reader rd(r.payload.data(), r.payload.size());
    std::string s;
    ENGRAM_RETURN_IF_ERROR(rd.GetString(&s, 1 << 24));
    out.push_back(std::move(s));
  }
  return out;
}

StatusOr<std::string> Client::Checkpoint(int server, const std::string& label) {
  return AdminJson(server, wire::MsgType::kCheckpoint, {label});
}

// One request carrying `strings`, answered with a JSON string (the admin requests above).
StatusOr<std::string> Client::AdminJson(int server, wire::MsgType type, const std::vector<std::string>& strings) {
  if (server < 0 || static_cast<size_t>(server) >= num_servers()) return Status::InvalidArgument("no such server");
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  for (const auto& s : strings) w.PutString(s);
  ENGRAM_ASSIGN_OR_RETURN(auto r, Call(server, type, 0, p));
  wire::Reader rd(r.payload.data(), r.payload.size());
  std::string s;
  ENGRAM_RETURN_IF_ERROR(rd.GetString(&s, 1 << 16));
  return s;
}

StatusOr<std::vector<uint8_t>> Client::AdminCall(int server, wire::MsgType type, const std::vector<uint8_t>& payload) {
  if (server < 0 || static_cast<size_t>(server) >= num_servers()) return Status::InvalidArgument("no such server");
  ENGRAM_ASSIGN_OR_RETURN(auto r, Call(server, type, 0, payload));
  return std::move(r.payload);
}

StatusOr<std::string> Client::RestoreTable(int server, const std::string& name, const std::string& label) {
  return AdminJson(server, wire::MsgType::kRestore, {name, label});
}

StatusOr<std::string> Client::DropCheckpoint(int server, const std::string& label) {
  return AdminJson(server, wire::MsgType::kDropCheckpoint, {label});
}

std::shared_ptr<const cluster::ShardMap> TableHandle::map() const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_;
}

uint64_t TableHandle::epoch() const { return map()->epoch(); }

Status TableHandle::Refresh(bool map_arenas) {
  ENGRAM_ASSIGN_OR_RETURN(auto fresh, client_->OpenTable(info_.schema.name, map_arenas));
  std::lock_guard<std::mutex> lock(mu_);
  if (!map_arenas) {
    // The shards still on the server mapped for them keep their access; the others go by RPC
    // until the next full refresh.
    auto kept = std::make_shared<std::vector<Direct>>(*direct_);
    kept->resize(fresh->map_->num_shards());
    for (uint32_t s = 0; s < kept->size(); ++s) {
      Direct& d = (*kept)[s];
      if (d.server >= 0 && fresh->map_->Owner(s) != static_cast<uint32_t>(d.server)) d = Direct{};
    }
    fresh->direct_ = std::move(kept);
    remap_pending_ = true;
  }
  map_ = fresh->map_;
  direct_ = fresh->direct_;
  return Status::OK();
}

std::vector<std::vector<uint32_t>> TableHandle::ByServer(const cluster::ShardMap& map,
                                                         std::span<const uint64_t> rows) const {
  std::vector<std::vector<uint32_t>> by(client_->num_servers());
  for (size_t i = 0; i < rows.size(); ++i) {
    // Rows beyond the table go to server 0, which refuses them with OutOfRange.
    const uint32_t owner = rows[i] < map.num_rows() ? map.Owner(map.ShardOf(rows[i])) : 0;
    by[owner].push_back(static_cast<uint32_t>(i));
  }
  return by;
}

PendingPull TableHandle::StartPull(std::span<const uint64_t> rows, uint8_t* out) {
  return StartPullImpl(rows, out, nullptr);
}

PendingPull TableHandle::StartPullImpl(std::span<const uint64_t> rows, uint8_t* out, const std::vector<bool>* failed) {
  PendingPull p;
  p.table = this;
  p.out = out;
  p.deadline = client_->Deadline();
  const auto m = map();
  // Around failed servers everything goes by RPC (their mapped arenas are not to be read).
  const auto direct = failed != nullptr ? std::make_shared<const std::vector<Direct>>() : CurrentDirect();
  const size_t vb = info_.schema.value_bytes();
  // Rows in mapped shards are read here and now, straight into `out` (duplicates are simply
  // read twice: cheaper than sorting). The rest, and rows whose copies stayed torn, go by RPC.
  std::vector<float> init_scratch;  // Initial values of untouched rows; allocated on first use.
  uint64_t read_direct = 0;
  constexpr size_t kAhead = 8;  // Rows are random: start the cache misses of the next few early.
  // A server whose lease word has passed (hung, cut off from etcd, or catching up) is read by RPC:
  // decided once per pull and server.
  const std::vector<uint8_t> lease_passed = LeasesPassed(*direct, client_->num_servers());
  auto direct_of = [&](uint64_t row) -> const Direct* {
    const uint32_t shard = row < m->num_rows() ? m->ShardOf(row) : UINT32_MAX;
    const Direct* d = shard < direct->size() ? &(*direct)[shard] : nullptr;  // Empty when one-sided is off.
    if (d == nullptr || (d->base == nullptr && d->get_key < 0) || lease_passed[d->server]) return nullptr;
    return d;
  };
  std::vector<uint32_t> get_positions;  // Rows of shards read with one-sided gets.
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + kAhead < rows.size()) {
      if (const Direct* nd = direct_of(rows[i + kAhead]); nd != nullptr && nd->base != nullptr) {
        const uint8_t* slot = nd->base + nd->Offset(rows[i + kAhead]);
        __builtin_prefetch(slot);
      }
    }
    if (const Direct* d = direct_of(rows[i])) {
      if (d->base == nullptr) {
        get_positions.push_back(static_cast<uint32_t>(i));
        continue;
      }
      if (ReadDirect(*d, rows[i], out + i * vb, &init_scratch)) {
        ++read_direct;
        continue;
      }
    }
    p.rpc_positions.push_back(static_cast<uint32_t>(i));
  }
  if (!get_positions.empty()) {
    const size_t wanted = get_positions.size();
    std::vector<uint32_t> unread = ReadByGets(*direct, *m, rows, std::move(get_positions), out, p.deadline, &init_scratch);
    client_->rows_rma_get_ += wanted - unread.size();
    read_direct += wanted - unread.size();
    p.rpc_positions.insert(p.rpc_positions.end(), unread.begin(), unread.end());
  }
  client_->rows_one_sided_ += read_direct;
  if (p.rpc_positions.empty()) return p;

  std::vector<uint64_t> rpc_rows(p.rpc_positions.size());
  for (size_t k = 0; k < rpc_rows.size(); ++k) rpc_rows[k] = rows[p.rpc_positions[k]];
  Deduplicate(rpc_rows, &p.unique, &p.inverse);
  p.dest.assign(p.unique.size(), UINT32_MAX);
  for (size_t k = 0; k < p.inverse.size(); ++k) {
    if (p.dest[p.inverse[k]] == UINT32_MAX) p.dest[p.inverse[k]] = p.rpc_positions[k];
  }
  auto by = ByServer(*m, p.unique);
  // Rows of failed servers go to their shards' backups, which hold every acknowledged write.
  std::vector<std::vector<uint32_t>> by_backup(by.size());
  if (failed != nullptr) {
    for (size_t s = 0; s < by.size() && s < failed->size(); ++s) {
      if (!(*failed)[s]) continue;
      std::vector<uint32_t> stay;
      for (uint32_t k : by[s]) {
        const uint32_t b = m->Backup(m->ShardOf(p.unique[k]));
        if (b < by.size() && b < failed->size() && !(*failed)[b]) {
          by_backup[b].push_back(k);
        } else {
          stay.push_back(k);
        }
      }
      by[s] = std::move(stay);
    }
  }
  // Large pulls go as several requests, all in flight together: the server gathers one part
  // while the previous part's reply streams and this client lays it out, instead of each step
  // waiting for the whole batch.
  const size_t part_rows = std::max<size_t>(256, (size_t{1} << 20) / std::max<size_t>(vb, 1));
  auto send = [&](size_t s, const std::vector<uint32_t>& idx, wire::MsgType type) {
    client_->rows_rpc_ += idx.size();
    for (size_t first = 0; first < idx.size(); first += part_rows) {
      const size_t n = std::min(part_rows, idx.size() - first);
      std::vector<uint8_t> payload;
      wire::Writer w(&payload);
      w.PutString(info_.schema.name);
      w.Put<uint32_t>(static_cast<uint32_t>(n));
      uint64_t* ids = reinterpret_cast<uint64_t*>(w.Reserve(n * 8));
      for (size_t k = 0; k < n; ++k) ids[k] = p.unique[idx[first + k]];
      auto id = client_->transport_->Send(client_->conns_[s], type, m->epoch(), std::move(payload));
      if (!id.ok()) {  // The parts already sent are still waited for, so none is left dangling.
        if (p.early.ok()) p.early = id.status();  // It names the server.
        p.unanswered_.resize(client_->num_servers());
        p.unanswered_[s] = true;
        return;
      }
      p.parts.push_back({static_cast<int>(s), *id, std::vector<uint32_t>(idx.begin() + first, idx.begin() + first + n)});
    }
  };
  for (size_t s = 0; s < by.size(); ++s) send(s, by[s], wire::MsgType::kPull);
  for (size_t s = 0; s < by_backup.size(); ++s) send(s, by_backup[s], wire::MsgType::kPullAnyCopy);
  return p;
}

Status PendingPull::Wait() {
  if (done) return Status::FailedPrecondition("PendingPull::Wait called twice");
  done = true;
  if (table == nullptr) return Status::FailedPrecondition("empty PendingPull");
  const size_t vb = table->info_.schema.value_bytes();
  Status first = early;
  for (const Part& part : parts) {
    auto r = table->client_->transport_->Wait(part.request, deadline);
    if (!r.ok()) {
      if (first.ok()) first = r.status().WithContext("server " + table->client_->servers_[part.server]);
      if (!table->client_->transport_->alive(table->client_->conns_[part.server]) || r.status().code() == Code::kDeadlineExceeded) {
        unanswered_.resize(table->client_->num_servers());
        unanswered_[part.server] = true;
      }
      continue;
    }
    wire::Reader rd(r->payload.data(), r->payload.size());
    uint32_t n = 0, got_vb = 0;
    const uint8_t* values = nullptr;
    Status s = rd.Get(&n);
    if (s.ok()) s = rd.Get(&got_vb);
    if (s.ok() && (n != part.positions.size() || got_vb != vb)) s = Status::DataLoss("pull reply does not match the request");
    if (s.ok()) s = rd.GetSpan(size_t{n} * vb, &values);
    if (!s.ok()) {
      if (first.ok()) first = s;
      continue;
    }
    for (size_t k = 0; k < n; ++k) std::memcpy(Landing(part.positions[k], vb), values + k * vb, vb);
  }
  if (!first.ok()) return first;
  for (size_t k = 0; k < inverse.size(); ++k) {  // Duplicates copy their first occurrence.
    const uint32_t first_pos = dest[inverse[k]];
    if (first_pos != rpc_positions[k]) std::memcpy(out + size_t{rpc_positions[k]} * vb, out + size_t{first_pos} * vb, vb);
  }
  return Status::OK();
}

Status TableHandle::Pull(std::span<const uint64_t> rows, uint8_t* out) {
  Status s;
  for (int attempt = 0; attempt < client_->options_.max_attempts; ++attempt) {
    PendingPull pending = StartPull(rows, out);
    s = pending.Wait();
    if (s.IsStaleShardMap()) {
      // A map changes on its servers one after another: back off so that the refresh finds it.
      client_->Backoff(attempt);
      ENGRAM_RETURN_IF_ERROR(Refresh());
      continue;
    }
    if (!Transient(s)) return s;
    // Servers whose connection failed: read their shards' rows from the backups at once,
    // rather than wait for the failover (a lease's time) or the server's return.
    if (const auto m = map(); !m->backups().empty() && !pending.unanswered().empty()) {
      if (StartPullImpl(rows, out, &pending.unanswered()).Wait().ok()) {
        client_->rows_from_backups_ += rows.size();
        return Status::OK();
      }
    }
    for (size_t i = 0; i < client_->num_servers(); ++i) {  // Replace connections that failed.
      client_->EnsureConnected(static_cast<int>(i)).IgnoreError();  // A failure shows in the retry.
    }
    client_->Backoff(attempt + 1);
    Refresh().IgnoreError();  // A failed server's shards may have moved to their backups.
  }
  return s;
}

Status TableHandle::PullF32(std::span<const uint64_t> rows, float* out) {
  const auto& s = info_.schema;
  if (s.dtype == DType::kBytes) {
    return Status::InvalidArgument("table '" + s.name + "' holds opaque byte rows; they have no f32 value");
  }
  std::vector<uint8_t> raw(rows.size() * s.value_bytes());
  ENGRAM_RETURN_IF_ERROR(Pull(rows, raw.data()));
  for (size_t i = 0; i < rows.size(); ++i) DecodeRow(s.dtype, s.dim, raw.data() + i * s.value_bytes(), out + i * s.dim);
  return Status::OK();
}

Status TableHandle::Push(std::span<const uint64_t> rows, const float* grads) {
  const uint32_t dim = info_.schema.dim;
  std::vector<uint64_t> unique;
  std::vector<uint32_t> inverse;
  Deduplicate(rows, &unique, &inverse);
  std::vector<float> summed;
  const float* unique_grads = grads;  // Rows already distinct and sorted: use the caller's grads.
  if (unique.size() != rows.size() || !std::equal(unique.begin(), unique.end(), rows.begin())) {
    summed.resize(unique.size() * dim);
    SumByInverse(inverse, unique.size(), dim, grads, summed.data());
    unique_grads = summed.data();
  }

  struct Part {
    int server;
    uint64_t seq;
    std::vector<uint8_t> payload;
    std::vector<uint32_t> idx;  // Indexes into `unique` this part carries.
    uint64_t epoch = 0;         // Of the map that routed it: sent with every attempt.
    bool done = false;          // Acknowledged, or replaced after a shard-map change.
    // An attempt ended without a definite answer (timeout, lost connection, "retry"): the
    // rows may have been applied somewhere under `seq`, so they keep it when rerouted.
    bool ambiguous = false;
  };
  std::vector<Part> parts;
  // One part per server for the rows `idx` (all of them, or those a stale map misrouted), each
  // with a fresh sequence number.
  // `seq` 0: fresh sequence numbers (rows never applied anywhere); else that of the part they
  // came from, so a server that already applied it (a promoted backup) answers, not applies.
  // `idx` by value: it may be a part's own, and `parts` grows here.
  auto add_parts = [&](const cluster::ShardMap& m, std::vector<uint32_t> idx, uint64_t seq = 0) {
    std::vector<uint64_t> subset(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) subset[k] = unique[idx[k]];
    const auto by = ByServer(m, subset);
    for (size_t s = 0; s < by.size(); ++s) {
      if (by[s].empty()) continue;
      Part part{static_cast<int>(s), seq != 0 ? seq : client_->next_seq_++, {}, {}, m.epoch()};
      part.ambiguous = seq != 0;
      for (uint32_t k : by[s]) part.idx.push_back(idx[k]);
      wire::Writer w(&part.payload);
      w.PutString(info_.schema.name);
      w.Put<uint64_t>(client_->push_session_);
      w.Put<uint64_t>(part.seq);
      w.Put<uint32_t>(static_cast<uint32_t>(part.idx.size()));
      // Fill each reserved block before reserving the next: Reserve may move the buffer.
      uint64_t* ids = reinterpret_cast<uint64_t*>(w.Reserve(part.idx.size() * 8));
      for (size_t k = 0; k < part.idx.size(); ++k) ids[k] = unique[part.idx[k]];
      float* g = reinterpret_cast<float*>(w.Reserve(part.idx.size() * dim * sizeof(float)));
      for (size_t k = 0; k < part.idx.size(); ++k) {
        std::memcpy(g + k * dim, unique_grads + size_t{part.idx[k]} * dim, dim * sizeof(float));
      }
      parts.push_back(std::move(part));
    }
  };
  auto m = map();
  {
    std::vector<uint32_t> all(unique.size());
    for (uint32_t k = 0; k < all.size(); ++k) all[k] = k;
    add_parts(*m, all);
  }
  Status first;
  bool answered = false;  // The last attempt's transient failures were answers of live servers.
  for (int attempt = 0; attempt < client_->options_.max_attempts; ++attempt) {
    client_->Backoff(attempt, answered);
    // Send every unacknowledged part, then collect: servers apply their parts in parallel.
    std::vector<std::pair<size_t, StatusOr<uint64_t>>> sent;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].done) continue;
      client_->EnsureConnected(parts[i].server).IgnoreError();  // A failure shows in the Send.
      // The part's own epoch, not the newest map's: a server the newer map no longer routes
      // these rows to must answer StaleShardMap, not find rows it does not own.
      sent.emplace_back(i, client_->transport_->Send(client_->conns_[parts[i].server], wire::MsgType::kPush,
                                                     parts[i].epoch, parts[i].payload));
    }
    const auto deadline = client_->Deadline();
    first = Status::OK();
    bool transient = false;
    answered = true;
    std::vector<uint32_t> misrouted;  // Rows of parts refused for a stale shard map.
    std::vector<size_t> misrouted_ambiguous;  // Such parts that an earlier attempt may have applied.
    std::vector<size_t> unreachable;  // Parts whose server's connection failed (maybe failed over).
    for (auto& [i, id] : sent) {
      Status s = id.ok() ? client_->transport_->Wait(*id, deadline).status() : id.status();
      if (s.ok()) {
        parts[i].done = true;
        continue;
      }
      if (s.IsStaleShardMap()) {  // Refused before it was applied here: route these rows again.
        parts[i].done = true;
        if (parts[i].ambiguous) {
          misrouted_ambiguous.push_back(i);
        } else {
          misrouted.insert(misrouted.end(), parts[i].idx.begin(), parts[i].idx.end());
        }
        transient = true;
        if (first.ok()) first = s;
        continue;
      }
      transient |= Transient(s);
      parts[i].ambiguous |= Transient(s);
      // A live connection means the server itself said "retry" (a shard frozen for a move, a
      // fenced node): worth asking again soon. A dead one gets the full backoff.
      const bool alive = client_->transport_->alive(client_->conns_[parts[i].server]);
      answered &= alive;
      // No answer at all (the connection died, or the server stayed silent past the deadline:
      // hung, or cut off): its shards may have failed over meanwhile.
      if (Transient(s) && (!alive || s.code() == Code::kDeadlineExceeded)) unreachable.push_back(i);
      if (first.ok() || ((Transient(first) || first.IsStaleShardMap()) && !Transient(s))) {
        first = s.WithContext("push part for server " + client_->servers_[parts[i].server]);
      }
    }
    if ((!misrouted.empty() || !misrouted_ambiguous.empty()) && (first.IsStaleShardMap() || Transient(first))) {
      ENGRAM_RETURN_IF_ERROR(Refresh());
      m = map();
      if (!misrouted.empty()) add_parts(*m, misrouted);
      for (size_t i : misrouted_ambiguous) add_parts(*m, parts[i].idx, parts[i].seq);
      continue;
    }
    if (!unreachable.empty() && Refresh(/*map_arenas=*/false).ok()) {
      // A dead or hung server's shards may have been promoted on their backups: send those parts
      // where the map now says, under their own sequence numbers (a backup that got a part from
      // its primary before the crash answers it as a duplicate).
      m = map();
      for (size_t i : unreachable) {
        const auto by = ByServer(*m, [&] {
          std::vector<uint64_t> ids;
          for (uint32_t k : parts[i].idx) ids.push_back(unique[k]);
          return ids;
        }());
        if (!by[parts[i].server].empty() && by[parts[i].server].size() == parts[i].idx.size()) continue;  // Same server.
        parts[i].done = true;
        add_parts(*m, parts[i].idx, parts[i].seq);
      }
    }
    if (first.ok() || !transient || !Transient(first)) return first;
  }
  return first;
}

std::future<Status> TableHandle::PullAsync(std::span<const uint64_t> rows, uint8_t* out) {
  std::vector<uint64_t> r(rows.begin(), rows.end());
  return std::async(std::launch::async, [this, r = std::move(r), out] { return Pull(r, out); });
}

std::future<Status> TableHandle::PushAsync(std::span<const uint64_t> rows, const float* grads) {
  std::vector<uint64_t> r(rows.begin(), rows.end());
  std::vector<float> g(grads, grads + rows.size() * info_.schema.dim);
  return std::async(std::launch::async, [this, r = std::move(r), g = std::move(g)] { return Push(r, g.data()); });
}

Status TableHandle::Put(std::span<const uint64_t> rows, const uint8_t* values) {
  const size_t vb = info_.schema.value_bytes();
  auto m = map();
  const auto by = ByServer(*m, rows);
  for (size_t s = 0; s < by.size(); ++s) {
    if (by[s].empty()) continue;
    std::vector<uint8_t> payload;
    wire::Writer w(&payload);
    w.PutString(info_.schema.name);
    w.Put<uint32_t>(static_cast<uint32_t>(by[s].size()));
    uint64_t* ids = reinterpret_cast<uint64_t*>(w.Reserve(by[s].size() * 8));
    for (size_t k = 0; k < by[s].size(); ++k) ids[k] = rows[by[s][k]];
    uint8_t* v = w.Reserve(by[s].size() * vb);  // After the ids are written: Reserve may move the buffer.
    for (size_t k = 0; k < by[s].size(); ++k) std::memcpy(v + k * vb, values + size_t{by[s][k]} * vb, vb);
    ENGRAM_RETURN_IF_ERROR(client_->Call(static_cast<int>(s), wire::MsgType::kPut, m->epoch(), payload).status());
  }
  return Status::OK();
}

}  // namespace engram::client
