// etcd client, membership and fencing against a real etcd and real engram-server daemons.
#include "cluster/membership.h"

#include "cluster/cluster_state.h"

#include <sys/wait.h>

#include <cstdio>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../testing/ctl.h"
#include "../testing/etcd_process.h"
#include "../testing/eventually.h"
#include "../testing/server_process.h"
#include "client/client.h"

namespace engram {
namespace {

using cluster::EtcdClient;
using cluster::Membership;
using testing::EtcdProcess;
using testing::ServerProcess;

std::unique_ptr<EtcdClient> Etcd(const EtcdProcess& e) {
  EtcdClient::Options o;
  o.endpoint = e.endpoint();
  auto c = EtcdClient::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

using testing::Eventually;

TEST(Base64Test, RoundTripsEveryByteAndRejectsGarbage) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += char(i);
  for (size_t n : {0, 1, 2, 3, 4, 255, 256}) {
    const std::string s = all.substr(0, n);
    auto back = cluster::Base64Decode(cluster::Base64Encode(s));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, s) << n;
  }
  EXPECT_EQ(cluster::Base64Encode("foo"), "Zm9v");
  EXPECT_FALSE(cluster::Base64Decode("Zm9").ok());
  EXPECT_FALSE(cluster::Base64Decode("Zm!v").ok());
}

TEST(EtcdClientTest, KeysCompareAndSwapAndLeases) {
  auto etcd = EtcdProcess::Start();
  auto c = Etcd(*etcd);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Put("/t/a", "1").ok());
  ASSERT_TRUE(c->Put("/t/b", std::string("\0\xff", 2)).ok());
  ASSERT_TRUE(c->Put("/u/c", "3").ok());
  auto a = c->Get("/t/a");
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->value, "1");
  EXPECT_FALSE(c->Get("/t/missing")->has_value());
  auto p = c->Prefix("/t/");
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[1].value, std::string("\0\xff", 2));
  // Compare-and-swap on the mod revision; 0 means "only if absent".
  EXPECT_FALSE(*c->PutIf("/t/a", "2", 0));
  EXPECT_TRUE(*c->PutIf("/t/a", "2", (*a)->mod_revision));
  EXPECT_FALSE(*c->PutIf("/t/a", "3", (*a)->mod_revision));
  EXPECT_TRUE(*c->PutIf("/t/new", "x", 0));
  EXPECT_TRUE(*c->Delete("/t/new"));
  EXPECT_FALSE(*c->Delete("/t/new"));
  // A key under a lease that is not renewed goes when the lease expires.
  auto lease = c->GrantLease(2);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(c->Put("/t/leased", "v", *lease).ok());
  EXPECT_GT(*c->KeepAlive(*lease), 0);
  EXPECT_TRUE(Eventually(6, [&] { return !c->Get("/t/leased")->has_value(); }));
  EXPECT_EQ(c->KeepAlive(*lease).status().code(), Code::kNotFound);
}

TEST(EtcdClientTest, AnUnreachableEtcdIsAPromptError) {
  EtcdClient::Options o;
  o.endpoint = "127.0.0.1:1";  // Nothing listens there.
  o.timeout = std::chrono::milliseconds(500);
  const auto t0 = std::chrono::steady_clock::now();
  auto c = EtcdClient::Connect(o);
  EXPECT_TRUE(c.status().IsUnavailable()) << c.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
}

TEST(MembershipTest, DaemonsJoinAndLeaveAndANodeIdIsHeldByOneDaemon) {
  auto etcd = EtcdProcess::Start();
  const std::vector<std::string> flags = {"--etcd=" + etcd->endpoint(), "--cluster=c1", "--lease_ttl_s=2"};
  auto s0 = ServerProcess::Start(0, flags);
  auto s1 = ServerProcess::Start(1, flags);
  auto c = Etcd(*etcd);
  auto nodes = Membership::List(*c, "c1");
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].data_address, s0->address());
  EXPECT_EQ((*nodes)[1].data_address, s1->address());
  EXPECT_EQ((*nodes)[1].admin_address, "127.0.0.1:" + std::to_string(s1->admin_port()));
  // engramctl status shows the same.
  const std::string cmd = std::string(ENGRAMCTL_PATH) + " status --etcd=" + etcd->endpoint() + " --cluster=c1 --json";
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[4096] = {};
  const size_t got = fread(buf, 1, sizeof(buf) - 1, f);
  EXPECT_EQ(pclose(f), 0);
  const auto status = nlohmann::json::parse(std::string(buf, got), nullptr, false);
  ASSERT_TRUE(status.is_object()) << buf;
  EXPECT_EQ(status["nodes"].size(), 2u);
  // A second daemon with node id 1 is refused while the first holds it.
  EXPECT_THROW(ServerProcess::Start(1, flags), std::runtime_error);
  // kill -9: the lease expires and the node leaves; SIGTERM: it leaves at once.
  s1->Kill9();
  EXPECT_TRUE(Eventually(6, [&] { return Membership::List(*c, "c1")->size() == 1; }));
  ASSERT_EQ(s0->Stop(), 0);
  EXPECT_TRUE(Eventually(1, [&] { return Membership::List(*c, "c1")->empty(); }));
}

TEST(MembershipTest, ADaemonThatCannotRenewItsLeaseFencesWritesUntilItCan) {
  auto etcd = EtcdProcess::Start();
  auto server = ServerProcess::Start(0, {"--etcd=" + etcd->endpoint(), "--lease_ttl_s=2"});
  client::ClientOptions o;
  o.servers = {server->address()};
  o.max_attempts = 1;
  o.one_sided = false;  // Reads by RPC: the daemon decides whether it serves them.
  auto c = client::Client::Connect(o);
  ASSERT_TRUE(c.ok());
  TableSchema s;
  s.name = "t";
  s.num_rows = 100;
  s.dim = 4;
  s.optimizer.kind = OptimizerKind::kSgd;
  ASSERT_TRUE((*c)->CreateTable(s, 1).ok());
  auto t = (*c)->OpenTable("t");
  std::vector<float> g(4, 1.0f);
  const std::vector<uint64_t> row = {7};
  ASSERT_TRUE((*t)->Push(row, g.data()).ok());
  etcd->Pause();  // The daemon can no longer renew: within the TTL it must stop taking writes.
  Status fenced;
  EXPECT_TRUE(Eventually(4, [&] { return (fenced = (*t)->Push(row, g.data())).IsUnavailable(); }));
  EXPECT_NE(fenced.message().find("fenced"), std::string::npos) << fenced.ToString();
  std::vector<float> v(4);
  EXPECT_TRUE((*t)->PullF32(row, v.data()).ok());  // Reads still work while the lease may hold,
  // but not once it has surely expired (another node may serve the shards by then).
  Status unread;
  EXPECT_TRUE(Eventually(4, [&] { return (unread = (*t)->PullF32(row, v.data())).IsUnavailable(); }));
  EXPECT_NE(unread.message().find("no etcd lease"), std::string::npos) << unread.ToString();
  etcd->Resume();
  EXPECT_TRUE(Eventually(8, [&] { return (*t)->Push(row, g.data()).ok(); }));
  EXPECT_TRUE((*t)->PullF32(row, v.data()).ok());
}

// A record of table "emb" (1000 rows of dim 8) with these owners and backups.
wire::TableInfo EmbRecord(std::vector<uint32_t> owners, std::vector<uint32_t> backups = {}) {
  wire::TableInfo info;
  info.schema.name = "emb";
  info.schema.num_rows = 1000;
  info.schema.dim = 8;
  info.owners = std::move(owners);
  info.backups = std::move(backups);
  return info;
}

TEST(ClusterStateTest, TableRecordsChangeByCompareAndSwapWithRisingEpochs) {
  auto etcd = EtcdProcess::Start();
  auto c = Etcd(*etcd);
  cluster::ClusterState state(c.get(), "c");
  const wire::TableInfo info = EmbRecord({0, 1, 0, 1});
  ASSERT_TRUE(state.CreateTable(info).ok());
  EXPECT_EQ(state.CreateTable(info).code(), Code::kAlreadyExists);
  auto rec = state.GetTable("emb");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->info.epoch, 1u);
  EXPECT_EQ((*rec)->info.schema.dim, 8u);
  auto epoch = state.SetOwners("emb", {1, 1, 0, 0}, (*rec)->mod_revision);
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  EXPECT_EQ(*epoch, 2u);
  // A second writer that read the old record loses, whatever it wanted.
  EXPECT_EQ(state.SetOwners("emb", {0, 0, 0, 0}, (*rec)->mod_revision).status().code(), Code::kAborted);
  auto now = state.GetTable("emb");
  EXPECT_EQ((*now)->info.owners, (std::vector<uint32_t>{1, 1, 0, 0}));
  EXPECT_EQ(state.SetOwners("emb", {0}, (*now)->mod_revision).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(state.ListTables()->size(), 1u);
  ASSERT_TRUE(state.DropTable("emb").ok());
  EXPECT_EQ(state.DropTable("emb").code(), Code::kNotFound);
  EXPECT_FALSE(state.GetTable("emb")->has_value());
}

// A failover decided on a membership list read before a node registered again must not take
// that node's shards: the node caught up with the records when it registered and serves them.
TEST(ClusterStateTest, AFailoverIsRefusedOnceTheDeadNodeRegisteredAgain) {
  auto etcd = EtcdProcess::Start();
  auto c = Etcd(*etcd);
  cluster::ClusterState state(c.get(), "cf");
  ASSERT_TRUE(state.CreateTable(EmbRecord({0, 1}, {1, 0})).ok());
  auto rec = state.GetTable("emb");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  // Node 0 is back (its key exists): promoting shard 0's backup is refused, nothing changes.
  ASSERT_TRUE(c->Put(state.NodeKey(0), "{}").ok());
  auto refused = state.SetMap("emb", {1, 1}, {cluster::kNoNode, cluster::kNoNode}, (*rec)->mod_revision, {0});
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("node 0 registered again"), std::string::npos);
  EXPECT_EQ((*state.GetTable("emb"))->info.epoch, 1u);
  // Gone again: the same change is made.
  ASSERT_TRUE(c->Delete(state.NodeKey(0)).ok());
  auto made = state.SetMap("emb", {1, 1}, {cluster::kNoNode, cluster::kNoNode}, (*rec)->mod_revision, {0});
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(made->epoch, 2u);
  EXPECT_EQ(made->owners, (std::vector<uint32_t>{1, 1}));
}

TEST(ClusterStateTest, OneDaemonLeadsAndAnotherTakesOverWhenItDies) {
  auto etcd = EtcdProcess::Start();
  const std::vector<std::string> flags = {"--etcd=" + etcd->endpoint(), "--cluster=c2", "--lease_ttl_s=2"};
  auto s0 = ServerProcess::Start(0, flags);
  auto s1 = ServerProcess::Start(1, flags);
  auto c = Etcd(*etcd);
  cluster::ClusterState state(c.get(), "c2");
  auto leader = state.Leader();
  ASSERT_TRUE(leader.ok() && leader->has_value());
  EXPECT_EQ(**leader, 0u);  // The first to join.
  s0->Kill9();
  EXPECT_TRUE(Eventually(8, [&] {
    auto l = state.Leader();
    return l.ok() && l->has_value() && **l == 1u;
  }));
}

using testing::RunCtl;
constexpr auto& Ctl = RunCtl;

TEST(ClusterStateTest, EngramctlFindsTheDaemonsInEtcdAndRecordsTablesThere) {
  auto etcd = EtcdProcess::Start();
  const std::vector<std::string> flags = {"--etcd=" + etcd->endpoint(), "--cluster=c3", "--lease_ttl_s=2"};
  auto s0 = ServerProcess::Start(0, flags);
  auto s1 = ServerProcess::Start(1, flags);
  auto c = Etcd(*etcd);
  auto servers = cluster::DiscoverServers(*c, "c3");
  ASSERT_TRUE(servers.ok()) << servers.status().ToString();
  EXPECT_EQ(*servers, (std::vector<std::string>{s0->address(), s1->address()}));
  const std::string at = "--etcd=" + etcd->endpoint() + " --cluster=c3";
  ASSERT_EQ(Ctl("create-table " + at + " --name=t --rows=100 --dim=2 --optimizer=sgd --lr=1 --init=zeros --shards=4").first, 0);
  cluster::ClusterState state(c.get(), "c3");
  auto rec = state.GetTable("t");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->info.epoch, 1u);
  EXPECT_EQ((*rec)->info.owners, (std::vector<uint32_t>{0, 1, 0, 1}));
  const std::string grads = ::testing::TempDir() + "/membership_grads.json";
  std::FILE* g = std::fopen(grads.c_str(), "w");
  std::fputs("[[1,1],[2,2]]", g);
  std::fclose(g);
  ASSERT_EQ(Ctl("push " + at + " --table=t --rows=3,90 --grads=" + grads).first, 0);
  const auto got = Ctl("get " + at + " --table=t --rows=3,90 --json");
  ASSERT_EQ(got.first, 0);
  EXPECT_EQ(nlohmann::json::parse(got.second)["values"], nlohmann::json::parse("[[-1,-1],[-2,-2]]"));
  ASSERT_EQ(Ctl("drop-table " + at + " --name=t").first, 0);
  EXPECT_FALSE(state.GetTable("t")->has_value());
  // Node 0 gone (its lease expired): engramctl still connects through etcd and uses node 1;
  // what needs node 0 fails with an error that names it.
  ASSERT_EQ(Ctl("create-table " + at + " --name=u --rows=100 --dim=2 --optimizer=sgd --lr=1 --init=zeros --shards=4 --replicas=1").first, 0);
  s0->Kill9();
  EXPECT_TRUE(Eventually(6, [&] {
    auto s = cluster::DiscoverServers(*c, "c3");
    return s.ok() && *s == std::vector<std::string>{"", s1->address()};
  }));
  const auto listed = Ctl("list " + at);
  EXPECT_EQ(listed.first, 0) << listed.second;
  const auto status = Ctl("status " + at + " --json");
  EXPECT_EQ(status.first, 0) << status.second;
  const std::string get0 = "get " + at + " --table=u --rows=0 --json --timeout_ms=1000";  // Shard 0 has no backup.
  EXPECT_NE(Ctl(get0).first, 0);
  const auto said = Ctl(get0 + " 2>&1 | cat");  // Its error message, on stdout.
  EXPECT_NE(said.second.find("node 0: no live daemon"), std::string::npos) << said.second;
  const auto on_node1 = Ctl("get " + at + " --table=u --rows=30 --json");
  EXPECT_EQ(on_node1.first, 0) << on_node1.second;

  // A client connected while node 0 was down reaches it once it is back (it asks the cluster).
  client::ClientOptions o;
  o.servers = *cluster::DiscoverServers(*c, "c3");
  o.timeout = std::chrono::milliseconds(1000);
  auto late = client::Client::Connect(o);
  ASSERT_TRUE(late.ok()) << late.status().ToString();
  auto u = (*late)->OpenTable("u");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  std::vector<float> v(2);
  EXPECT_TRUE((*u)->PullF32(std::vector<uint64_t>{30}, v.data()).ok());
  EXPECT_FALSE((*u)->PullF32(std::vector<uint64_t>{0}, v.data()).ok());
  s0->Restart();
  EXPECT_TRUE(Eventually(10, [&] { return (*u)->PullF32(std::vector<uint64_t>{0}, v.data()).ok(); }));
}

}  // namespace
}  // namespace engram
