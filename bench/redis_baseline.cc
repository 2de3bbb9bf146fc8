// RedisBaseline: redis-server lifecycle, pipelined loading and MGET through hiredis.
#include "bench/redis_baseline.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace engram::bench {
namespace {

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    close(fd);
    return -1;
  }
  const int port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

std::string Key(uint64_t row) { return "r" + std::to_string(row); }

}  // namespace

StatusOr<std::unique_ptr<RedisBaseline>> RedisBaseline::Start(const std::string& bin, int connections) {
  auto r = std::unique_ptr<RedisBaseline>(new RedisBaseline());
  const int port = FreeLoopbackPort();
  if (port <= 0) return Status::Unavailable("no free loopback port for redis");
  r->pid_ = fork();
  if (r->pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    freopen("/dev/null", "w", stdout);
    const std::string p = std::to_string(port);
    execl(bin.c_str(), bin.c_str(), "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
          "--protected-mode", "yes", static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 500 && r->ctx_.empty(); ++i) {
    redisContext* c = redisConnect("127.0.0.1", port);
    if (c != nullptr && c->err == 0) {
      redisReply* pong = static_cast<redisReply*>(redisCommand(c, "PING"));
      const bool ok = pong != nullptr && pong->type == REDIS_REPLY_STATUS;
      if (pong) freeReplyObject(pong);
      if (ok) {
        r->ctx_.push_back(c);
        break;
      }
    }
    if (c) redisFree(c);
    int status;
    if (waitpid(r->pid_, &status, WNOHANG) == r->pid_) {
      r->pid_ = -1;
      return Status::Unavailable("redis-server (" + bin + ") exited at start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (r->ctx_.empty()) return Status::Unavailable("redis-server did not answer within 10 s");
  while (static_cast<int>(r->ctx_.size()) < connections) {
    redisContext* c = redisConnect("127.0.0.1", port);
    if (c == nullptr || c->err != 0) {
      if (c) redisFree(c);
      return Status::Unavailable("second connection to redis-server failed");
    }
    r->ctx_.push_back(c);
  }
  return r;
}

RedisBaseline::~RedisBaseline() {
  for (redisContext* c : ctx_) redisFree(c);
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
}

Status RedisBaseline::Load(uint64_t n, size_t row_bytes, void (*fill)(uint64_t, uint8_t*, size_t)) {
  redisContext* ctx = ctx_[0];
  std::vector<uint8_t> v(row_bytes);
  constexpr uint64_t kPipeline = 1000;
  for (uint64_t first = 0; first < n; first += kPipeline) {
    const uint64_t end = std::min(n, first + kPipeline);
    for (uint64_t row = first; row < end; ++row) {
      fill(row, v.data(), row_bytes);
      const std::string k = Key(row);
      redisAppendCommand(ctx, "SET %b %b", k.data(), k.size(), v.data(), v.size());
    }
    for (uint64_t row = first; row < end; ++row) {
      void* reply = nullptr;
      if (redisGetReply(ctx, &reply) != REDIS_OK) return Status::IoError(std::string("redis SET: ") + ctx->errstr);
      freeReplyObject(reply);
    }
  }
  return Status::OK();
}

Status RedisBaseline::MGet(int conn, std::span<const uint64_t> rows, size_t row_bytes, uint8_t* out) {
  if (conn < 0 || static_cast<size_t>(conn) >= ctx_.size()) return Status::InvalidArgument("no such redis connection");
  redisContext* ctx = ctx_[conn];
  std::vector<std::string> keys;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (size_t first = 0; first < rows.size(); first += kMgetChunk) {
    const size_t end = std::min(rows.size(), first + kMgetChunk);
    keys.assign(1, "MGET");
    for (size_t i = first; i < end; ++i) keys.push_back(Key(rows[i]));
    argv.resize(keys.size());
    lens.resize(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      argv[i] = keys[i].data();
      lens[i] = keys[i].size();
    }
    if (redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      return Status::IoError(std::string("redis MGET: ") + ctx->errstr);
    }
  }
  Status s;
  for (size_t first = 0; first < rows.size(); first += kMgetChunk) {
    const size_t n = std::min(rows.size() - first, kMgetChunk);
    void* raw = nullptr;
    if (redisGetReply(ctx, &raw) != REDIS_OK) return Status::IoError(std::string("redis MGET: ") + ctx->errstr);
    auto* reply = static_cast<redisReply*>(raw);
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n) {
      if (s.ok()) s = Status::DataLoss("redis MGET returned the wrong shape");
    } else {
      for (size_t i = 0; i < n && s.ok(); ++i) {
        const redisReply* e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len != row_bytes) {
          s = Status::DataLoss("redis MGET: missing row");
          break;
        }
        std::memcpy(out + (first + i) * row_bytes, e->str, row_bytes);
      }
    }
    freeReplyObject(reply);
  }
  return s;
}

}  // namespace engram::bench
