// A restarted daemon's step down: see rejoin.h.
#include "cluster/rejoin.h"

#include <optional>

namespace engram::cluster {

RejoinPlan PlanRejoin(const wire::TableInfo& info, uint32_t self, const std::set<uint32_t>& up) {
  RejoinPlan plan{info.owners, info.backups, {}, {}, {}};
  plan.backups.resize(plan.owners.size(), kNoNode);
  for (uint32_t sh = 0; sh < plan.owners.size(); ++sh) {
    uint32_t& owner = plan.owners[sh];
    uint32_t& backup = plan.backups[sh];
    if (owner == self) {
      if (backup != kNoNode && backup != self && up.count(backup)) {
        owner = backup;
        backup = kNoNode;
        plan.handed_off.push_back(sh);
      } else {
        plan.kept.push_back(sh);
      }
    } else if (backup == self) {
      backup = kNoNode;
      plan.dropped.push_back(sh);
    }
  }
  return plan;
}

namespace {

// One table's step down: read, plan, compare-and-swap, again while others change it first.
StatusOr<std::optional<RejoinOutcome>> StepDown(ClusterState& state, const std::string& name, const std::set<uint32_t>& up,
                                                uint32_t self, const std::function<void(const wire::TableInfo&)>& announce) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    ENGRAM_ASSIGN_OR_RETURN(auto rec, state.GetTable(name));
    if (!rec.has_value()) return std::optional<RejoinOutcome>{};  // Dropped meanwhile.
    const wire::TableInfo& info = rec->info;
    RejoinPlan plan = PlanRejoin(info, self, up);
    RejoinOutcome out{name, info.epoch, plan.handed_off, plan.dropped, plan.kept};
    if (!plan.changes()) {
      if (out.kept.empty()) return std::optional<RejoinOutcome>{};
      return std::optional<RejoinOutcome>{std::move(out)};
    }
    auto next = state.SetMap(name, plan.owners, plan.backups, rec->mod_revision);
    if (next.status().code() == Code::kAborted) continue;
    ENGRAM_RETURN_IF_ERROR(next.status());
    announce(*next);
    out.epoch = next->epoch;
    return std::optional<RejoinOutcome>{std::move(out)};
  }
  return Status::Unavailable("table '" + name + "' keeps changing; cannot step down from it");
}

}  // namespace

StatusOr<std::vector<RejoinOutcome>> StepDownOnRestart(ClusterState& state, const std::set<uint32_t>& up, uint32_t self,
                                                       const std::function<void(const wire::TableInfo&)>& announce) {
  ENGRAM_ASSIGN_OR_RETURN(auto tables, state.ListTables());
  std::vector<RejoinOutcome> outcomes;
  for (const TableRecord& rec : tables) {
    ENGRAM_ASSIGN_OR_RETURN(auto out, StepDown(state, rec.info.schema.name, up, self, announce));
    if (out) outcomes.push_back(std::move(*out));
  }
  return outcomes;
}

}  // namespace engram::cluster
