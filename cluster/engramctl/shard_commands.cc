// engramctl move-shard / drain-node / add-node / rebalance: live shard administration.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client.h"
#include "cluster/cluster_state.h"
#include "cluster/engramctl/commands.h"
#include "cluster/etcd_client.h"
#include "cluster/membership.h"
#include "cluster/shard_mover.h"

namespace engram::ctl {
namespace {

// Ctrl-C: the move in progress aborts before its flip. A signal handler can only reach a
// variable with static storage; this one is the command's and nobody else's.
std::atomic<bool> g_interrupted{false};
void OnSigint(int) { g_interrupted.store(true); }

// The nodes shards may go to: the live daemons of the etcd cluster, or every --servers entry.
StatusOr<std::vector<uint32_t>> Nodes(const CtlFlags& f, client::Client& c, cluster::EtcdClient* etcd) {
  std::vector<uint32_t> nodes;
  if (etcd != nullptr) {
    ENGRAM_ASSIGN_OR_RETURN(auto live, cluster::Membership::List(*etcd, f.cluster));
    for (const auto& n : live) nodes.push_back(n.node_id);
  } else {
    for (uint32_t n = 0; n < c.num_servers(); ++n) nodes.push_back(n);
  }
  return nodes;
}

void Bar(const cluster::MoveProgress& p, const std::string& table) {
  const double frac = p.shard_rows == 0 ? 1.0 : static_cast<double>(p.cursor) / static_cast<double>(p.shard_rows);
  const int width = 30, done = static_cast<int>(frac * width);
  std::fprintf(stderr, "\r%s shard %u: node %u -> %u [%s%s] %3.0f%% %-6s %llu rows", table.c_str(), p.shard, p.from, p.to,
               std::string(done, '=').c_str(), std::string(width - done, ' ').c_str(), frac * 100, p.phase,
               static_cast<unsigned long long>(p.rows_copied));
  if (std::string(p.phase) == "done") std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace

int RunShardCommand(const std::string& cmd, const CtlFlags& f) {
  auto c = Open(f, false);
  if (!c.ok()) return Fail(cmd, c.status());
  std::unique_ptr<cluster::EtcdClient> etcd;
  std::unique_ptr<cluster::ClusterState> state;
  if (!f.etcd.empty()) {
    auto e = OpenEtcd(f);
    if (!e.ok()) return Fail(cmd, e.status());
    etcd = std::move(e).value();
    state = std::make_unique<cluster::ClusterState>(etcd.get(), f.cluster);
  }
  cluster::ShardMover mover(c->get(), state.get());
  auto nodes = Nodes(f, **c, etcd.get());
  if (!nodes.ok()) return Fail(cmd, nodes.status());

  // The tables to act on: --table, or every table.
  std::vector<std::string> tables;
  if (!f.table.empty()) {
    tables.push_back(f.table);
  } else {
    auto list = (*c)->ListTables();
    if (!list.ok()) return Fail(cmd, list.status());
    for (const auto& t : *list) tables.push_back(t.schema.name);
  }
  // The plan: (table, move) pairs.
  std::vector<std::pair<std::string, cluster::ShardMove>> plan;
  if (cmd == "move-shard") {
    if (f.table.empty() || f.shard < 0 || f.to < 0) {
      return Fail(cmd, Status::InvalidArgument("--table, --shard and --to are required"));
    }
    plan.push_back({f.table, {static_cast<uint32_t>(f.shard), static_cast<uint32_t>(f.to)}});
  } else {
    if ((cmd == "drain-node" || cmd == "add-node") && f.node < 0) {
      return Fail(cmd, Status::InvalidArgument("--node is required"));
    }
    const uint32_t node = static_cast<uint32_t>(f.node);
    bool known = false;
    for (uint32_t n : *nodes) known |= n == node;
    if (cmd == "add-node" && !known) {
      return Fail(cmd, Status::FailedPrecondition("node " + std::to_string(node) +
                                                  " is not live (start its daemon first, with --etcd and the same --cluster)"));
    }
    if (cmd == "add-node") {
      // A daemon that just joined learns the cluster's tables from etcd within a second or two.
      for (const auto& t : tables) {
        Status st;
        for (int i = 0; i < 100; ++i) {
          st = (*c)->AdminCall(static_cast<int>(node), wire::MsgType::kDescribeTable, [&] {
                      std::vector<uint8_t> p;
                      wire::Writer w(&p);
                      w.PutString(t);
                      return p;
                    }()).status();
          if (st.ok()) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        if (!st.ok()) return Fail(cmd, st.WithContext("node " + std::to_string(node) + " does not know table '" + t + "' yet"));
      }
    }
    for (const auto& t : tables) {
      auto info = mover.Table(t);
      if (!info.ok()) return Fail(cmd, info.status());
      const auto moves = cmd == "drain-node" ? cluster::ShardMover::PlanDrain(info->owners, node, *nodes)
                                             : cluster::ShardMover::PlanRebalance(info->owners, *nodes);
      for (const auto& m : moves) plan.push_back({t, m});
    }
    if (cmd != "move-shard" && cmd != "drain-node" && cmd != "add-node" && cmd != "rebalance") {
      return Fail(cmd, Status::InvalidArgument("unknown command"));
    }
  }
  std::signal(SIGINT, OnSigint);
  nlohmann::json done = nlohmann::json::array();
  for (const auto& [table, m] : plan) {
    cluster::MoveOptions o;
    o.cancel = &g_interrupted;
    uint64_t rows = 0;
    uint32_t from = 0;
    o.progress = [&, t = table](const cluster::MoveProgress& p) {
      rows = p.rows_copied;
      from = p.from;
      if (!f.json) Bar(p, t);
    };
    auto epoch = mover.Move(table, m.shard, m.to, o);
    if (!epoch.ok()) {
      if (!f.json) std::fprintf(stderr, "\n");
      if (g_interrupted.load()) {
        std::cerr << "engramctl " << cmd << ": interrupted; " << done.size() << " of " << plan.size()
                  << " moves completed, the one in progress was aborted (nothing of it changed)\n";
        if (f.json) std::cout << nlohmann::json{{"moves", done}, {"interrupted", true}}.dump() << "\n";
        return 130;
      }
      return Fail(cmd, epoch.status());
    }
    done.push_back({{"table", table}, {"shard", m.shard}, {"from", from}, {"to", m.to}, {"epoch", *epoch}, {"rows", rows}});
  }
  if (f.json) {
    std::cout << nlohmann::json{{"moves", done}}.dump() << "\n";
  } else {
    std::cout << done.size() << " shard move(s) done" << (plan.empty() ? " (nothing to move)" : "") << "\n";
  }
  return 0;
}

}  // namespace engram::ctl
