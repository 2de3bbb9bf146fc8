// AdminHttpServer on Boost.Beast: async accept, one short-lived session per connection.
#include "ps/admin_http.h"

#include <utility>  // Before Asio: GCC 12 + C++20 needs std::exchange declared first.

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <thread>

namespace engram::ps {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const AdminHandlers* h) : stream_(std::move(socket)), handlers_(h) {}
  void Start() {
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) self->Respond();
    });
  }

 private:
  void Respond() {
    res_.version(req_.version());
    res_.keep_alive(false);
    const std::string target(req_.target());
    if (req_.method() != http::verb::get) {
      Set(http::status::method_not_allowed, "text/plain", "only GET is served\n");
    } else if (target == "/healthz") {
      const bool ok = handlers_->healthy ? handlers_->healthy() : true;
      Set(ok ? http::status::ok : http::status::service_unavailable, "text/plain", ok ? "ok\n" : "unhealthy\n");
    } else if (target == "/metrics") {
      Set(http::status::ok, "text/plain; version=0.0.4", handlers_->metrics());
    } else if (target == "/status") {
      Set(http::status::ok, "application/json", handlers_->status() + "\n");
    } else {
      Set(http::status::not_found, "text/plain", "not found; try /healthz, /metrics or /status\n");
    }
    res_.prepare_payload();
    stream_.expires_after(std::chrono::seconds(5));
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }
  void Set(http::status s, const char* type, std::string body) {
    res_.result(s);
    res_.set(http::field::content_type, type);
    res_.body() = std::move(body);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  const AdminHandlers* handlers_;
};

class Impl final : public AdminHttpServer {
 public:
  explicit Impl(AdminHandlers h) : handlers_(std::move(h)), acceptor_(ioc_) {}
  ~Impl() override {
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }
  Status Bind(const std::string& host, uint16_t port) {
    beast::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (ec) return Status::InvalidArgument("admin address '" + host + "': " + ec.message());
    const tcp::endpoint ep(addr, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Status::Unavailable("admin listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
    return Status::OK();
  }
  uint16_t port() const override { return port_; }

 private:
  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (!ec) std::make_shared<Session>(std::move(socket), &handlers_)->Start();
      if (acceptor_.is_open()) Accept();
    });
  }
  AdminHandlers handlers_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  uint16_t port_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<AdminHttpServer>> AdminHttpServer::Start(const std::string& host, uint16_t port,
                                                                  AdminHandlers handlers) {
  auto s = std::make_unique<Impl>(std::move(handlers));
  ENGRAM_RETURN_IF_ERROR(s->Bind(host, port));
  return std::unique_ptr<AdminHttpServer>(std::move(s));
}

}  // namespace engram::ps
