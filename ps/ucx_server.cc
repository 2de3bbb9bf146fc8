// UcxServer: listener, active-message dispatch and the reply outbox, on one UCX thread.
#include "ps/ucx_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <cstring>

#include <glog/logging.h>

namespace engram::ps {

struct UcxServer::Conn {
  UcxServer* server;
  uint64_t id;
  ucp_ep_h ep = nullptr;
  // A reply endpoint UCX created for a client that connected to the worker address (requests
  // over shared memory). UCX owns it; it has no error handling, so it is forgotten, not closed.
  bool borrowed = false;
};

namespace {

// A reply in flight: header and payload must live until UCX completes the send.
struct InFlight {
  wire::Header header;
  std::vector<uint8_t> payload;
  UcxServer::Counters* counters;
};

void OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* f = static_cast<InFlight*>(user_data);
  if (status != UCS_OK) f->counters->send_errors++;
  delete f;
  ucp_request_free(request);
}

// A rendezvous request being received into its own buffer.
struct RndvRecv {
  UcxServer* server;
  wire::Header header;
  std::vector<uint8_t> payload;
  uint64_t conn_id;
  void (*dispatch)(RndvRecv*);
};

void OnRndvDone(void* request, ucs_status_t status, size_t /*length*/, void* user_data) {
  auto* r = static_cast<RndvRecv*>(user_data);
  if (status == UCS_OK) r->dispatch(r);
  delete r;
  ucp_request_free(request);
}

}  // namespace

StatusOr<std::unique_ptr<UcxServer>> UcxServer::Start(const std::string& host, uint16_t port, Handler handler) {
  auto s = std::unique_ptr<UcxServer>(new UcxServer());
  s->handler_ = std::move(handler);
  ENGRAM_ASSIGN_OR_RETURN(s->ucx_, ucx::ContextAndWorker::Create(UCS_THREAD_MODE_SINGLE, /*shared_context=*/true));
  ucp_address_t* addr = nullptr;
  size_t addr_len = 0;
  ENGRAM_RETURN_IF_ERROR(ucx::FromUcs(ucp_worker_get_address(s->ucx_->worker(), &addr, &addr_len), "worker address"));
  s->worker_address_.assign(reinterpret_cast<uint8_t*>(addr), reinterpret_cast<uint8_t*>(addr) + addr_len);
  ucp_worker_release_address(s->ucx_->worker(), addr);

  ENGRAM_RETURN_IF_ERROR(ucx::SetAmHandler(s->ucx_->worker(), wire::kAmRequest, &UcxServer::OnRequest, s.get()));

  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    return Status::InvalidArgument("listen address '" + host + "' is not an IPv4 address");
  }
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
  lp.sockaddr.addrlen = sizeof(sa);
  lp.conn_handler.cb = &UcxServer::OnConnRequest;
  lp.conn_handler.arg = s.get();
  ENGRAM_RETURN_IF_ERROR(ucx::FromUcs(ucp_listener_create(s->ucx_->worker(), &lp, &s->listener_),
                                      "listen on " + host + ":" + std::to_string(port)));
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  ENGRAM_RETURN_IF_ERROR(ucx::FromUcs(ucp_listener_query(s->listener_, &attr), "ucp_listener_query"));
  s->port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&attr.sockaddr)->sin_port);
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  return s;
}

UcxServer::~UcxServer() { Stop(); }

void UcxServer::Stop() {
  stop_ = true;
  if (ucx_) ucp_worker_signal(ucx_->worker());
  if (thread_.joinable()) thread_.join();
}

void UcxServer::OnConnRequest(ucp_conn_request_h req, void* arg) {
  auto* s = static_cast<UcxServer*>(arg);
  auto conn = std::make_unique<Conn>();
  conn->server = s;
  conn->id = s->next_conn_++;
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.conn_request = req;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &UcxServer::OnEpError;
  ep.err_handler.arg = conn.get();
  const ucs_status_t st = ucp_ep_create(s->ucx_->worker(), &ep, &conn->ep);
  if (st != UCS_OK) {
    LOG(WARNING) << "refused a connection: " << ucs_status_string(st);
    return;
  }
  s->by_ep_[conn->ep] = conn->id;
  s->open_++;
  s->conns_[conn->id] = std::move(conn);
}

void UcxServer::OnEpError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* c = static_cast<Conn*>(arg);
  VLOG(1) << "connection " << c->id << " failed: " << ucs_status_string(status);
  c->server->dead_.push_back(c->id);
}

void UcxServer::CloseConn(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  // Never spins: this is the UCX thread, and replies queued by the workers wait for it.
  if (!it->second->borrowed) ucx::CloseEndpoint(ucx_->worker(), it->second->ep, std::chrono::milliseconds(0));
  by_ep_.erase(it->second->ep);
  conns_.erase(it);
  open_--;
}

ucs_status_t UcxServer::OnRequest(void* arg, const void* header, size_t header_len, void* data, size_t len,
                                  const ucp_am_recv_param_t* param) {
  auto* s = static_cast<UcxServer*>(arg);
  uint64_t conn_id = 0;
  if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) {
    auto it = s->by_ep_.find(param->reply_ep);
    if (it != s->by_ep_.end()) {
      conn_id = it->second;
    } else {
      // First request from a client that connected to our worker address (same host, shared
      // memory). Its liveness is watched on that client's tcp connection, not here.
      auto conn = std::make_unique<Conn>();
      conn->server = s;
      conn->id = conn_id = s->next_conn_++;
      conn->ep = param->reply_ep;
      conn->borrowed = true;
      s->by_ep_[conn->ep] = conn->id;
      s->open_++;
      s->conns_[conn->id] = std::move(conn);
    }
  }
  if (conn_id == 0) return UCS_OK;  // No way to answer: the sender did not ask for replies.
  wire::Header h;
  Status hs = wire::CheckHeader(header, header_len, len, &h);
  if (hs.ok() && len > wire::kMaxPayload) hs = Status::InvalidArgument("frame larger than 1 GiB");
  if (!hs.ok()) {
    s->counters_.malformed++;
    wire::Header reply_to;
    if (header_len >= sizeof(wire::Header)) std::memcpy(&reply_to, header, sizeof(reply_to));
    s->ReplyError(conn_id, reply_to, hs);
    return UCS_OK;
  }
  if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
    auto* r = new RndvRecv{s, h, std::vector<uint8_t>(len), conn_id,
                           [](RndvRecv* rr) { rr->server->Dispatch(rr->header, rr->payload.data(), rr->payload.size(), rr->conn_id); }};
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = &OnRndvDone;
    p.user_data = r;
    void* req = ucp_am_recv_data_nbx(s->ucx_->worker(), data, r->payload.data(), len, &p);
    if (req == nullptr) {
      r->dispatch(r);
      delete r;
    } else if (UCS_PTR_IS_ERR(req)) {
      delete r;
    }
    return UCS_OK;
  }
  s->Dispatch(h, static_cast<const uint8_t*>(data), len, conn_id);
  return UCS_OK;
}

void UcxServer::Dispatch(const wire::Header& h, const uint8_t* data, size_t len, uint64_t conn_id) {
  Request req;
  req.header = h;
  req.payload.assign(data, data + len);
  req.conn_id = conn_id;
  handler_(std::move(req));
}

void UcxServer::Reply(uint64_t conn_id, const wire::Header& request, Code code, std::vector<uint8_t> payload) {
  Outgoing out;
  out.conn_id = conn_id;
  out.header.type = request.type;
  out.header.request_id = request.request_id;
  out.header.status = static_cast<uint32_t>(code);
  out.header.payload_len = static_cast<uint32_t>(payload.size());
  out.payload = std::move(payload);
  if (std::this_thread::get_id() == ucx_thread_id_.load()) {
    SendNow(std::move(out));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    outbox_.push_back(std::move(out));
  }
  ucp_worker_signal(ucx_->worker());
}

void UcxServer::ReplyError(uint64_t conn_id, const wire::Header& request, const Status& s) {
  std::vector<uint8_t> msg(s.message().begin(), s.message().end());
  Reply(conn_id, request, s.code(), std::move(msg));
}

void UcxServer::SendNow(Outgoing&& out) {
  auto it = conns_.find(out.conn_id);
  if (it == conns_.end()) return;  // The client went away; nobody to tell.
  auto* f = new InFlight{out.header, std::move(out.payload), &counters_};
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.cb.send = &OnSendDone;
  p.user_data = f;
  p.flags = 0;
  void* r = ucp_am_send_nbx(it->second->ep, wire::kAmReply, &f->header, sizeof(f->header), f->payload.data(),
                            f->payload.size(), &p);
  if (r == nullptr) {
    delete f;
  } else if (UCS_PTR_IS_ERR(r)) {
    counters_.send_errors++;
    delete f;
  }
}

void UcxServer::Run() {
  ucx_thread_id_ = std::this_thread::get_id();
  ucp_worker_h w = ucx_->worker();
  int efd = -1;
  if (ucp_worker_get_efd(w, &efd) != UCS_OK) efd = -1;
  while (!stop_) {
    int spins = 0;
    while (ucp_worker_progress(w) != 0 || ++spins < 64) {
    }
    std::deque<Outgoing> out;
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      out.swap(outbox_);
    }
    for (auto& o : out) SendNow(std::move(o));
    if (!dead_.empty()) {
      auto dead = std::move(dead_);
      dead_.clear();
      for (uint64_t id : dead) CloseConn(id);
    }
    if (!out.empty()) continue;
    if (ucp_worker_arm(w) == UCS_ERR_BUSY) continue;
    if (efd >= 0) {
      pollfd pfd{efd, POLLIN, 0};
      poll(&pfd, 1, 100);
    }
  }
  std::vector<uint64_t> ids;
  for (auto& [id, c] : conns_) ids.push_back(id);
  for (uint64_t id : ids) CloseConn(id);
  if (listener_) ucp_listener_destroy(listener_);
  // Let the forced closes and the last sends finish, briefly: the worker is destroyed next.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  while (ucp_worker_progress(w) != 0 && std::chrono::steady_clock::now() < deadline) {
  }
}

}  // namespace engram::ps
