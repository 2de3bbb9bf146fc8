// Membership: a daemon's registration in etcd, under a lease it keeps alive.
//
// Key /engram/<cluster>/nodes/<node id> holds the node's addresses as JSON and is attached to
// the node's lease: when the daemon dies or loses etcd, the lease expires and the key goes.
// A node id is taken with a compare-and-swap, so two live daemons never share one.
//
// Fencing: live() turns false as soon as the lease may have expired at etcd (no successful
// renewal for ttl - margin). A daemon must refuse writes while it is not live: another node may
// be taking over its shards (design.md: a node that cannot renew its lease fences itself
// before its lease can expire at the coordinator). Renewals continue; when one succeeds (or the
// lease had expired and the node id could be registered again) the daemon is live again.
//
// Thread-safety: all methods are thread-safe.
#ifndef ENGRAM_CLUSTER_MEMBERSHIP_H_
#define ENGRAM_CLUSTER_MEMBERSHIP_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"
#include "engram/status.h"

namespace engram::cluster {

struct NodeInfo {
  uint32_t node_id = 0;
  std::string data_address;   // HOST:PORT of the UCX data plane.
  std::string admin_address;  // HOST:PORT of the admin HTTP endpoint.
  int64_t lease = 0;          // List(): the lease the key lives under.
};

class Membership {
 public:
  struct Options {
    EtcdClient::Options etcd;
    std::string cluster = "default";
    int ttl_s = 5;  // Lease TTL; renewed every ttl/3.
  };
  // Registers `self`. AlreadyExists if a live daemon holds the node id; Unavailable if etcd
  // cannot be reached.
  static StatusOr<std::unique_ptr<Membership>> Join(const Options& options, const NodeInfo& self);
  ~Membership();  // Stops renewing and revokes the lease: the node leaves at once.

  bool live() const;
  // False once the lease has surely expired at etcd (a full TTL since the last renewal that
  // succeeded was sent): the leader may have failed this node over, so it must stop serving
  // reads too until it has registered again and caught up.
  bool lease_may_hold() const;
  // When the lease surely expires at etcd, on the steady clock (CLOCK_MONOTONIC: the same for
  // every process of the host) in nanoseconds: a full TTL after the last renewal that succeeded
  // was sent.
  int64_t lease_deadline_ns() const;
  // How many times the node id was registered (1 after Join; more after a lease expired and the
  // node registered again). A node whose lease expired may have been failed over: it must catch
  // up with the cluster's maps before it takes writes again.
  uint64_t registrations() const { return registrations_.load(); }
  int64_t lease() const { return lease_.load(); }
  // Whether this node is the cluster's placement leader (ClusterState::TryLead, attempted at
  // every renewal while nobody leads). False whenever the node is not live.
  bool leader() const { return leader_.load() && live(); }

  // The registered nodes of `cluster`, by node id.
  static StatusOr<std::vector<NodeInfo>> List(EtcdClient& etcd, const std::string& cluster);
  static std::string NodesPrefix(const std::string& cluster);

 private:
  Membership(Options o, NodeInfo self, std::unique_ptr<EtcdClient> etcd)
      : options_(std::move(o)), self_(std::move(self)), etcd_(std::move(etcd)) {}
  // Grants a lease and takes the node id key with it (compare-and-swap on "absent").
  Status Register();
  // Takes or confirms the leadership under the current lease.
  void Campaign();
  void RenewLoop();

  const Options options_;
  const NodeInfo self_;
  std::unique_ptr<EtcdClient> etcd_;
  std::atomic<int64_t> lease_{0};
  std::atomic<bool> leader_{false};
  std::atomic<uint64_t> registrations_{0};
  // Steady-clock nanoseconds when the last successful renewal (or registration) was sent.
  std::atomic<int64_t> renewed_at_ns_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread renewer_;
};

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_MEMBERSHIP_H_
