// AdminHttpServer: the admin/metrics endpoint of engram-server (Boost.Beast over Asio):
//   GET /healthz  -> 200 "ok"
//   GET /metrics  -> Prometheus text exposition
//   GET /status   -> JSON
// Runs its own thread; every connection has a 5 s read/write deadline. Thread-safe to stop.
#ifndef ENGRAM_PS_ADMIN_HTTP_H_
#define ENGRAM_PS_ADMIN_HTTP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engram/status.h"

namespace engram::ps {

struct AdminHandlers {
  std::function<std::string()> metrics;  // Called on the HTTP thread.
  std::function<std::string()> status;
  std::function<bool()> healthy;
};

class AdminHttpServer {
 public:
  // Binds host:port (0: ephemeral). Fails with a clear message if the address is taken.
  static StatusOr<std::unique_ptr<AdminHttpServer>> Start(const std::string& host, uint16_t port,
                                                          AdminHandlers handlers);
  virtual ~AdminHttpServer() = default;
  virtual uint16_t port() const = 0;
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_ADMIN_HTTP_H_
