// UcxServer: the data-plane transport of engram-server. One thread owns and progresses a UCP
// worker with a listener; each request active message is handed to a handler, which answers by
// Reply() (from any thread).
//
// Endpoints use UCX's peer error handling, so a client that dies is detected and its endpoint
// closed instead of taking the daemon down (see docs/architecture.md for the transport trade-off).
#ifndef ENGRAM_PS_UCX_SERVER_H_
#define ENGRAM_PS_UCX_SERVER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engram/status.h"
#include "engram/ucx_util.h"
#include "engram/wire.h"

namespace engram::ps {

struct Request {
  wire::Header header;
  std::vector<uint8_t> payload;
  uint64_t conn_id = 0;  // Which connection to answer.
};

class UcxServer {
 public:
  // Called on the UCX thread for every well-formed request. It must not block for long: it
  // either answers inline or hands the request to a worker pool.
  using Handler = std::function<void(Request&& req)>;
  struct Counters {
    std::atomic<uint64_t> malformed{0};
    std::atomic<uint64_t> send_errors{0};
  };

  // Listens on host:port (port 0: an ephemeral port, see port()).
  static StatusOr<std::unique_ptr<UcxServer>> Start(const std::string& host, uint16_t port, Handler handler);
  ~UcxServer();  // Stop(), then releases the worker and the context.
  // Stops the UCX thread and closes every endpoint and the listener; no handler runs after it
  // returns. The context stays valid (registered memory may still be unmapped). Idempotent.
  void Stop();

  uint16_t port() const { return port_; }
  // The context, for registering arena memory (thread-safe context functions only).
  ucp_context_h context() const { return ucx_->context(); }
  // The worker's address, for clients' one-sided (RMA) endpoints.
  const std::vector<uint8_t>& worker_address() const { return worker_address_; }
  const Counters& counters() const { return counters_; }
  size_t open_connections() const { return open_.load(); }

  // Queues a reply; thread-safe, never blocks on the network. Dropped if the client is gone.
  void Reply(uint64_t conn_id, const wire::Header& request, Code code, std::vector<uint8_t> payload);
  void ReplyError(uint64_t conn_id, const wire::Header& request, const Status& s);

 private:
  struct Conn;
  struct Outgoing {
    uint64_t conn_id;
    wire::Header header;
    std::vector<uint8_t> payload;
  };
  UcxServer() = default;
  void Run();
  void SendNow(Outgoing&& out);
  void CloseConn(uint64_t conn_id);
  static void OnConnRequest(ucp_conn_request_h req, void* arg);
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnRequest(void* arg, const void* header, size_t header_len, void* data, size_t len,
                                const ucp_am_recv_param_t* param);
  void Dispatch(const wire::Header& h, const uint8_t* data, size_t len, uint64_t conn_id);

  std::unique_ptr<ucx::ContextAndWorker> ucx_;
  ucp_listener_h listener_ = nullptr;
  uint16_t port_ = 0;
  std::vector<uint8_t> worker_address_;
  Handler handler_;
  std::thread thread_;
  std::atomic<std::thread::id> ucx_thread_id_{};
  std::atomic<bool> stop_{false};
  Counters counters_;
  std::atomic<size_t> open_{0};

  // UCX-thread only.
  uint64_t next_conn_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::unordered_map<ucp_ep_h, uint64_t> by_ep_;
  std::vector<uint64_t> dead_;  // Endpoints that failed, closed at the next loop turn.

  std::mutex out_mu_;
  std::deque<Outgoing> outbox_;  // GUARDED_BY(out_mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_UCX_SERVER_H_
