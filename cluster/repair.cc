// Repair plans of the placement leader: failover and re-replication.
#include "cluster/repair.h"

#include <map>

namespace engram::cluster {

std::optional<FailoverPlan> PlanFailover(const wire::TableInfo& info, const std::set<uint32_t>& up) {
  FailoverPlan plan{info.owners, info.backups, {}};
  plan.backups.resize(plan.owners.size(), kNoNode);
  std::set<uint32_t> dead;
  for (size_t sh = 0; sh < plan.owners.size(); ++sh) {
    uint32_t& owner = plan.owners[sh];
    uint32_t& backup = plan.backups[sh];
    if (!up.count(owner) && backup != kNoNode && up.count(backup)) {
      dead.insert(owner);
      owner = backup;
      backup = kNoNode;
    } else if (backup != kNoNode && !up.count(backup)) {
      dead.insert(backup);
      backup = kNoNode;
    }
  }
  if (dead.empty()) return std::nullopt;
  plan.dead.assign(dead.begin(), dead.end());
  return plan;
}

std::optional<BackupPlan> NextBackup(const std::vector<TableRecord>& tables, const std::set<uint32_t>& up) {
  for (const TableRecord& rec : tables) {
    const wire::TableInfo& info = rec.info;
    if (info.backups.empty()) continue;  // Not a replicated table.
    std::map<uint32_t, int> load;        // Live candidates and the shards each backs.
    for (uint32_t n : up) load[n] = 0;
    for (uint32_t b : info.backups) {
      if (auto it = load.find(b); it != load.end()) ++it->second;
    }
    for (uint32_t sh = 0; sh < info.owners.size(); ++sh) {
      const bool backed = sh < info.backups.size() && info.backups[sh] != kNoNode;
      if (backed || !up.count(info.owners[sh])) continue;
      std::optional<uint32_t> to;
      for (const auto& [n, c] : load) {
        if (n != info.owners[sh] && (!to || c < load[*to])) to = n;
      }
      if (to) return BackupPlan{info.schema.name, sh, *to};
    }
  }
  return std::nullopt;
}

}  // namespace engram::cluster
