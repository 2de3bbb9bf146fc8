// EtcdClient: what engram-ps needs of etcd v3 (keys, compare-and-swap, leases), spoken to its
// JSON gateway (/v3/...) over HTTP/1.1 with Boost.Beast on one kept-alive connection.
//
// etcd does the agreeing (membership, shard maps, leader election); this is only a client.
// Keys and values are arbitrary bytes (base64 on the wire). Every call has a deadline
// (Options::timeout); a broken connection is re-opened by the next call. Errors: Unavailable
// when etcd cannot be reached or answers 5xx, DeadlineExceeded on timeout, InvalidArgument or
// NotFound (e.g. an expired lease) from etcd's own error replies.
//
// Thread-safety: all methods are thread-safe (calls are serialised on the connection).
#ifndef ENGRAM_CLUSTER_ETCD_CLIENT_H_
#define ENGRAM_CLUSTER_ETCD_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engram/status.h"

namespace engram::cluster {

struct KeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, lease = 0;
};

class EtcdClient {
 public:
  struct Options {
    std::string endpoint;  // "HOST:PORT" of an etcd client URL (http).
    std::chrono::milliseconds timeout{2000};
  };
  // Connects and checks etcd answers (a read of key "/").
  static StatusOr<std::unique_ptr<EtcdClient>> Connect(const Options& options);
  ~EtcdClient();

  // Sets key = value (attached to `lease` unless 0); returns the store's revision after it.
  StatusOr<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  StatusOr<std::optional<KeyValue>> Get(const std::string& key);
  // Every key starting with `prefix`, in key order.
  StatusOr<std::vector<KeyValue>> Prefix(const std::string& prefix);
  // Deletes key; returns whether it existed.
  StatusOr<bool> Delete(const std::string& key);
  // Compare-and-swap: sets key = value only if its mod revision is `expected_mod_revision`
  // (0: only if the key does not exist), and only if none of `absent_keys` exists then (one
  // transaction). Returns whether it was set.
  StatusOr<bool> PutIf(const std::string& key, const std::string& value, int64_t expected_mod_revision,
                       int64_t lease = 0, const std::vector<std::string>& absent_keys = {});

  // A lease of `ttl_s` seconds; returns its id.
  StatusOr<int64_t> GrantLease(int64_t ttl_s);
  // Renews a lease; returns the TTL it has again. NotFound if it already expired.
  StatusOr<int64_t> KeepAlive(int64_t lease);
  Status Revoke(int64_t lease);

  const std::string& endpoint() const { return options_.endpoint; }

 private:
  struct Conn;
  explicit EtcdClient(Options o);
  // POSTs `body` (JSON) to `path` and parses the JSON reply into *reply (a string holding JSON).
  Status Call(const std::string& path, const std::string& body, std::string* reply);

  const Options options_;
  std::mutex mu_;
  std::unique_ptr<Conn> conn_;  // GUARDED_BY(mu_)
};

// Base64 (RFC 4648, with padding), as etcd's JSON gateway encodes bytes.
std::string Base64Encode(const std::string& bytes);
StatusOr<std::string> Base64Decode(const std::string& text);

}  // namespace engram::cluster

#endif  // ENGRAM_CLUSTER_ETCD_CLIENT_H_
