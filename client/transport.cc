// Transport: UCX endpoints, request/reply matching and caller-driven progress.
#include "client/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

namespace engram::client {
namespace {

struct SendCtx {
  wire::Header header;
  std::vector<uint8_t> payload;
};

void OnSendDone(void* request, ucs_status_t, void* user_data) {
  delete static_cast<SendCtx*>(user_data);
  ucp_request_free(request);
}

struct RndvCtx {
  bool* done;
  bool* receiving;
  Status* status;
};

void OnRndvDone(void* request, ucs_status_t status, size_t, void* user_data) {
  auto* c = static_cast<RndvCtx*>(user_data);
  if (status != UCS_OK) *c->status = ucx::FromUcs(status, "receiving reply");
  *c->done = true;
  *c->receiving = false;
  delete c;
  ucp_request_free(request);
}

Status ReplyStatus(const ReplyMessage& r) {
  const Code code = static_cast<Code>(r.header.status);
  if (code == Code::kOk) return Status::OK();
  std::string msg(r.payload.begin(), r.payload.end());
  if (code == Code::kStaleShardMap && msg.size() >= 8) {
    uint64_t epoch;
    std::memcpy(&epoch, msg.data() + msg.size() - 8, 8);
    msg.resize(msg.size() - 8);
    return Status::StaleShardMap(epoch, msg);
  }
  return Status(code, msg);
}

}  // namespace

StatusOr<std::unique_ptr<Transport>> Transport::Create(bool progress_thread) {
  auto t = std::unique_ptr<Transport>(new Transport());
  ENGRAM_ASSIGN_OR_RETURN(t->ucx_, ucx::ContextAndWorker::Create(UCS_THREAD_MODE_SERIALIZED));
  ENGRAM_RETURN_IF_ERROR(ucx::SetAmHandler(t->ucx_->worker(), wire::kAmReply, &Transport::OnReply, t.get()));
  if (ucp_worker_get_efd(t->ucx_->worker(), &t->efd_) != UCS_OK) t->efd_ = -1;
  if (progress_thread) t->progress_ = std::thread([p = t.get()] { p->ProgressLoop(); });
  return t;
}

void Transport::ProgressLoop() {
  while (!stop_) {
    bool idle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool busy = ucp_worker_progress(ucx_->worker()) != 0;
      idle = !busy && ucp_worker_arm(ucx_->worker()) == UCS_OK;
    }
    if (idle && efd_ >= 0) {
      pollfd pfd{efd_, POLLIN, 0};
      poll(&pfd, 1, 5);  // Bounded, so stop_ is seen promptly.
    } else if (idle) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
}

Transport::~Transport() {
  stop_ = true;
  if (progress_.joinable()) progress_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& k : rkeys_) {
    if (k.rkey != nullptr) ucp_rkey_destroy(k.rkey);
  }
  for (auto& c : conns_) {
    ucx::CloseEndpoint(ucx_->worker(), c->rma_ep);
    ucx::CloseEndpoint(ucx_->worker(), c->ep);
  }
  // Drain callbacks of sends still in flight so their contexts are freed.
  for (int i = 0; i < 100 && ucp_worker_progress(ucx_->worker()) != 0; ++i) {
  }
}

Status Transport::OpenEp(Conn* c) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(c->port);
  if (inet_pton(AF_INET, c->host.c_str(), &sa.sin_addr) != 1) {
    return Status::InvalidArgument("server address '" + c->host + "' is not an IPv4 address");
  }
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
  ep.sockaddr.addrlen = sizeof(sa);
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &Transport::OnEpError;
  ep.err_handler.arg = c;
  c->failed = false;
  c->failure.clear();
  return ucx::FromUcs(ucp_ep_create(ucx_->worker(), &ep, &c->ep), "connect to " + c->address);
}

StatusOr<int> Transport::Connect(const std::string& host, uint16_t port) {
  std::lock_guard<std::mutex> lock(mu_);
  auto c = std::make_unique<Conn>();
  c->transport = this;
  c->index = static_cast<int>(conns_.size());
  c->host = host;
  c->port = port;
  c->address = host + ":" + std::to_string(port);
  ENGRAM_RETURN_IF_ERROR(OpenEp(c.get()));
  conns_.push_back(std::move(c));
  return static_cast<int>(conns_.size() - 1);
}

int Transport::ConnectNowhere(const std::string& label, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto c = std::make_unique<Conn>();
  c->transport = this;
  c->index = static_cast<int>(conns_.size());
  c->address = label;
  c->port = 0;
  c->failed = true;
  c->failure = why;
  conns_.push_back(std::move(c));
  return static_cast<int>(conns_.size() - 1);
}

Status Transport::Reconnect(int conn) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  if (c->host.empty()) return Status::Unavailable("server " + c->address + ": " + c->failure);
  CloseRmaLocked(c);  // The server may have restarted: its worker address changed.
  ucx::CloseEndpoint(ucx_->worker(), c->ep);
  c->ep = nullptr;
  return OpenEp(c);
}

namespace {

// The transports of an endpoint's lanes that carry `role` ("am": active messages, "rma":
// one-sided operations), e.g. "posix", "rc_mlx5", "tcp", comma separated. UCX 1.13 has no query
// for them, so this reads the endpoint's configuration as ucp_ep_print_info prints it: one
// "lane[i]: <n>:<tl>/<device> md[k] -> md[k]/<component>/... <roles>" line per lane.
std::string LaneTransports(ucp_ep_h ep, const std::string& role) {
  char* buf = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&buf, &size);
  if (f == nullptr) return "";
  ucp_ep_print_info(ep, f);
  std::fclose(f);
  std::string out;
  std::istringstream lines(std::string(buf, size));
  std::free(buf);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("lane[") == std::string::npos) continue;
    std::istringstream words(line);
    std::string tl;
    bool after_arrow = false, has_role = false;
    for (std::string w; words >> w;) {
      if (tl.empty() && w.find('/') != std::string::npos && w.find('/') > 0) {
        tl = w.substr(0, w.find('/'));
        if (const size_t colon = tl.rfind(':'); colon != std::string::npos) tl = tl.substr(colon + 1);
      }
      if (w == "->") after_arrow = true;
      if (after_arrow && (w == role || w.rfind(role + "_", 0) == 0 || w.rfind(role + "#", 0) == 0)) has_role = true;
    }
    if (has_role && !tl.empty() && out.find(tl) == std::string::npos) out += (out.empty() ? "" : ",") + tl;
  }
  return out;
}

bool SharedMemoryOnly(const std::string& transports) {
  if (transports.empty()) return false;
  std::istringstream in(transports);
  for (std::string tl; std::getline(in, tl, ',');) {
    if (tl != "sysv" && tl != "posix" && tl != "xpmem" && tl != "cma" && tl != "knem") return false;
  }
  return true;
}

// True when every RMA lane is a transport that reads remote memory natively. UCX emulates
// gets over tcp with active messages (15-25x slower than batching rows into one reply).
bool NativeGets(const std::string& transports) {
  return !transports.empty() && transports.find("tcp") == std::string::npos;
}

}  // namespace

Status Transport::OpenRmaEp(Conn* c, const std::vector<uint8_t>& worker_address) {
  if (c->rma_ep != nullptr) return Status::OK();
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.address = reinterpret_cast<const ucp_address_t*>(worker_address.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  ENGRAM_RETURN_IF_ERROR(ucx::FromUcs(ucp_ep_create(ucx_->worker(), &ep, &c->rma_ep), "RMA endpoint to " + c->address));
  c->rma_transports = LaneTransports(c->rma_ep, "rma");
  c->am_transports = LaneTransports(c->rma_ep, "am");
  return Status::OK();
}

StatusOr<Transport::Region> Transport::OpenRegion(int conn, const std::vector<uint8_t>& worker_address,
                                                  const std::vector<uint8_t>& rkey, uint64_t remote_base,
                                                  bool force_get) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  ENGRAM_RETURN_IF_ERROR(OpenRmaEp(c, worker_address));
  ucp_rkey_h key = nullptr;
  ENGRAM_RETURN_IF_ERROR(ucx::FromUcs(ucp_ep_rkey_unpack(c->rma_ep, rkey.data(), &key), "rkey from " + c->address));
  Region r;
  r.transports = c->rma_transports;
  void* local = nullptr;
  if (!force_get && ucp_rkey_ptr(key, remote_base, &local) == UCS_OK) {
    r.access = RegionAccess::kMapped;
    r.mapped = static_cast<const uint8_t*>(local);
  } else if (force_get || NativeGets(c->rma_transports)) {
    r.access = RegionAccess::kGet;
  } else {
    ucp_rkey_destroy(key);
    return r;  // kNone.
  }
  r.key = static_cast<int>(rkeys_.size());
  r.generation = c->generation;
  rkeys_.push_back({conn, key, r.access == RegionAccess::kMapped});
  return r;
}

Status Transport::Get(int conn, int key, std::span<const uint64_t> remote_addrs, size_t len, uint8_t* dst,
                      Clock::time_point deadline) {
  struct Batch {
    size_t outstanding = 0;
    ucs_status_t status = UCS_OK;
  } batch;
  std::unique_lock<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  if (key < 0 || static_cast<size_t>(key) >= rkeys_.size() || rkeys_[key].conn != conn) {
    return Status::FailedPrecondition("get on a region that was not opened on this connection");
  }
  if (c->failed) return Status::Unavailable("server " + c->address + ": connection lost (" + c->failure + ")");
  if (c->rma_ep == nullptr || rkeys_[key].rkey == nullptr) {
    return Status::Unavailable("one-sided reads from " + c->address + " were closed after a failure; reopen the table");
  }
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.user_data = &batch;
  param.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    auto* b = static_cast<Batch*>(user_data);
    if (status != UCS_OK && b->status == UCS_OK) b->status = status;
    --b->outstanding;
    ucp_request_free(request);
  };
  for (size_t k = 0; k < remote_addrs.size(); ++k) {
    ucs_status_ptr_t req = ucp_get_nbx(c->rma_ep, dst + k * len, len, remote_addrs[k], rkeys_[key].rkey, &param);
    if (UCS_PTR_IS_ERR(req)) {
      batch.status = UCS_PTR_STATUS(req);
      break;
    }
    if (req != nullptr) ++batch.outstanding;
  }
  // Every issued get must complete before `batch` and `dst` go out of scope. The RMA endpoint
  // has no peer error handling (it would lose the shared-memory lanes), so a dead server or a
  // passed deadline is handled by force-closing it: UCX then completes the outstanding gets
  // with an error. Later gets on this connection fail fast and the caller reads by RPC.
  bool late = false;
  while (batch.outstanding > 0) {
    ProgressLocked();
    if (batch.outstanding == 0) break;
    if (c->failed || Clock::now() > deadline) {
      late = !c->failed;
      CloseRmaLocked(c);
    }
  }
  if (c->failed) return Status::Unavailable("server " + c->address + ": connection lost (" + c->failure + ")");
  if (late) return Status::DeadlineExceeded("one-sided get from " + c->address + " did not finish by its deadline");
  if (batch.status != UCS_OK) {
    return Status::Unavailable("one-sided get from " + c->address + ": " + ucs_status_string(batch.status));
  }
  return Status::OK();
}

Status Transport::EnableSharedMemoryRpc(int conn, const std::vector<uint8_t>& worker_address) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  ENGRAM_RETURN_IF_ERROR(OpenRmaEp(c, worker_address));
  if (!SharedMemoryOnly(c->am_transports)) {
    return Status::Unavailable("no shared-memory lanes to " + c->address + " (active messages over '" +
                               c->am_transports + "')");
  }
  c->rpc_ep = c->rma_ep;
  return Status::OK();
}

void Transport::CloseRmaLocked(Conn* c) {
  c->rpc_ep = nullptr;
  ++c->generation;
  for (RegionKey& k : rkeys_) {
    // Mapped regions stay mapped until the Transport goes: a reader may be copying from one.
    if (k.conn == c->index && k.rkey != nullptr && !k.mapped) {
      ucp_rkey_destroy(k.rkey);
      k.rkey = nullptr;
    }
  }
  ucx::CloseEndpoint(ucx_->worker(), c->rma_ep);
  c->rma_ep = nullptr;
}

Status Transport::Retarget(int conn, const std::string& host, uint16_t port) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  if (!c->host.empty()) return Status::OK();  // Someone else did.
  c->host = host;
  c->port = port;
  c->address = host + ":" + std::to_string(port);
  return OpenEp(c);
}

bool Transport::has_address(int conn) const {
  std::lock_guard<std::mutex> lock(mu_);
  return !conns_[conn]->host.empty();
}

uint64_t Transport::generation(int conn) const {
  std::lock_guard<std::mutex> lock(mu_);
  return conns_[conn]->generation;
}

bool Transport::alive(int conn) const {
  std::lock_guard<std::mutex> lock(mu_);
  return conns_[conn]->ep != nullptr && !conns_[conn]->failed;
}

void Transport::OnEpError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* c = static_cast<Conn*>(arg);
  c->failed = true;
  c->failure = ucs_status_string(status);
  // Fail everything waiting on this connection (we are inside progress, under mu_).
  for (auto& [id, p] : c->transport->pending_) {
    if (p.conn == c->index && !p.done) {
      p.done = true;
      p.status = Status::Unavailable("server " + c->address + ": connection lost (" + c->failure + ")");
    }
  }
}

ucs_status_t Transport::OnReply(void* arg, const void* header, size_t header_len, void* data, size_t len,
                                const ucp_am_recv_param_t* param) {
  auto* t = static_cast<Transport*>(arg);
  wire::Header h;
  if (!wire::CheckHeader(header, header_len, len, &h).ok()) return UCS_OK;  // Not ours to answer.
  auto it = t->pending_.find(h.request_id);
  if (it == t->pending_.end() || it->second.abandoned) return UCS_OK;  // Its waiter gave up.
  Pending& p = it->second;
  p.reply.header = h;
  p.reply.payload.resize(len);
  if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
    p.receiving = true;
    auto* ctx = new RndvCtx{&p.done, &p.receiving, &p.status};
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am = &OnRndvDone;
    rp.user_data = ctx;
    void* r = ucp_am_recv_data_nbx(t->ucx_->worker(), data, p.reply.payload.data(), len, &rp);
    if (r == nullptr) {
      delete ctx;
      p.done = true;
      p.receiving = false;
    } else if (UCS_PTR_IS_ERR(r)) {
      delete ctx;
      p.done = true;
      p.receiving = false;
      p.status = ucx::FromUcs(UCS_PTR_STATUS(r), "receiving reply");
    }
    return UCS_OK;
  }
  if (len > 0) std::memcpy(p.reply.payload.data(), data, len);
  p.done = true;
  return UCS_OK;
}

StatusOr<uint64_t> Transport::Send(int conn, wire::MsgType type, uint64_t epoch, std::vector<uint8_t> payload) {
  wire::Header h;
  h.type = static_cast<uint16_t>(type);
  h.epoch = epoch;
  h.payload_len = static_cast<uint32_t>(payload.size());
  return SendRaw(conn, h, std::move(payload));
}

StatusOr<uint64_t> Transport::SendRaw(int conn, wire::Header header, std::vector<uint8_t> payload) {
  std::lock_guard<std::mutex> lock(mu_);
  Conn* c = conns_[conn].get();
  if (c->host.empty()) return Status::Unavailable("server " + c->address + ": " + c->failure);
  if (c->failed || c->ep == nullptr) {
    return Status::Unavailable("server " + c->address + ": connection lost (" + c->failure + ")");
  }
  const uint64_t id = next_id_++;
  auto* ctx = new SendCtx{};
  ctx->header = header;
  ctx->header.request_id = id;
  ctx->payload = std::move(payload);
  Pending pend;
  pend.conn = conn;
  pending_[id] = std::move(pend);
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.cb.send = &OnSendDone;
  p.user_data = ctx;
  p.flags = UCP_AM_SEND_FLAG_REPLY;
  void* r = ucp_am_send_nbx(c->rpc_ep != nullptr ? c->rpc_ep : c->ep, wire::kAmRequest, &ctx->header, sizeof(ctx->header), ctx->payload.data(),
                            ctx->payload.size(), &p);
  if (r == nullptr) {
    delete ctx;
  } else if (UCS_PTR_IS_ERR(r)) {
    delete ctx;
    pending_.erase(id);
    return ucx::FromUcs(UCS_PTR_STATUS(r), "send to " + c->address);
  }
  return id;
}

void Transport::CloseOneSided(int conn) {
  std::lock_guard<std::mutex> lock(mu_);
  CloseRmaLocked(conns_[conn].get());
}

void Transport::Poll() {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (lock.owns_lock()) ProgressLocked();
}

void Transport::ProgressLocked() {
  for (int i = 0; i < 16 && ucp_worker_progress(ucx_->worker()) != 0; ++i) {
  }
  if (abandoned_ > 0) {
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.abandoned && !it->second.receiving) {
        it = pending_.erase(it);
        --abandoned_;
      } else {
        ++it;
      }
    }
  }
}

StatusOr<ReplyMessage> Transport::Wait(uint64_t id, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  const auto spin_until = Clock::now() + std::chrono::microseconds(200);
  for (;;) {
    bool arm = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ProgressLocked();
      auto it = pending_.find(id);
      if (it == pending_.end()) return Status::Internal("unknown request id");
      if (it->second.done) {
        Pending p = std::move(it->second);
        pending_.erase(it);
        ENGRAM_RETURN_IF_ERROR(p.status);
        ENGRAM_RETURN_IF_ERROR(ReplyStatus(p.reply));
        return std::move(p.reply);
      }
      const auto now = Clock::now();
      const bool cancelled = cancel != nullptr && cancel->load(std::memory_order_relaxed);
      if (now >= deadline || cancelled) {
        const std::string who = conns_[it->second.conn]->address;
        if (it->second.receiving) {  // UCX still writes into it: erase once that completes.
          it->second.abandoned = true;
          ++abandoned_;
        } else {
          pending_.erase(it);
        }
        if (cancelled) return Status::Aborted("gave up waiting for server " + who + " (the caller cancelled the wait)");
        return Status::DeadlineExceeded("no reply from server " + who + " before the deadline");
      }
      if (now > spin_until) arm = ucp_worker_arm(ucx_->worker()) == UCS_OK;
    }
    if (arm && efd_ >= 0) {
      pollfd pfd{efd_, POLLIN, 0};
      poll(&pfd, 1, 1);
    } else if (Clock::now() > spin_until) {
      std::this_thread::yield();
    }
  }
}

}  // namespace engram::client
