// engramctl status: the cluster as etcd records it (the daemons holding a live lease).
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "cluster/engramctl/commands.h"
#include "cluster/cluster_state.h"
#include "cluster/etcd_client.h"
#include "cluster/membership.h"

namespace engram::ctl {

int RunStatus(const std::string& etcd, const std::string& cluster_name, bool json, int timeout_ms) {
  if (etcd.empty()) {
    std::cerr << "engramctl status: --etcd=HOST:PORT is required (single-node daemons have no cluster state; "
                 "use engramctl stats --servers=...)\n";
    return 2;
  }
  cluster::EtcdClient::Options o;
  o.endpoint = etcd;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  auto c = cluster::EtcdClient::Connect(o);
  if (!c.ok()) {
    std::cerr << "engramctl status: " << c.status().ToString() << "\n";
    return 1;
  }
  auto nodes = cluster::Membership::List(**c, cluster_name);
  if (!nodes.ok()) {
    std::cerr << "engramctl status: " << nodes.status().ToString() << "\n";
    return 1;
  }
  cluster::ClusterState state(c->get(), cluster_name);
  auto leader = state.Leader();
  auto tables = state.ListTables();
  if (!leader.ok() || !tables.ok()) {
    std::cerr << "engramctl status: " << (leader.ok() ? tables.status() : leader.status()).ToString() << "\n";
    return 1;
  }
  nlohmann::json out = {{"cluster", cluster_name}, {"etcd", etcd}, {"nodes", nlohmann::json::array()},
                        {"leader", leader->has_value() ? nlohmann::json(**leader) : nlohmann::json(nullptr)},
                        {"tables", nlohmann::json::array()}};
  std::map<uint32_t, bool> live;
  for (const auto& n : *nodes) live[n.node_id] = true;
  for (const auto& t : *tables) {
    std::map<std::string, int> per_node;
    bool healthy = true;  // Every shard on a live node.
    for (uint32_t o : t.info.owners) {
      per_node[std::to_string(o)]++;
      healthy &= live.count(o) > 0;
    }
    std::map<std::string, int> backups_per_node;
    int with_backup = 0;
    for (uint32_t b : t.info.backups) {
      if (b == UINT32_MAX) continue;
      backups_per_node[std::to_string(b)]++;
      ++with_backup;
    }
    out["tables"].push_back({{"name", t.info.schema.name}, {"epoch", t.info.epoch}, {"shards", t.info.owners.size()},
                             {"owners", t.info.owners}, {"backups", t.info.backups}, {"shards_per_node", per_node},
                             {"backups_per_node", backups_per_node}, {"shards_with_backup", with_backup},
                             {"healthy", healthy}});
  }
  for (const auto& n : *nodes) {
    out["nodes"].push_back({{"node", n.node_id}, {"data", n.data_address}, {"admin", n.admin_address},
                            {"lease", std::to_string(n.lease)}});
  }
  if (json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "cluster '" << cluster_name << "' (etcd " << etcd << "): " << nodes->size() << " live node(s)\n";
    for (const auto& n : *nodes) {
      const bool leads = leader->has_value() && **leader == n.node_id;
      std::cout << "  node " << n.node_id << "  data " << n.data_address << "  admin http://" << n.admin_address
                << (leads ? "  (leader)" : "") << "\n";
    }
    for (const auto& t : out["tables"]) {
      std::cout << "  table " << t["name"].get<std::string>() << "  epoch " << t["epoch"] << "  " << t["shards"]
                << " shards" << (t["healthy"].get<bool>() ? "" : "  UNHEALTHY: shards on a node without a lease") << "\n   ";
      for (const auto& [node, n] : t["shards_per_node"].items()) std::cout << " node " << node << ": " << n;
      std::cout << "\n    " << t["shards_with_backup"] << " of " << t["shards"] << " shards have a backup;";
      for (const auto& [node, n] : t["backups_per_node"].items()) std::cout << " node " << node << ": " << n;
      std::cout << "\n";
    }
  }
  return 0;
}

}  // namespace engram::ctl
