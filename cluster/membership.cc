// Membership: lease, compare-and-swap registration, renewal thread, fencing clock.
#include "cluster/membership.h"

#include "cluster/cluster_state.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace engram::cluster {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string Membership::NodesPrefix(const std::string& cluster) { return "/engram/" + cluster + "/nodes/"; }

StatusOr<std::unique_ptr<Membership>> Membership::Join(const Options& options, const NodeInfo& self) {
  if (options.ttl_s < 2) return Status::InvalidArgument("lease TTL must be at least 2 s");
  if (options.cluster.empty() || options.cluster.find('/') != std::string::npos) {
    return Status::InvalidArgument("cluster name must be non-empty and without '/'");
  }
  ENGRAM_ASSIGN_OR_RETURN(auto etcd, EtcdClient::Connect(options.etcd));
  auto m = std::unique_ptr<Membership>(new Membership(options, self, std::move(etcd)));
  ENGRAM_RETURN_IF_ERROR(m->Register());
  m->Campaign();
  m->renewer_ = std::thread([p = m.get()] { p->RenewLoop(); });
  return m;
}

Status Membership::Register() {
  const int64_t sent = NowNs();
  ENGRAM_ASSIGN_OR_RETURN(int64_t lease, etcd_->GrantLease(options_.ttl_s));
  const std::string key = NodesPrefix(options_.cluster) + std::to_string(self_.node_id);
  const std::string value =
      nlohmann::json{{"node", self_.node_id}, {"data", self_.data_address}, {"admin", self_.admin_address}}.dump();
  ENGRAM_ASSIGN_OR_RETURN(bool taken, etcd_->PutIf(key, value, /*expected_mod_revision=*/0, lease));
  if (!taken) {
    etcd_->Revoke(lease).IgnoreError();
    auto holder = etcd_->Get(key);
    return Status::AlreadyExists("node id " + std::to_string(self_.node_id) + " of cluster '" + options_.cluster +
                                 "' is held by a live daemon (" +
                                 (holder.ok() && holder->has_value() ? (*holder)->value : std::string("?")) +
                                 "); give this one another --node_id or stop the other");
  }
  lease_ = lease;
  renewed_at_ns_ = sent;
  registrations_.fetch_add(1);
  return Status::OK();
}

void Membership::Campaign() {
  ClusterState state(etcd_.get(), options_.cluster);
  auto leads = state.TryLead(self_.node_id, lease_.load());
  if (leads.ok()) leader_ = *leads;  // On an etcd error keep the last answer; live() bounds it.
}

bool Membership::live() const {
  // Counted from when the renewal was sent, with a 1 s margin before etcd could expire it.
  const int64_t margin_ns = (int64_t{options_.ttl_s} * 1000 - 1000) * 1000000;
  return NowNs() - renewed_at_ns_.load() < margin_ns;
}

int64_t Membership::lease_deadline_ns() const {
  // Counted from when the renewal was sent: etcd counts from when it got it, which is later.
  return renewed_at_ns_.load() + int64_t{options_.ttl_s} * 1000000000;
}

bool Membership::lease_may_hold() const { return NowNs() < lease_deadline_ns(); }

void Membership::RenewLoop() {
  const auto period = std::chrono::milliseconds(options_.ttl_s * 1000 / 3);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [&] { return stop_; })) {
    lock.unlock();
    const int64_t sent = NowNs();
    auto ttl = etcd_->KeepAlive(lease_.load());
    if (ttl.ok()) {
      renewed_at_ns_ = sent;
      Campaign();
    } else if (ttl.status().code() == Code::kNotFound) {
      // The lease expired (etcd was unreachable too long): our key went with it. Take the node
      // id again if nobody else did; until then we stay fenced.
      leader_ = false;
      if (Register().ok()) Campaign();
    }
    lock.lock();
  }
}

Membership::~Membership() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
  if (lease_.load() != 0) etcd_->Revoke(lease_.load()).IgnoreError();
}

StatusOr<std::vector<NodeInfo>> Membership::List(EtcdClient& etcd, const std::string& cluster) {
  ENGRAM_ASSIGN_OR_RETURN(auto kvs, etcd.Prefix(NodesPrefix(cluster)));
  std::vector<NodeInfo> out;
  for (const auto& kv : kvs) {
    const auto j = nlohmann::json::parse(kv.value, nullptr, false);
    if (!j.is_object()) continue;  // Not ours to read.
    NodeInfo n;
    n.node_id = j.value("node", 0u);
    n.data_address = j.value("data", "");
    n.admin_address = j.value("admin", "");
    n.lease = kv.lease;
    out.push_back(std::move(n));
  }
  std::sort(out.begin(), out.end(), [](const NodeInfo& a, const NodeInfo& b) { return a.node_id < b.node_id; });
  return out;
}

}  // namespace engram::cluster
