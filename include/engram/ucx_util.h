// Small shared helpers for the UCX adapters of ps/ (server) and client/: context and worker
// creation, and the conversion of UCX status codes into Status at the adapter boundary.
#ifndef ENGRAM_UCX_UTIL_H_
#define ENGRAM_UCX_UTIL_H_

#include <chrono>
#include <cstdlib>

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "engram/status.h"

namespace engram::ucx {

inline Status FromUcs(ucs_status_t s, const std::string& what) {
  if (s == UCS_OK) return Status::OK();
  const std::string msg = what + ": " + ucs_status_string(s);
  switch (s) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE: return Status::ResourceExhausted(msg);
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT: return Status::DeadlineExceeded(msg);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_CANCELED:
    case UCS_ERR_BUSY: return Status::Unavailable(msg);
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_INVALID_PARAM: return Status::InvalidArgument(msg);
    default: return Status::IoError(msg);
  }
}

// Registers `cb` as the whole-message handler of active-message id `id` on `worker`.
inline Status SetAmHandler(ucp_worker_h worker, unsigned id, ucp_am_recv_callback_t cb, void* arg) {
  ucp_am_handler_param_t hp{};
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                  UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  hp.id = id;
  hp.cb = cb;
  hp.arg = arg;
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  return FromUcs(ucp_worker_set_am_recv_handler(worker, &hp), "set AM handler");
}

// Force-closes an endpoint. Progresses `worker` for at most `max_wait` while UCX finishes the
// close, then hands the close request back to UCX, which completes it during later progress
// (ucp_request_free on a request in flight is allowed). A forced close of an endpoint whose peer
// died can stay in progress for a long time, so an I/O thread passes 0 and never spins here.
// REQUIRES: the caller owns the worker now.
inline void CloseEndpoint(ucp_worker_h worker, ucp_ep_h ep,
                          std::chrono::milliseconds max_wait = std::chrono::milliseconds(200)) {
  if (ep == nullptr) return;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_EP_CLOSE_FLAG_FORCE;
  void* r = ucp_ep_close_nbx(ep, &p);
  if (!UCS_PTR_IS_PTR(r)) return;
  const auto deadline = std::chrono::steady_clock::now() + max_wait;
  while (ucp_request_check_status(r) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline) {
    ucp_worker_progress(worker);
  }
  ucp_request_free(r);
}

// A UCP context and one worker, destroyed in the right order. Not thread-safe by itself: the
// owner serialises access (one progress thread, or a mutex).
class ContextAndWorker {
 public:
  ~ContextAndWorker() {
    if (worker_) ucp_worker_destroy(worker_);
    if (context_) ucp_cleanup(context_);
  }
  // `shared_context`: other threads call context-level functions (ucp_mem_map, ucp_rkey_pack)
  // while the worker's thread progresses; UCX then locks inside the context.
  static StatusOr<std::unique_ptr<ContextAndWorker>> Create(ucs_thread_mode_t mode, bool shared_context = false) {
    auto cw = std::unique_ptr<ContextAndWorker>(new ContextAndWorker());
    ucp_config_t* config = nullptr;
    ENGRAM_RETURN_IF_ERROR(FromUcs(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read"));
    // Our messages are at most ~1 MiB parts (pulls are split) or one push batch. Rendezvous
    // over tcp runs on emulated gets, 1.5-2x slower here than eager sends for 64 K-row pulls
    // (docs/benchmarks.md); shared memory is no worse eager. With RDMA NICs, whose zero-copy
    // rendezvous is worth having, set UCX_RNDV_THRESH explicitly: the environment wins.
    if (std::getenv("UCX_RNDV_THRESH") == nullptr) (void)ucp_config_modify(config, "RNDV_THRESH", "inf");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
    params.mt_workers_shared = shared_context ? 1 : 0;
    const ucs_status_t st = ucp_init(&params, config, &cw->context_);
    ucp_config_release(config);
    ENGRAM_RETURN_IF_ERROR(FromUcs(st, "ucp_init"));
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = mode;
    ENGRAM_RETURN_IF_ERROR(FromUcs(ucp_worker_create(cw->context_, &wp, &cw->worker_), "ucp_worker_create"));
    return cw;
  }
  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }

 private:
  ContextAndWorker() = default;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
};

}  // namespace engram::ucx

#endif  // ENGRAM_UCX_UTIL_H_
