// EtcdClient over etcd's v3 JSON gateway: Beast HTTP/1.1, base64 keys and values.
#include "cluster/etcd_client.h"

#include <utility>  // Before Asio: GCC 12 + C++20 needs std::exchange declared first.

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <nlohmann/json.hpp>

#include "engram/host_port.h"

namespace engram::cluster {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int64_t Int(const Json& j, const char* field) {
  // etcd's gateway writes 64-bit integers as strings and leaves zero values out.
  if (!j.contains(field)) return 0;
  const Json& v = j[field];
  if (v.is_string()) return std::stoll(v.get<std::string>());
  if (v.is_number_integer()) return v.get<int64_t>();
  return 0;
}

StatusOr<KeyValue> ParseKv(const Json& j) {
  KeyValue kv;
  ENGRAM_ASSIGN_OR_RETURN(kv.key, Base64Decode(j.value("key", "")));
  ENGRAM_ASSIGN_OR_RETURN(kv.value, Base64Decode(j.value("value", "")));
  kv.create_revision = Int(j, "create_revision");
  kv.mod_revision = Int(j, "mod_revision");
  kv.lease = Int(j, "lease");
  return kv;
}

// The first key after every key starting with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // Everything.
}

}  // namespace

std::string Base64Encode(const std::string& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= uint8_t(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

StatusOr<std::string> Base64Decode(const std::string& in) {
  if (in.size() % 4 != 0) return Status::InvalidArgument("base64 text of " + std::to_string(in.size()) + " characters");
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + k];
      int d;
      if (c >= 'A' && c <= 'Z') d = c - 'A';
      else if (c >= 'a' && c <= 'z') d = c - 'a' + 26;
      else if (c >= '0' && c <= '9') d = c - '0' + 52;
      else if (c == '+') d = 62;
      else if (c == '/') d = 63;
      else if (c == '=' && i + 4 == in.size() && k >= 2) d = 0, ++pad;
      else return Status::InvalidArgument("not base64");
      v = (v << 6) | uint32_t(d);
    }
    out += char((v >> 16) & 0xff);
    if (pad < 2) out += char((v >> 8) & 0xff);
    if (pad < 1) out += char(v & 0xff);
  }
  return out;
}

struct EtcdClient::Conn {
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  bool open = false;
};

EtcdClient::EtcdClient(Options o) : options_(std::move(o)) {}
EtcdClient::~EtcdClient() = default;

StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(const Options& options) {
  auto c = std::unique_ptr<EtcdClient>(new EtcdClient(options));
  ENGRAM_RETURN_IF_ERROR(c->Get("/").status().WithContext("etcd at " + options.endpoint));
  return c;
}

Status EtcdClient::Call(const std::string& path, const std::string& body, std::string* reply) {
  std::lock_guard<std::mutex> lock(mu_);
  ENGRAM_ASSIGN_OR_RETURN(auto hp, ParseHostPort(options_.endpoint, /*allow_port_zero=*/false));
  for (int attempt = 0; attempt < 2; ++attempt) {  // A kept-alive connection etcd closed: reopen once.
    if (!conn_ || !conn_->open) {
      conn_ = std::make_unique<Conn>();
      beast::error_code ec;
      tcp::resolver resolver(conn_->ioc);
      auto results = resolver.resolve(hp.host, std::to_string(hp.port), ec);
      if (ec) return Status::Unavailable("etcd " + options_.endpoint + ": " + ec.message());
      conn_->stream.expires_after(options_.timeout);
      conn_->stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
      conn_->ioc.restart();
      conn_->ioc.run();
      if (ec) {
        conn_.reset();
        return ec == beast::error::timeout ? Status::DeadlineExceeded("connecting to etcd " + options_.endpoint)
                                           : Status::Unavailable("etcd " + options_.endpoint + ": " + ec.message());
      }
      conn_->open = true;
    }
    http::request<http::string_body> req{http::verb::post, path, 11};
    req.set(http::field::host, hp.host);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    http::response<http::string_body> res;
    beast::error_code ec;
    conn_->stream.expires_after(options_.timeout);
    http::async_write(conn_->stream, req, [&](beast::error_code e, size_t) {
      ec = e;
      if (!e) http::async_read(conn_->stream, conn_->buffer, res, [&](beast::error_code e2, size_t) { ec = e2; });
    });
    conn_->ioc.restart();
    conn_->ioc.run();
    if (ec) {
      const bool stale = attempt == 0 && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                                          ec == asio::error::broken_pipe || ec == asio::error::eof);
      conn_.reset();
      if (stale) continue;
      return ec == beast::error::timeout ? Status::DeadlineExceeded("etcd " + options_.endpoint + " did not answer " + path)
                                         : Status::Unavailable("etcd " + options_.endpoint + ": " + ec.message());
    }
    if (!res.keep_alive()) conn_->open = false;
    const unsigned code = res.result_int();
    if (code >= 500) return Status::Unavailable("etcd " + path + ": HTTP " + std::to_string(code) + " " + res.body());
    if (code != 200) {
      // The gateway's errors: {"error": "...", "code": grpc code, "message": "..."}.
      const Json j = Json::parse(res.body(), nullptr, false);
      const std::string msg = j.is_object() ? j.value("message", res.body()) : res.body();
      if (msg.find("not found") != std::string::npos) return Status::NotFound("etcd " + path + ": " + msg);
      return Status::InvalidArgument("etcd " + path + ": HTTP " + std::to_string(code) + " " + msg);
    }
    *reply = std::move(res.body());
    return Status::OK();
  }
  return Status::Unavailable("etcd " + options_.endpoint + ": connection closed");
}

namespace {
StatusOr<Json> ParseReply(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::DataLoss("etcd sent a reply that is not JSON");
  return j;
}
}  // namespace

StatusOr<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  Json body = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/kv/put", body.dump(), &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  return Int(j.value("header", Json::object()), "revision");
}

StatusOr<std::optional<KeyValue>> EtcdClient::Get(const std::string& key) {
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/kv/range", Json{{"key", Base64Encode(key)}}.dump(), &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  if (!j.contains("kvs") || j["kvs"].empty()) return std::optional<KeyValue>();
  ENGRAM_ASSIGN_OR_RETURN(KeyValue kv, ParseKv(j["kvs"][0]));
  return std::optional<KeyValue>(std::move(kv));
}

StatusOr<std::vector<KeyValue>> EtcdClient::Prefix(const std::string& prefix) {
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/kv/range",
                              Json{{"key", Base64Encode(prefix)}, {"range_end", Base64Encode(PrefixEnd(prefix))}}.dump(),
                              &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  std::vector<KeyValue> out;
  for (const Json& kv : j.value("kvs", Json::array())) {
    ENGRAM_ASSIGN_OR_RETURN(KeyValue parsed, ParseKv(kv));
    out.push_back(std::move(parsed));
  }
  return out;
}

StatusOr<bool> EtcdClient::Delete(const std::string& key) {
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/kv/deleterange", Json{{"key", Base64Encode(key)}}.dump(), &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  return Int(j, "deleted") > 0;
}

StatusOr<bool> EtcdClient::PutIf(const std::string& key, const std::string& value, int64_t expected_mod_revision,
                                 int64_t lease, const std::vector<std::string>& absent_keys) {
  Json put = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) put["lease"] = std::to_string(lease);
  Json compare = Json::array({{{"key", Base64Encode(key)},
                               {"target", "MOD"},
                               {"result", "EQUAL"},
                               {"mod_revision", std::to_string(expected_mod_revision)}}});
  for (const std::string& k : absent_keys) {  // A key that does not exist was created at revision 0.
    compare.push_back({{"key", Base64Encode(k)}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}});
  }
  const Json body = {{"compare", compare}, {"success", Json::array({{{"request_put", put}}})}};
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/kv/txn", body.dump(), &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  return j.value("succeeded", false);
}

StatusOr<int64_t> EtcdClient::GrantLease(int64_t ttl_s) {
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/lease/grant", Json{{"TTL", std::to_string(ttl_s)}}.dump(), &reply));
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(reply));
  const int64_t id = Int(j, "ID");
  if (id == 0) return Status::Unavailable("etcd granted no lease: " + reply);
  return id;
}

StatusOr<int64_t> EtcdClient::KeepAlive(int64_t lease) {
  std::string reply;
  ENGRAM_RETURN_IF_ERROR(Call("/v3/lease/keepalive", Json{{"ID", std::to_string(lease)}}.dump(), &reply));
  // The gateway streams keepalive replies; one request gets one {"result": {...}} line.
  const size_t nl = reply.find('\n');
  ENGRAM_ASSIGN_OR_RETURN(Json j, ParseReply(nl == std::string::npos ? reply : reply.substr(0, nl)));
  const Json r = j.value("result", j);
  const int64_t ttl = Int(r, "TTL");
  if (ttl <= 0) return Status::NotFound("etcd lease " + std::to_string(lease) + " expired");
  return ttl;
}

Status EtcdClient::Revoke(int64_t lease) {
  std::string reply;
  return Call("/v3/lease/revoke", Json{{"ID", std::to_string(lease)}}.dump(), &reply);
}

}  // namespace engram::cluster
