// Transport: the client side of the UCX data plane. One UCP worker shared by all connections of
// one Client; there is no I/O thread: whoever waits for a reply progresses the worker (under a
// mutex), so a small pull costs no thread hop.
//
// Thread-safety: all methods are thread-safe. Send() never blocks on the network; Wait() blocks
// until the reply arrives, the connection fails, or the deadline passes.
#ifndef ENGRAM_CLIENT_TRANSPORT_H_
#define ENGRAM_CLIENT_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <atomic>
#include <mutex>
#include <thread>
#include <string>
#include <unordered_map>
#include <vector>

#include "engram/status.h"
#include "engram/ucx_util.h"
#include "engram/wire.h"

namespace engram::client {

using Clock = std::chrono::steady_clock;

struct ReplyMessage {
  wire::Header header;
  std::vector<uint8_t> payload;
};

class Transport {
 public:
  // `progress_thread`: also run a background thread that progresses the worker while requests
  // are in flight, so transfers started with Send() advance while the caller computes (the
  // layer-ahead prefetch). Waiters progress too, so a blocking call never waits on that thread.
  static StatusOr<std::unique_ptr<Transport>> Create(bool progress_thread = false);
  ~Transport();

  // Opens a connection to host:port and returns its index. UCX connects lazily; the caller
  // confirms with a request (Client does a hello).
  StatusOr<int> Connect(const std::string& host, uint16_t port);
  // Replaces a failed connection with a fresh one to the same address.
  Status Reconnect(int conn);
  bool alive(int conn) const;
  const std::string& address(int conn) const { return conns_[conn]->address; }

  // Sends a request; returns its id for Wait(). The payload is kept until UCX is done with it.
  StatusOr<uint64_t> Send(int conn, wire::MsgType type, uint64_t epoch, std::vector<uint8_t> payload);
  // Sends `header` as given (only request_id is assigned): for protocol tests that need
  // malformed frames. Returns the request id.
  StatusOr<uint64_t> SendRaw(int conn, wire::Header header, std::vector<uint8_t> payload);
  // Maps a server's registered region into this process for one-sided reads: creates (once
  // per connection) an RMA endpoint to the server's worker address and unpacks the rkey. Returns
  // the local address of `remote_base`, or Unavailable when the region cannot be mapped
  // directly (not on this host's shared memory), in which case the caller uses RPC. The
  // mapping lives as long as the Transport.
  StatusOr<const uint8_t*> MapRemote(int conn, const std::vector<uint8_t>& worker_address,
                                     const std::vector<uint8_t>& rkey, uint64_t remote_base);

  // Waits for the reply of `id`. A non-OK reply becomes its Status (StaleShardMap carries the
  // server's epoch). DeadlineExceeded if the deadline passes; the request is then abandoned
  // (its late reply is dropped), so a retry must be idempotent.
  StatusOr<ReplyMessage> Wait(uint64_t id, Clock::time_point deadline);

 private:
  struct Conn {
    Transport* transport;
    int index;
    std::string address;
    std::string host;
    uint16_t port;
    ucp_ep_h ep = nullptr;
    ucp_ep_h rma_ep = nullptr;  // Error mode NONE, from the worker address: keeps shm lanes.
    bool failed = false;
    std::string failure;
  };
  struct Pending {
    int conn;
    bool done = false;
    bool receiving = false;  // A rendezvous receive writes into reply.payload.
    bool abandoned = false;  // Its waiter gave up; erased once no receive is in flight.
    Status status;
    ReplyMessage reply;
  };
  Transport() = default;
  Status OpenEp(Conn* c);
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnReply(void* arg, const void* header, size_t header_len, void* data, size_t len,
                              const ucp_am_recv_param_t* param);
  void ProgressLocked();
  void ProgressLoop();

  std::unique_ptr<ucx::ContextAndWorker> ucx_;
  int efd_ = -1;
  mutable std::mutex mu_;                       // Serialises every use of the worker.
  std::vector<std::unique_ptr<Conn>> conns_;    // GUARDED_BY(mu_) (append-only)
  std::unordered_map<uint64_t, Pending> pending_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;                        // GUARDED_BY(mu_)
  size_t abandoned_ = 0;                        // GUARDED_BY(mu_)
  std::vector<ucp_rkey_h> rkeys_;               // GUARDED_BY(mu_)
  std::atomic<bool> stop_{false};
  std::thread progress_;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_TRANSPORT_H_
