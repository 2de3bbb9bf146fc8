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
#include <span>
#include <thread>
#include <string>
#include <unordered_map>
#include <utility>
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
  // A connection slot for a server with no known address (a node id with no live daemon): it
  // is never alive, and sends and reconnects fail with Unavailable saying `why`.
  int ConnectNowhere(const std::string& label, const std::string& why);
  bool has_address(int conn) const;
  // Gives an address-less connection (ConnectNowhere) its server's address and connects.
  Status Retarget(int conn, const std::string& host, uint16_t port);
  // Closes the connection's one-sided access (its generation changes: regions opened under the
  // old one are stale), e.g. because the server's process is gone.
  void CloseOneSided(int conn);
  // Progresses the worker once if no other thread is doing so: lets a connection failure be
  // noticed (and its generation bumped) by a process that reads only one-sidedly.
  void Poll();
  // Replaces a failed connection with a fresh one to the same address.
  Status Reconnect(int conn);
  bool alive(int conn) const;
  // Bumped whenever the connection's one-sided access is closed (a failure, a reconnect):
  // regions opened under an older generation are stale. A mapped region's memory stays mapped
  // (readers may still hold pointers into it) until the Transport is destroyed, but it is the
  // old server's memory: callers must reopen their regions.
  uint64_t generation(int conn) const;
  const std::string& address(int conn) const { return conns_[conn]->address; }

  // Sends a request; returns its id for Wait(). The payload is kept until UCX is done with it.
  StatusOr<uint64_t> Send(int conn, wire::MsgType type, uint64_t epoch, std::vector<uint8_t> payload);
  // Sends `header` as given (only request_id is assigned): for protocol tests that need
  // malformed frames. Returns the request id.
  StatusOr<uint64_t> SendRaw(int conn, wire::Header header, std::vector<uint8_t> payload);
  // How this process reads a server's registered region without the server's CPU.
  enum class RegionAccess : uint8_t {
    kMapped = 0,  // Mapped into this process (same host, shared memory): plain loads.
    kGet = 1,     // ucp_get_nbx over a transport with native one-sided reads (RDMA).
    kNone = 2,    // UCX would only emulate gets (tcp): read through the server (RPC).
  };
  struct Region {
    RegionAccess access = RegionAccess::kNone;
    const uint8_t* mapped = nullptr;  // kMapped: the local address of `remote_base`.
    int key = -1;                     // kGet: handle for Get().
    uint64_t generation = 0;          // The connection's generation() when opened.
    std::string transports;           // The RMA lanes UCX chose, for logs and stats.
  };
  // Opens a server's registered region (worker address and rkey from its rma_info): creates,
  // once per connection, an RMA endpoint to the server's worker and unpacks the rkey. Prefers a
  // mapping, then native gets; `force_get` takes gets whatever the transport (tests and
  // benchmarks of the get path). Regions live as long as the Transport.
  StatusOr<Region> OpenRegion(int conn, const std::vector<uint8_t>& worker_address, const std::vector<uint8_t>& rkey,
                              uint64_t remote_base, bool force_get);
  // Sends this connection's requests over the server's shared-memory lanes (same host) instead
  // of the connection's tcp lanes: an endpoint to the server's worker address, without peer
  // error handling (UCX 1.13 drops shared memory with it), so failures are still detected on
  // the tcp endpoint, which stays open. Unavailable (requests stay on tcp) if UCX finds no
  // shared-memory lanes to the server. Undone by Reconnect().
  Status EnableSharedMemoryRpc(int conn, const std::vector<uint8_t>& worker_address);
  // One-sided gets of `len` bytes from each remote address (inside the region of `key`) into
  // dst + k * len, all in flight together; returns when every get completed. Unavailable if the
  // connection failed, DeadlineExceeded if the deadline passed first.
  Status Get(int conn, int key, std::span<const uint64_t> remote_addrs, size_t len, uint8_t* dst,
             Clock::time_point deadline);

  // Waits for the reply of `id`. A non-OK reply becomes its Status (StaleShardMap carries the
  // server's epoch). DeadlineExceeded if the deadline passes; the request is then abandoned
  // (its late reply is dropped), so a retry must be idempotent. With `cancel`, also Aborted
  // (the request abandoned the same way) once *cancel turns true: a daemon shutting down does
  // not wait out a hung peer.
  StatusOr<ReplyMessage> Wait(uint64_t id, Clock::time_point deadline, const std::atomic<bool>* cancel = nullptr);

 private:
  struct Conn {
    Transport* transport;
    int index;
    std::string address;
    std::string host;
    uint16_t port;
    ucp_ep_h ep = nullptr;
    ucp_ep_h rma_ep = nullptr;  // Error mode NONE, from the worker address: keeps shm lanes.
    std::string rma_transports;  // Transports of rma_ep's RMA lanes (from ucp_ep_print_info).
    std::string am_transports;   // Transports of rma_ep's active-message lanes.
    ucp_ep_h rpc_ep = nullptr;   // rma_ep when requests go over shared memory; else requests use ep.
    uint64_t generation = 1;     // See Transport::generation().
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
  Status OpenRmaEp(Conn* c, const std::vector<uint8_t>& worker_address);
  // Destroys the connection's rkeys and force-closes its RMA endpoint (failing its gets).
  void CloseRmaLocked(Conn* c);
  void ProgressLoop();

  std::unique_ptr<ucx::ContextAndWorker> ucx_;
  int efd_ = -1;
  mutable std::mutex mu_;                       // Serialises every use of the worker.
  std::vector<std::unique_ptr<Conn>> conns_;    // GUARDED_BY(mu_) (append-only)
  std::unordered_map<uint64_t, Pending> pending_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;                        // GUARDED_BY(mu_)
  size_t abandoned_ = 0;                        // GUARDED_BY(mu_)
  struct RegionKey {
    int conn;
    ucp_rkey_h rkey;  // nullptr once destroyed (get regions, when their connection closes).
    bool mapped;
  };
  std::vector<RegionKey> rkeys_;  // GUARDED_BY(mu_); index = Region::key (mapped ones too).
  std::atomic<bool> stop_{false};
  std::thread progress_;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_TRANSPORT_H_
