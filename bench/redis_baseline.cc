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

StatusOr<std::unique_ptr<RedisBaseline>> RedisBaseline::Start(const std::string& bin) {
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
  for (int i = 0; i < 500; ++i) {
    r->ctx_ = redisConnect("127.0.0.1", port);
    if (r->ctx_ != nullptr && r->ctx_->err == 0) {
      redisReply* pong = static_cast<redisReply*>(redisCommand(r->ctx_, "PING"));
      const bool ok = pong != nullptr && pong->type == REDIS_REPLY_STATUS;
      if (pong) freeReplyObject(pong);
      if (ok) return r;
    }
    if (r->ctx_) redisFree(r->ctx_);
    r->ctx_ = nullptr;
    int status;
    if (waitpid(r->pid_, &status, WNOHANG) == r->pid_) {
      r->pid_ = -1;
      return Status::Unavailable("redis-server (" + bin + ") exited at start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Unavailable("redis-server did not answer within 10 s");
}

RedisBaseline::~RedisBaseline() {
  if (ctx_) redisFree(ctx_);
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
}

Status RedisBaseline::Load(uint64_t n, size_t row_bytes, void (*fill)(uint64_t, uint8_t*, size_t)) {
  std::vector<uint8_t> v(row_bytes);
  constexpr uint64_t kPipeline = 1000;
  for (uint64_t first = 0; first < n; first += kPipeline) {
    const uint64_t end = std::min(n, first + kPipeline);
    for (uint64_t row = first; row < end; ++row) {
      fill(row, v.data(), row_bytes);
      const std::string k = Key(row);
      redisAppendCommand(ctx_, "SET %b %b", k.data(), k.size(), v.data(), v.size());
    }
    for (uint64_t row = first; row < end; ++row) {
      void* reply = nullptr;
      if (redisGetReply(ctx_, &reply) != REDIS_OK) return Status::IoError(std::string("redis SET: ") + ctx_->errstr);
      freeReplyObject(reply);
    }
  }
  return Status::OK();
}

Status RedisBaseline::MGet(std::span<const uint64_t> rows, size_t row_bytes, uint8_t* out) {
  std::vector<std::string> keys;
  keys.reserve(rows.size() + 1);
  keys.push_back("MGET");
  for (uint64_t r : rows) keys.push_back(Key(r));
  std::vector<const char*> argv(keys.size());
  std::vector<size_t> lens(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    argv[i] = keys[i].data();
    lens[i] = keys[i].size();
  }
  redisReply* reply = static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (reply == nullptr) return Status::IoError(std::string("redis MGET: ") + ctx_->errstr);
  Status s;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != rows.size()) {
    s = Status::DataLoss("redis MGET returned the wrong shape");
  } else {
    for (size_t i = 0; i < rows.size(); ++i) {
      const redisReply* e = reply->element[i];
      if (e->type != REDIS_REPLY_STRING || e->len != row_bytes) {
        s = Status::DataLoss("redis MGET: missing row");
        break;
      }
      std::memcpy(out + i * row_bytes, e->str, row_bytes);
    }
  }
  freeReplyObject(reply);
  return s;
}

}  // namespace engram::bench
