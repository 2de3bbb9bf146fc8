// Starts a real etcd on 127.0.0.1 (free ports, temporary data directory) for a test, and
// always stops it. Pause()/Resume() (SIGSTOP/SIGCONT) simulate etcd becoming unreachable.
#ifndef ENGRAM_TESTS_TESTING_ETCD_PROCESS_H_
#define ENGRAM_TESTS_TESTING_ETCD_PROCESS_H_

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "cluster/etcd_client.h"

namespace engram::testing {

class EtcdProcess {
 public:
  static std::unique_ptr<EtcdProcess> Start() {
    auto e = std::unique_ptr<EtcdProcess>(new EtcdProcess());
    char tmpl[] = "/tmp/engram_etcd_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
    e->dir_ = tmpl;
    const int client = FreePort(), peer = FreePort();
    e->endpoint_ = "127.0.0.1:" + std::to_string(client);
    const std::string curl = "http://127.0.0.1:" + std::to_string(client);
    const std::string purl = "http://127.0.0.1:" + std::to_string(peer);
    std::vector<std::string> args = {"/usr/bin/etcd", "--name=t", "--data-dir=" + e->dir_ + "/data",
                                     "--listen-client-urls=" + curl, "--advertise-client-urls=" + curl,
                                     "--listen-peer-urls=" + purl, "--initial-advertise-peer-urls=" + purl,
                                     "--initial-cluster=t=" + purl, "--logger=zap", "--log-level=error"};
    e->pid_ = SpawnChild(std::move(args), e->dir_ + "/log");
    cluster::EtcdClient::Options o;
    o.endpoint = e->endpoint_;
    o.timeout = std::chrono::milliseconds(500);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      if (cluster::EtcdClient::Connect(o).ok()) return e;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("etcd did not answer within 20 s; see " + e->dir_ + "/log");
  }
  ~EtcdProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGCONT);
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::system(("rm -rf " + dir_).c_str());
  }
  const std::string& endpoint() const { return endpoint_; }
  void Pause() { kill(pid_, SIGSTOP); }
  void Resume() { kill(pid_, SIGCONT); }

 private:
  EtcdProcess() = default;
  static int FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    const int port = ntohs(sa.sin_port);
    close(fd);
    return port;
  }
  std::string dir_, endpoint_;
  pid_t pid_ = -1;
};

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_ETCD_PROCESS_H_
