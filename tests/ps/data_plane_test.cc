// Multi-process tests of the data plane: real engram-server daemons on 127.0.0.1 (ephemeral
// ports), driven through the client library and through raw frames.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "../testing/push_frame.h"
#include "../testing/server_process.h"
#include "client/client.h"
#include "engram/init.h"
#include "storage/optimizer.h"
#include "storage/row_cache.h"

namespace engram {
namespace {

using testing::PushPayload;
using testing::ServerProcess;

std::unique_ptr<client::Client> Connect(const std::vector<const ServerProcess*>& servers, int timeout_ms = 5000,
                                        bool force_rma_get = false) {
  client::ClientOptions o;
  for (const auto* s : servers) o.servers.push_back(s->address());
  o.timeout = std::chrono::milliseconds(timeout_ms);
  o.force_rma_get = force_rma_get;
  auto c = client::Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

TableSchema Schema(const std::string& name, OptimizerKind opt, uint64_t rows = 100000, uint32_t dim = 8) {
  TableSchema s;
  s.name = name;
  s.num_rows = rows;
  s.dim = dim;
  s.optimizer.kind = opt;
  s.optimizer.lr = opt == OptimizerKind::kSgd ? 1.0f : 0.01f;
  s.init = {InitKind::kNormal, 0.05f, 11};
  return s;
}

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s0_ = ServerProcess::Start(0);
    s1_ = ServerProcess::Start(1);
    client_ = Connect({s0_.get(), s1_.get()});
    ASSERT_NE(client_, nullptr);
  }
  std::unique_ptr<ServerProcess> s0_, s1_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(DataPlaneTest, PullAfterPushEqualsTheOptimizersMathExactly) {
  const TableSchema s = Schema("adam", OptimizerKind::kAdam);
  ASSERT_TRUE(client_->CreateTable(s, 8).ok());
  auto t = client_->OpenTable("adam");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  // Rows on both servers, with a duplicate whose gradients must be summed client-side.
  const std::vector<uint64_t> rows = {3, 99999, 50000, 3};
  std::vector<float> g(rows.size() * s.dim);
  for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(float(i)) * 0.1f;
  // The same math, in process: initial value, summed gradient, Adam over three steps.
  std::vector<std::vector<float>> want(3, std::vector<float>(s.dim));
  std::vector<std::vector<uint8_t>> state(3, std::vector<uint8_t>(storage::OptimizerStateBytes(s.optimizer, s.dim)));
  const uint64_t uniq[] = {3, 99999, 50000};
  for (int u = 0; u < 3; ++u) {
    InitialRow(s.init, uniq[u], s.dim, want[u].data());
    storage::InitOptimizerState(s.optimizer, s.dim, state[u].data());
  }
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE((*t)->Push(rows, g.data()).ok());
    for (int u = 0; u < 3; ++u) {
      std::vector<float> sum(s.dim, 0.0f);
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] != uniq[u]) continue;
        for (uint32_t c = 0; c < s.dim; ++c) sum[c] += g[i * s.dim + c];
      }
      storage::ApplyOptimizer(s.optimizer, s.dim, want[u].data(), state[u].data(), sum.data());
    }
  }
  std::vector<float> got(3 * s.dim);
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>(uniq, uniq + 3), got.data()).ok());
  for (int u = 0; u < 3; ++u) {
    for (uint32_t c = 0; c < s.dim; ++c) EXPECT_EQ(got[u * s.dim + c], want[u][c]) << "row " << uniq[u] << " col " << c;
  }
}

TEST_F(DataPlaneTest, AsyncPushAndPullComplete) {
  TableSchema s = Schema("async", OptimizerKind::kSgd, 1000, 4);
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(client_->CreateTable(s, 4).ok());
  auto t = client_->OpenTable("async");
  std::vector<uint64_t> rows = {7, 900};
  std::vector<float> g(8, 2.0f);
  auto f = (*t)->PushAsync(rows, g.data());
  rows[0] = 1;  // The call copied its inputs.
  ASSERT_TRUE(f.get().ok());
  std::vector<float> out(8);
  client::PendingPull p = (*t)->StartPull(std::vector<uint64_t>{7, 900}, reinterpret_cast<uint8_t*>(out.data()));
  ASSERT_TRUE(p.Wait().ok());
  EXPECT_EQ(out[0], -2.0f);
  EXPECT_EQ(out[4], -2.0f);
  EXPECT_FALSE(p.Wait().ok());  // Once.
  std::vector<float> out2(8);
  std::vector<uint64_t> again = {900, 7};
  auto pf = (*t)->PullAsync(again, reinterpret_cast<uint8_t*>(out2.data()));
  again[0] = 0;  // The call copied its rows.
  ASSERT_TRUE(pf.get().ok());
  EXPECT_EQ(out2[0], -2.0f);
  EXPECT_EQ(out2[4], -2.0f);
}

// A trainer that fixes its client id and is restarted numbers its pushes from 1 again: they
// are a new session's, not duplicates of the previous process's (which were all answered OK and
// dropped: row 4 read 0 in the run).
TEST_F(DataPlaneTest, ARestartedTrainerWithAFixedClientIdLosesNoPush) {
  TableSchema s = Schema("fixed", OptimizerKind::kSgd, 1000, 4);
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(client_->CreateTable(s, 4).ok());
  auto run = [&](uint64_t row) {
    client::ClientOptions o;
    o.servers = {s0_->address(), s1_->address()};
    o.client_id = 42;
    auto c = client::Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ((*c)->client_id(), 42u);
    auto t = (*c)->OpenTable("fixed");
    ASSERT_TRUE(t.ok());
    const std::vector<float> g(4, 1.0f);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*t)->Push(std::vector<uint64_t>{row}, g.data()).ok());
  };
  run(3);
  run(4);  // The same id, restarted.
  auto t = client_->OpenTable("fixed");
  ASSERT_TRUE(t.ok());
  std::vector<float> got(8);
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>{3, 4}, got.data()).ok());
  EXPECT_EQ(got[0], -3.0f);
  EXPECT_EQ(got[4], -3.0f) << "the restarted trainer's pushes were taken as duplicates";
}

TEST_F(DataPlaneTest, ConcurrentClientsPushingTheSameRowsLoseNoUpdate) {
  TableSchema s = Schema("sgd", OptimizerKind::kSgd, 1000, 4);
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(client_->CreateTable(s, 4).ok());
  constexpr int kClients = 3, kPushes = 200;
  auto pusher = [&] {
    auto c = Connect({s0_.get(), s1_.get()});
    ASSERT_NE(c, nullptr);
    auto t = c->OpenTable("sgd");
    ASSERT_TRUE(t.ok());
    const std::vector<uint64_t> rows = {1, 999, 1};
    const std::vector<float> g(rows.size() * 4, 1.0f);
    for (int i = 0; i < kPushes; ++i) ASSERT_TRUE((*t)->Push(rows, g.data()).ok());
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) threads.emplace_back(pusher);
  for (auto& th : threads) th.join();
  auto t = client_->OpenTable("sgd");
  std::vector<float> got(2 * 4);
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>{1, 999}, got.data()).ok());
  // SGD with lr 1 on integer gradients is exact: row 1 gets 2 per push, row 999 gets 1.
  EXPECT_EQ(got[0], -2.0f * kClients * kPushes);
  EXPECT_EQ(got[4], -1.0f * kClients * kPushes);
}

class RawFrameTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(0, {"--max_batch_rows=1000"});
    client_ = Connect({server_.get()});
    ASSERT_NE(client_, nullptr);
    TableSchema s = Schema("t", OptimizerKind::kSgd, 100, 4);
    s.init.kind = InitKind::kZeros;
    ASSERT_TRUE(client_->CreateTable(s, 1).ok());
    auto tr = client::Transport::Create();
    ASSERT_TRUE(tr.ok());
    transport_ = std::move(tr).value();
    auto hp = server_->address();
    auto conn = transport_->Connect("127.0.0.1", static_cast<uint16_t>(std::stoi(hp.substr(hp.rfind(':') + 1))));
    ASSERT_TRUE(conn.ok());
    conn_ = *conn;
  }
  Status Call(wire::MsgType type, std::vector<uint8_t> payload) {
    return testing::CallOnce(*transport_, conn_, type, std::move(payload));
  }
  Status CallRaw(wire::Header h, std::vector<uint8_t> payload) {
    auto id = transport_->SendRaw(conn_, h, std::move(payload));
    if (!id.ok()) return id.status();
    return transport_->Wait(*id, client::Clock::now() + std::chrono::seconds(5)).status();
  }
  // The daemon still answers everyone: a fresh client can pull.
  void ExpectStillServing() {
    auto c = Connect({server_.get()});
    ASSERT_NE(c, nullptr);
    auto t = c->OpenTable("t");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    std::vector<float> v(4);
    EXPECT_TRUE((*t)->PullF32(std::vector<uint64_t>{1}, v.data()).ok());
  }
  float Value(uint64_t row) {
    auto t = client_->OpenTable("t");
    std::vector<float> v(4);
    EXPECT_TRUE((*t)->PullF32(std::vector<uint64_t>{row}, v.data()).ok());
    return v[0];
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<client::Transport> transport_;
  int conn_ = 0;
};

TEST_F(RawFrameTest, ARetransmittedPushIsAppliedOnce) {
  const auto p = PushPayload("t", 77, 5, {2}, {1, 1, 1, 1});
  ASSERT_TRUE(Call(wire::MsgType::kPush, p).ok());
  ASSERT_TRUE(Call(wire::MsgType::kPush, p).ok());  // Same client id and sequence: a retransmission.
  EXPECT_EQ(Value(2), -1.0f);
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("t", 77, 6, {2}, {1, 1, 1, 1})).ok());
  EXPECT_EQ(Value(2), -2.0f);
}

// A part whose outcome the client did not learn keeps its number when the shard map changed and
// its rows are split among new owners; one server may then get, under a number it applied
// before, rows of another shard. Those are applied (they were lost before: the server answered
// "duplicate"); rows of a shard it applied under that number are not applied again.
TEST_F(RawFrameTest, APartResentUnderItsNumberAppliesOnlyTheShardsItWasNotAppliedTo) {
  TableSchema s = Schema("u", OptimizerKind::kSgd, 100, 4);  // Shards: rows 0-49 and 50-99.
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(client_->CreateTable(s, 2).ok());
  const std::vector<float> one(4, 1.0f), two(8, 1.0f);
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {3}, one)).ok());
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {60}, one)).ok());     // Shard 1: applied.
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {3, 60}, two)).ok());  // Both: a duplicate.
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {4}, one)).ok());      // Shard 0: a duplicate.
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {5, 61}, two)).ok());
  auto t = client_->OpenTable("u");
  ASSERT_TRUE(t.ok());
  std::vector<float> v(5 * 4);
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>{3, 60, 4, 5, 61}, v.data()).ok());
  EXPECT_EQ(v[0], -1.0f);
  EXPECT_EQ(v[4], -1.0f) << "rows of another shard under a number applied before were dropped";
  EXPECT_EQ(v[8], 0.0f);
  EXPECT_EQ(v[12], 0.0f);
  EXPECT_EQ(v[16], 0.0f);
}

// A node answers a retransmission as a duplicate only for shards it still owns: one that lost a
// shard (a restarted node's step down, a failover) may hold the entry of a part whose rows never
// reached the shard's new owner; that owner must decide (it has the entry if it has the rows).
TEST_F(RawFrameTest, ADuplicateIsAnsweredOnlyForShardsThisNodeStillOwns) {
  TableSchema s = Schema("u", OptimizerKind::kSgd, 100, 4);  // Shards: rows 0-49 and 50-99.
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(client_->CreateTable(s, 2).ok());
  const std::vector<float> one(4, 1.0f);
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {60}, one)).ok());
  std::vector<uint8_t> name;
  wire::Writer(&name).PutString("u");
  auto described = client_->AdminCall(0, wire::MsgType::kDescribeTable, name);
  ASSERT_TRUE(described.ok()) << described.status().ToString();
  wire::Reader rd(described->data(), described->size());
  wire::TableInfo info;
  ASSERT_TRUE(wire::GetTableInfo(rd, &info).ok());
  info.epoch += 1;
  info.owners[1] = 1;  // Shard 1 went to node 1.
  std::vector<uint8_t> map;
  wire::Writer mw(&map);
  wire::PutTableInfo(mw, info);
  mw.Put<uint8_t>(1);  // Forwarded: no retiring elsewhere first.
  ASSERT_TRUE(Call(wire::MsgType::kAdoptMap, map).ok());
  const Status again = Call(wire::MsgType::kPush, PushPayload("u", 77, 9, {60}, one));
  EXPECT_TRUE(again.IsStaleShardMap()) << again.ToString();
  ASSERT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 10, {3}, one)).ok());
  EXPECT_TRUE(Call(wire::MsgType::kPush, PushPayload("u", 77, 10, {3}, one)).ok()) << "a shard it owns: a duplicate";
}

TEST_F(RawFrameTest, EachMalformedInputGetsItsErrorAndTheDaemonSurvives) {
  struct Case {
    const char* what;
    wire::MsgType type;
    std::vector<uint8_t> payload;
    Code want;
  };
  std::vector<Case> cases;
  cases.push_back({"short frame", wire::MsgType::kPush, {1, 0}, Code::kInvalidArgument});
  cases.push_back({"unknown table", wire::MsgType::kPush, PushPayload("nope", 1, 1, {1}, {1, 1, 1, 1}), Code::kNotFound});
  cases.push_back({"wrong dim", wire::MsgType::kPush, PushPayload("t", 1, 2, {1}, {1, 1, 1}), Code::kInvalidArgument});
  cases.push_back({"row out of range", wire::MsgType::kPush, PushPayload("t", 1, 3, {100}, {1, 1, 1, 1}), Code::kOutOfRange});
  cases.push_back({"non-finite gradient", wire::MsgType::kPush, PushPayload("t", 1, 4, {1}, {1, NAN, 1, 1}),
                   Code::kInvalidArgument});
  std::vector<uint64_t> many(1001, 1);
  cases.push_back({"oversized batch", wire::MsgType::kPush, PushPayload("t", 1, 5, many, std::vector<float>(4004, 0.0f)),
                   Code::kInvalidArgument});
  {
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    w.PutString("t");
    w.Put<uint32_t>(3);  // Claims 3 rows, carries 1.
    w.Put<uint64_t>(1);
    cases.push_back({"truncated pull", wire::MsgType::kPull, p, Code::kInvalidArgument});
  }
  cases.push_back({"unknown type", static_cast<wire::MsgType>(999), {}, Code::kInvalidArgument});
  {
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    w.Put<uint32_t>(1u << 30);  // A 1 GiB string length.
    cases.push_back({"absurd string length", wire::MsgType::kDescribeTable, p, Code::kInvalidArgument});
  }
  auto strings = [](std::vector<std::string> parts) {
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    for (const auto& x : parts) w.PutString(x);
    return p;
  };
  cases.push_back({"checkpoint label with a slash", wire::MsgType::kCheckpoint, strings({"a/b"}), Code::kInvalidArgument});
  cases.push_back({"checkpoint with a truncated label", wire::MsgType::kCheckpoint, {9, 0, 0, 0, 'x'},
                   Code::kInvalidArgument});
  cases.push_back({"restore without a label", wire::MsgType::kRestore, strings({"t"}), Code::kInvalidArgument});
  cases.push_back({"restore of an unknown table", wire::MsgType::kRestore, strings({"nope", "x"}), Code::kNotFound});
  cases.push_back({"restore from an unknown label", wire::MsgType::kRestore, strings({"t", "never"}), Code::kNotFound});
  for (auto& c : cases) {
    Status s = Call(c.type, c.payload);
    EXPECT_EQ(s.code(), c.want) << c.what << ": " << s.ToString();
    EXPECT_FALSE(s.message().empty()) << c.what;
  }
  EXPECT_EQ(Value(1), 0.0f);  // None of them changed a row.

  wire::Header bad;
  bad.type = static_cast<uint16_t>(wire::MsgType::kHello);
  bad.magic = 0xdeadbeef;
  EXPECT_TRUE(CallRaw(bad, {}).IsInvalidArgument());
  bad.magic = wire::kMagic;
  bad.version = 99;
  Status v = CallRaw(bad, {});
  EXPECT_TRUE(v.IsInvalidArgument());
  EXPECT_NE(v.message().find("protocol version"), std::string::npos);
  bad.version = wire::kProtocolVersion;
  bad.payload_len = 50;  // Header and frame disagree.
  EXPECT_TRUE(CallRaw(bad, {1, 2, 3}).IsInvalidArgument());
  ExpectStillServing();
}

// The cluster's messages (moves, map changes, replication) get the same care: each malformed
// one is refused with its own error, changes nothing and the daemon keeps serving.
TEST_F(RawFrameTest, EachMalformedClusterFrameGetsItsErrorAndTheDaemonSurvives) {
  struct Case {
    const char* what;
    wire::MsgType type;
    std::vector<uint8_t> payload;
    Code want;
  };
  // Table name, shard, then whatever `more` writes.
  auto shard_frame = [](const std::string& table, uint32_t shard, const std::function<void(wire::Writer&)>& more) {
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    w.PutString(table);
    w.Put<uint32_t>(shard);
    if (more) more(w);
    return p;
  };
  auto op = [](uint64_t id) { return [id](wire::Writer& w) { w.Put<uint64_t>(id); }; };
  std::vector<Case> cases;
  for (wire::MsgType type : {wire::MsgType::kShardPrepare, wire::MsgType::kShardTrack, wire::MsgType::kShardFreeze,
                             wire::MsgType::kShardAbort}) {
    cases.push_back({"move step without an operation id", type, shard_frame("t", 0, nullptr), Code::kInvalidArgument});
    cases.push_back({"move step with operation id 0", type, shard_frame("t", 0, op(0)), Code::kInvalidArgument});
    cases.push_back({"move step on an unknown table", type, shard_frame("nope", 0, op(1)), Code::kNotFound});
    cases.push_back({"move step on shard 7 of 1", type, shard_frame("t", 7, op(1)), Code::kInvalidArgument});
  }
  cases.push_back({"freeze of a shard no operation tracks", wire::MsgType::kShardFreeze, shard_frame("t", 0, op(5)),
                   Code::kFailedPrecondition});
  cases.push_back({"prepare of a shard this node holds", wire::MsgType::kShardPrepare, shard_frame("t", 0, op(5)),
                   Code::kFailedPrecondition});
  cases.push_back({"truncated shard read", wire::MsgType::kShardRead,
                   shard_frame("t", 0, [](wire::Writer& w) { w.Put<uint64_t>(0); }), Code::kInvalidArgument});
  cases.push_back({"truncated shard push", wire::MsgType::kShardPush,
                   shard_frame("t", 0, [](wire::Writer& w) { w.PutString("127.0.0.1:1"); }), Code::kInvalidArgument});
  cases.push_back({"shard images of the wrong row size", wire::MsgType::kShardWrite,
                   shard_frame("t", 0, [](wire::Writer& w) {
                     w.Put<uint32_t>(1);
                     w.Put<uint32_t>(8);  // The table's rows are 16 bytes.
                     w.Put<uint32_t>(0);
                   }),
                   Code::kInvalidArgument});
  cases.push_back({"shard images claiming more rows than sent", wire::MsgType::kShardWrite,
                   shard_frame("t", 0, [](wire::Writer& w) {
                     w.Put<uint32_t>(1000);
                     w.Put<uint32_t>(16);
                     w.Put<uint32_t>(0);
                   }),
                   Code::kInvalidArgument});
  cases.push_back({"shard images for a shard not moving here", wire::MsgType::kShardWrite,
                   shard_frame("t", 0, [](wire::Writer& w) {
                     w.Put<uint32_t>(1);
                     w.Put<uint32_t>(16);
                     w.Put<uint32_t>(0);
                     w.Put<uint64_t>(1);
                     w.Put<uint64_t>(2);
                     const float v[4] = {9, 9, 9, 9};
                     w.PutBytes(reinterpret_cast<const uint8_t*>(v), sizeof(v));
                   }),
                   Code::kFailedPrecondition});
  cases.push_back({"a map that is not a table record", wire::MsgType::kAdoptMap, {1, 2, 3}, Code::kInvalidArgument});
  {
    wire::TableInfo info;
    info.schema = Schema("t", OptimizerKind::kSgd, 100, 4);
    info.schema.init.kind = InitKind::kZeros;
    info.epoch = 1;  // Not newer than the table's.
    info.owners = {1};
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    wire::PutTableInfo(w, info);
    cases.push_back({"a map that is not newer and moves the shard away", wire::MsgType::kAdoptMap, p,
                     Code::kFailedPrecondition});
    info.epoch = 5;
    info.owners = {0, 0};  // Another shape.
    p.clear();
    wire::PutTableInfo(w, info);
    cases.push_back({"a map of another shape", wire::MsgType::kAdoptMap, p, Code::kInvalidArgument});
  }
  auto replica = [](const std::string& table, const std::function<void(wire::Writer&)>& blocks) {
    std::vector<uint8_t> p;
    wire::Writer w(&p);
    w.PutString(table);
    w.Put<uint64_t>(3);  // client
    w.Put<uint64_t>(4);  // seq
    blocks(w);
    return p;
  };
  cases.push_back({"a replica with no blocks", wire::MsgType::kReplicate, replica("t", [](wire::Writer& w) { w.Put<uint32_t>(0); }),
                   Code::kInvalidArgument});
  cases.push_back({"a replica of an unknown table", wire::MsgType::kReplicate,
                   replica("nope", [](wire::Writer& w) { w.Put<uint32_t>(1); }), Code::kNotFound});
  cases.push_back({"a replica for a shard this node does not back up", wire::MsgType::kReplicate,
                   replica("t",
                           [](wire::Writer& w) {
                             w.Put<uint32_t>(1);
                             w.Put<uint32_t>(0);
                             w.Put<uint8_t>(1);
                             w.Put<uint32_t>(0);
                           }),
                   Code::kFailedPrecondition});
  cases.push_back({"a truncated replica", wire::MsgType::kReplicate, replica("t", [](wire::Writer& w) { w.Put<uint32_t>(1); }),
                   Code::kInvalidArgument});
  cases.push_back({"applied pushes of a shard the table lacks", wire::MsgType::kShardAppliedRead,
                   shard_frame("t", 9, nullptr), Code::kInvalidArgument});
  cases.push_back({"applied pushes of an unknown table", wire::MsgType::kShardAppliedWrite,
                   shard_frame("nope", 0, [](wire::Writer& w) { w.Put<uint64_t>(5), w.Put<uint32_t>(0); }), Code::kNotFound});
  cases.push_back({"applied pushes counting more than they carry", wire::MsgType::kShardAppliedWrite,
                   shard_frame("t", 0,
                               [](wire::Writer& w) {
                                 w.Put<uint64_t>(5);
                                 w.Put<uint32_t>(2);
                                 w.Put<uint64_t>(1);
                                 w.Put<uint64_t>(2);
                               }),
                   Code::kInvalidArgument});
  cases.push_back({"applied pushes without their count", wire::MsgType::kShardAppliedWrite,
                   shard_frame("t", 0, [](wire::Writer& w) { w.Put<uint64_t>(5); }), Code::kInvalidArgument});
  cases.push_back({"applied pushes without an operation", wire::MsgType::kShardAppliedWrite, shard_frame("t", 0, nullptr),
                   Code::kInvalidArgument});
  cases.push_back({"applied pushes sealing no copy of that operation", wire::MsgType::kShardAppliedWrite,
                   shard_frame("t", 0, [](wire::Writer& w) { w.Put<uint64_t>(5), w.Put<uint32_t>(0); }),
                   Code::kFailedPrecondition});
  for (auto& c : cases) {
    Status s = Call(c.type, c.payload);
    EXPECT_EQ(s.code(), c.want) << c.what << ": " << s.ToString();
    EXPECT_FALSE(s.message().empty()) << c.what;
  }
  EXPECT_EQ(Value(1), 0.0f);  // None of them changed a row...
  std::vector<float> g(4, 1.0f);
  auto t = client_->OpenTable("t");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE((*t)->Push(std::vector<uint64_t>{1}, g.data()).ok()) << "...or left the shard frozen";
  ExpectStillServing();
}

TEST_F(RawFrameTest, APushWithAStaleShardMapIsReroutedWithoutTheCallerNoticing) {
  auto t = client_->OpenTable("t");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->epoch(), 1u);
  // The table is placed again (a new map at epoch 2) behind the handle's back.
  ASSERT_TRUE(client_->DropTable("t").ok());
  wire::TableInfo info;
  info.schema = Schema("t", OptimizerKind::kSgd, 100, 4);
  info.schema.init.kind = InitKind::kZeros;
  info.epoch = 2;
  info.owners = {0, 0};
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  wire::PutTableInfo(w, info);
  ASSERT_TRUE(Call(wire::MsgType::kCreateTable, p).ok());
  std::vector<float> g(8, 1.0f);
  const Status s = (*t)->Push(std::vector<uint64_t>{5, 80}, g.data());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ((*t)->epoch(), 2u);
  std::vector<float> v(8);
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>{5, 80}, v.data()).ok());
  EXPECT_EQ(v[0], v[4]);
  EXPECT_LT(v[0], 0.0f);  // Applied once through the new map.
  EXPECT_EQ(Value(5), v[0]);
}

TEST_F(RawFrameTest, StaleEpochIsRefusedWithTheCurrentEpoch) {
  std::vector<uint8_t> p;
  wire::Writer w(&p);
  w.PutString("t");
  w.Put<uint32_t>(1);
  w.PutBytes(std::vector<uint64_t>{1}.data(), 8);
  auto id = transport_->Send(conn_, wire::MsgType::kPull, /*epoch=*/7, p);
  ASSERT_TRUE(id.ok());
  Status s = transport_->Wait(*id, client::Clock::now() + std::chrono::seconds(5)).status();
  EXPECT_TRUE(s.IsStaleShardMap()) << s.ToString();
  EXPECT_EQ(s.epoch(), 1u);
}

TEST(ServerLifecycleTest, ADaemonKilledMidRequestGivesThePromptErrorNotAHang) {
  auto server = ServerProcess::Start(0);
  auto c = Connect({server.get()}, /*timeout_ms=*/3000);
  ASSERT_NE(c, nullptr);
  TableSchema s = Schema("t", OptimizerKind::kAdam, 1 << 20, 64);
  ASSERT_TRUE(c->CreateTable(s, 4).ok());
  auto t = c->OpenTable("t");
  ASSERT_TRUE(t.ok());
  std::vector<uint64_t> rows(50000);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i * 17;
  std::vector<float> g(rows.size() * 64, 0.01f);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server->Kill9();
  });
  const auto start = std::chrono::steady_clock::now();
  Status last;
  for (int i = 0; i < 1000 && last.ok(); ++i) last = (*t)->Push(rows, g.data());
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  killer.join();
  EXPECT_FALSE(last.ok());
  EXPECT_TRUE(last.IsUnavailable() || last.code() == Code::kDeadlineExceeded) << last.ToString();
  // Three attempts of at most 3 s each, plus the pushes before the kill.
  EXPECT_LT(waited, 12.0) << last.ToString();
}

TEST(ServerLifecycleTest, SigtermShutsDownCleanly) {
  auto server = ServerProcess::Start(0);
  const int status = server->Stop();
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ServerLifecycleTest, MisnumberedServerListIsRefusedAtConnect) {
  auto a = ServerProcess::Start(0);
  auto b = ServerProcess::Start(1);
  client::ClientOptions o;
  o.servers = {b->address(), a->address()};
  auto c = client::Client::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("--node_id=0"), std::string::npos) << c.status().message();
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// A plain HTTP/1.0 GET on 127.0.0.1; returns the whole response.
std::string HttpGet(uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return "";
  }
  std::string resp;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) resp.append(buf, n);
  close(fd);
  return resp;
}

TEST_F(DataPlaneTest, AdminEndpointServesHealthMetricsAndStatus) {
  ASSERT_TRUE(client_->CreateTable(Schema("m", OptimizerKind::kSgd, 1000, 4), 2).ok());
  auto t = client_->OpenTable("m");
  std::vector<float> g(4, 1.0f), v(4);
  ASSERT_TRUE((*t)->Push(std::vector<uint64_t>{1}, g.data()).ok());
  ASSERT_TRUE((*t)->PullF32(std::vector<uint64_t>{1}, v.data()).ok());
  const std::string health = HttpGet(s0_->admin_port(), "/healthz");
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  const std::string metrics = HttpGet(s0_->admin_port(), "/metrics");
  EXPECT_NE(metrics.find("engram_rows_pushed_total 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("engram_table_rows_touched{table=\"m\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("engram_table_bytes_per_row{table=\"m\"}"), std::string::npos);
  const std::string status = HttpGet(s0_->admin_port(), "/status");
  EXPECT_NE(status.find("\"name\":\"m\""), std::string::npos) << status;
  EXPECT_NE(HttpGet(s0_->admin_port(), "/nope").find("404"), std::string::npos);
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

TEST(MemoryBudgetTest, PushesBeyondTheBudgetAreRefusedAndPullsStillServe) {
  auto server = ServerProcess::Start(0, {"--memory_budget=4K"});
  auto c = Connect({server.get()});
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->CreateTable(Schema("b", OptimizerKind::kSgd, 100000, 8), 1).ok());  // 56 bytes per row.
  auto t = c->OpenTable("b");
  std::vector<float> g(100 * 8, 1.0f);
  std::vector<uint64_t> rows(100);
  Status s;
  uint64_t first = 0;
  for (int i = 0; i < 10 && s.ok(); ++i, first += 100) {
    for (size_t k = 0; k < rows.size(); ++k) rows[k] = first + k;
    s = (*t)->Push(rows, g.data());
  }
  EXPECT_EQ(s.code(), Code::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find("memory budget"), std::string::npos);
  std::vector<float> v(8);
  EXPECT_TRUE((*t)->PullF32(std::vector<uint64_t>{99999}, v.data()).ok());
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// One-sided reads come in two kinds: a mapped arena read with plain loads (seqlock), and
// ucp_get_nbx copies of whole slots (the RDMA path; forced here over shared memory, since this
// machine has no RDMA NIC) validated by version words and checksum. Each test runs both.
class OneSidedTest : public ::testing::TestWithParam<bool> {
 protected:
  bool force_get() const { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Reads, OneSidedTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "RmaGet" : "Mapped"; });

// Every push adds the same amount to every column of a row (SGD, lr 1, all-ones gradients,
// zero init), so a row whose columns differ was torn.
TEST_P(OneSidedTest, WritersAndOneSidedReadersNeverObserveATornRow) {
  auto server = ServerProcess::Start(0);
  auto writer_client = Connect({server.get()});
  ASSERT_NE(writer_client, nullptr);
  TableSchema s = Schema("hot", OptimizerKind::kSgd, 4096, 66);  // 264-byte rows, as in V4.1-Flash.
  s.init.kind = InitKind::kZeros;
  ASSERT_TRUE(writer_client->CreateTable(s, 2).ok());
  std::vector<uint64_t> rows(32);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i * 127;  // Both shards.
  std::atomic<bool> stop{false};
  std::atomic<int> pushes{0};
  std::thread writer([&] {
    auto t = writer_client->OpenTable("hot");
    ASSERT_TRUE(t.ok());
    std::vector<float> g(rows.size() * 66, 1.0f);
    while (!stop) {
      ASSERT_TRUE((*t)->Push(rows, g.data()).ok());
      pushes++;
    }
  });
  auto reader_client = Connect({server.get()}, 5000, force_get());
  ASSERT_NE(reader_client, nullptr);
  auto t = reader_client->OpenTable("hot");
  ASSERT_TRUE(t.ok());
  std::vector<float> v(rows.size() * 66);
  int torn_rows = 0, reads = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < until || pushes < 20) {
    ASSERT_TRUE((*t)->PullF32(rows, v.data()).ok());
    for (size_t r = 0; r < rows.size(); ++r) {
      for (int c = 1; c < 66; ++c) {
        if (v[r * 66 + c] != v[r * 66]) {
          ++torn_rows;
          break;
        }
      }
    }
    ++reads;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(torn_rows, 0);
  const auto st = reader_client->stats();
  // Every row was read one-sidedly, or (after repeated torn copies) by the RPC fallback.
  EXPECT_EQ(st.rows_one_sided + st.rows_rpc, uint64_t(reads) * rows.size());
  EXPECT_GT(st.rows_one_sided, st.rows_rpc) << "torn copies " << st.torn_copies;
  EXPECT_EQ(st.rows_rma_get, force_get() ? st.rows_one_sided : 0u);
  EXPECT_GT(pushes.load(), 0);
  // The final state after the writer stopped: every row got exactly `pushes` updates.
  ASSERT_TRUE((*t)->PullF32(rows, v.data()).ok());
  for (size_t r = 0; r < rows.size(); ++r) EXPECT_EQ(v[r * 66], -float(pushes.load())) << r;
}

TEST_P(OneSidedTest, OneSidedAndRpcReadsReturnTheSameValues) {
  auto server = ServerProcess::Start(0);
  client::ClientOptions o;
  o.servers = {server->address()};
  o.one_sided = false;
  auto rpc = client::Client::Connect(o);
  ASSERT_TRUE(rpc.ok());
  auto direct = Connect({server.get()}, 5000, force_get());
  ASSERT_TRUE((*rpc)->CreateTable(Schema("t", OptimizerKind::kAdam, 5000, 8), 4).ok());
  auto tr = (*rpc)->OpenTable("t");
  auto td = direct->OpenTable("t");
  std::vector<uint64_t> rows = {1, 4999, 2500, 1};
  std::vector<float> g(rows.size() * 8, 0.5f), a(rows.size() * 8), b(rows.size() * 8);
  ASSERT_TRUE((*tr)->Push(std::vector<uint64_t>{4999}, g.data()).ok());
  ASSERT_TRUE((*tr)->PullF32(rows, a.data()).ok());
  ASSERT_TRUE((*td)->PullF32(rows, b.data()).ok());
  EXPECT_EQ(a, b);  // Touched rows and untouched (initial) rows agree between the paths.
  EXPECT_EQ((*rpc)->stats().rows_one_sided, 0u);
  EXPECT_GT((*rpc)->stats().rows_rpc, 0u);
  EXPECT_EQ(direct->stats().rows_rpc, 0u);
  EXPECT_EQ(direct->stats().rows_one_sided, 4u);  // One-sided reads do not de-duplicate: row 1 is read twice.
  EXPECT_EQ(direct->stats().rows_rma_get, force_get() ? 4u : 0u);
}

// A table 8x its DRAM budget (cold tier under --data_dir): rows in DRAM are read one-sidedly from
// the row cache's sets, the rest by RPC, while a writer keeps reusing slots. Row r always holds
// (r, c, c, ..., c) for a write counter c, so a reader would notice another row's bytes, a torn
// row, or a value older than one it saw in an earlier pull.
TEST_P(OneSidedTest, ColdTierRowsAreReadOneSidedWhenResidentAndNeverFromAReusedSlot) {
  auto server = ServerProcess::Start(0);
  auto writer_client = Connect({server.get()});
  ASSERT_NE(writer_client, nullptr);
  constexpr uint32_t kDim = 66;
  TableSchema s = Schema("cold", OptimizerKind::kSgd, 4096, kDim);
  s.init.kind = InitKind::kZeros;
  s.dram_bytes = 512 * storage::RowCache::BytesPerSlot(s.value_bytes(), storage::OptimizerStateBytes(s.optimizer, kDim));
  ASSERT_TRUE(writer_client->CreateTable(s, 2).ok());
  constexpr uint64_t kHot = 64;  // Rows in play: 4 ways' worth of each shard's sets, so slots churn.
  std::atomic<bool> stop{false};
  std::atomic<int> puts{0};
  std::thread writer([&] {
    auto t = writer_client->OpenTable("cold");
    ASSERT_TRUE(t.ok());
    std::mt19937_64 rng(5);
    std::vector<float> v(kDim);
    for (int c = 1; !stop || c < 200; ++c) {
      const uint64_t row = (rng() % kHot) * 61 % s.num_rows;
      v[0] = static_cast<float>(row);
      std::fill(v.begin() + 1, v.end(), static_cast<float>(c));
      ASSERT_TRUE((*t)->Put(std::vector<uint64_t>{row}, reinterpret_cast<const uint8_t*>(v.data())).ok());
      puts++;
    }
  });
  auto reader_client = Connect({server.get()}, 5000, force_get());
  ASSERT_NE(reader_client, nullptr);
  auto t = reader_client->OpenTable("cold");
  ASSERT_TRUE(t.ok());
  std::vector<uint64_t> rows(kHot);
  for (uint64_t i = 0; i < kHot; ++i) rows[i] = i * 61 % s.num_rows;
  std::vector<float> v(rows.size() * kDim), last(rows.size(), 0.0f);
  int bad = 0, reads = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < until || puts < 200) {
    ASSERT_TRUE((*t)->PullF32(rows, v.data()).ok());
    for (size_t r = 0; r < rows.size(); ++r) {
      const float* x = v.data() + r * kDim;
      bool ok = (x[1] == 0.0f || x[0] == static_cast<float>(rows[r])) && x[1] >= last[r];
      for (uint32_t c = 2; c < kDim; ++c) ok = ok && x[c] == x[1];
      if (!ok && bad++ < 3) ADD_FAILURE() << "row " << rows[r] << " read (" << x[0] << ", " << x[1] << ") after " << last[r];
      last[r] = x[1];
    }
    ++reads;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(bad, 0) << "of " << reads << " pulls";
  const auto st = reader_client->stats();
  EXPECT_GT(st.rows_one_sided, 0u) << "resident rows must be read from the row cache's DRAM";
  EXPECT_GT(st.rows_rpc, 0u) << "rows not in DRAM must go to the server";
  EXPECT_EQ(st.rows_rma_get, force_get() ? st.rows_one_sided : 0u);
  // At rest, the one-sided client and an RPC-only one agree on every row of the table.
  client::ClientOptions o;
  o.servers = {server->address()};
  o.one_sided = false;
  auto rpc = client::Client::Connect(o);
  ASSERT_TRUE(rpc.ok());
  auto tr = (*rpc)->OpenTable("cold");
  std::vector<uint64_t> all(s.num_rows);
  for (uint64_t r = 0; r < s.num_rows; ++r) all[r] = r;
  std::vector<float> a(all.size() * kDim), b(a.size());
  ASSERT_TRUE((*tr)->PullF32(all, a.data()).ok());
  ASSERT_TRUE((*t)->PullF32(all, b.data()).ok());
  EXPECT_EQ(a, b);
}

// The RMA endpoint has no peer error handling (it would lose the shared-memory lanes), so a
// server that dies under one-sided reads must still give a prompt error, never a hang.
TEST_P(OneSidedTest, ADaemonKilledUnderOneSidedReadsGivesAPromptErrorNotAHang) {
  auto server = ServerProcess::Start(0);
  auto c = Connect({server.get()}, /*timeout_ms=*/2000, force_get());
  ASSERT_NE(c, nullptr);
  TableSchema schema = Schema("t", OptimizerKind::kSgd, 1 << 16, 64);
  schema.init.kind = InitKind::kZeros;
  ASSERT_TRUE(c->CreateTable(schema, 2).ok());
  auto t = c->OpenTable("t");
  ASSERT_TRUE(t.ok());
  std::vector<uint64_t> rows(4096);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i * 13 % (1 << 16);
  std::vector<float> v(rows.size() * 64);
  std::vector<float> g(64, 1.0f);
  ASSERT_TRUE((*t)->Push(std::vector<uint64_t>{rows[0]}, g.data()).ok());  // One touched row.
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server->Kill9();
  });
  const auto start = std::chrono::steady_clock::now();
  Status last;
  // Reads keep working until the kill; afterwards a push (always through the server) fails.
  for (int i = 0; i < 100000 && last.ok(); ++i) {
    last = (*t)->PullF32(rows, v.data());
    if (last.ok() && i % 16 == 15) last = (*t)->Push(std::vector<uint64_t>{rows[1]}, g.data());
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  killer.join();
  EXPECT_FALSE(last.ok());
  EXPECT_TRUE(last.IsUnavailable() || last.code() == Code::kDeadlineExceeded) << last.ToString();
  EXPECT_LT(waited, 10.0) << last.ToString();
  EXPECT_EQ(v[0], v[63]);  // The touched row read before the failure is whole.
}

}  // namespace
}  // namespace engram
