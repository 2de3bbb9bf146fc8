// Starts a real engram-server on 127.0.0.1 with ephemeral ports for a test, and always stops it.
#ifndef ENGRAM_TESTS_TESTING_SERVER_PROCESS_H_
#define ENGRAM_TESTS_TESTING_SERVER_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.h"

namespace engram::testing {

class ServerProcess {
 public:
  // Waits (up to 30 s) until the server wrote its port file; throws if it does not.
  static std::unique_ptr<ServerProcess> Start(uint32_t node_id, std::vector<std::string> flags = {}) {
    auto s = std::unique_ptr<ServerProcess>(new ServerProcess());
    char tmpl[] = "/tmp/engram_srv_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
    s->dir_ = tmpl;
    s->node_id_ = node_id;
    s->flags_ = std::move(flags);
    s->Launch(0);
    return s;
  }

  // Flips one byte in the middle of the largest write-ahead log segment (a bad sector, a bad
  // copy), for a stopped server. Returns the segment's size (0: no segment).
  // `under`: another folder of the data directory (e.g. "checkpoints": its largest file).
  uintmax_t DamageLog(const std::string& under = "wal") const {
    std::string segment;
    uintmax_t size = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_ + "/data/" + under)) {
      if (e.is_regular_file() && e.file_size() > size) size = e.file_size(), segment = e.path().string();
    }
    if (size == 0) return 0;
    const int fd = ::open(segment.c_str(), O_RDWR);
    if (fd < 0) return 0;
    uint8_t b = 0;
    if (::pread(fd, &b, 1, static_cast<off_t>(size / 2)) == 1) {
      b ^= 0xff;
      if (::pwrite(fd, &b, 1, static_cast<off_t>(size / 2)) != 1) size = 0;
    }
    ::close(fd);
    return size;
  }
  // A flag for the next Start/Restart (after those given; the last of a flag wins).
  void AddFlag(std::string flag) { flags_.push_back(std::move(flag)); }
  // Starts the server again after Stop() or Kill9(): same flags, same data directory (so it
  // recovers its tables), same data port (clients reconnect to the address they know).
  // A few tries, a second apart: what made the first fail (the old lease not yet expired, the
  // port not yet free) is usually gone by the next.
  void Restart() {
    if (pid_ > 0) throw std::runtime_error("Restart of a running server");
    for (int attempt = 1;; ++attempt) {
      try {
        Launch(port_);
        return;
      } catch (const std::runtime_error&) {
        if (attempt == 5) throw;
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
  }

  // After a failed test the directory (log and data) is kept, and the log's tail printed, so
  // that a rare failure can be read afterwards.
  ~ServerProcess() {
    Stop();
    if (::testing::Test::HasFailure()) {
      std::string text = log();
      if (text.size() > 4000) text = "..." + text.substr(text.size() - 4000);
      std::fprintf(stderr, "node %u's log (kept in %s):\n%s\n", node_id_, dir_.c_str(), text.c_str());
      return;
    }
    std::system(("rm -rf " + dir_).c_str());
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // The server's directory (its --data_dir is dir() + "/data").
  const std::string& dir() const { return dir_; }
  uint16_t admin_port() const { return admin_port_; }
  // What the server logged so far (all its runs).
  std::string log() const {
    std::ifstream f(dir_ + "/log");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  pid_t pid() const { return pid_; }

  // SIGTERM, then SIGKILL if it has not exited within 10 s. Returns the exit status.
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    exit_status_ = status;
    return status;
  }
  void Kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGSTOP / SIGCONT: the daemon freezes (a long pause, or a partition) and comes back.
  void Pause() {
    if (pid_ > 0) kill(pid_, SIGSTOP);
  }
  void Resume() {
    if (pid_ > 0) kill(pid_, SIGCONT);
  }

 private:
  ServerProcess() = default;

  void Launch(uint16_t port) {
    const std::string port_file = dir_ + "/ports";
    std::remove(port_file.c_str());
    std::vector<std::string> args = {ENGRAM_SERVER_PATH, "--listen=127.0.0.1:" + std::to_string(port),
                                     "--admin_listen=127.0.0.1:0", "--node_id=" + std::to_string(node_id_),
                                     "--port_file=" + port_file, "--data_dir=" + dir_ + "/data"};
    args.insert(args.end(), flags_.begin(), flags_.end());
    pid_ = SpawnChild(std::move(args), dir_ + "/log");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream f(port_file);
      if (f >> port_ >> admin_port_) return;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        std::ifstream log(dir_ + "/log");
        std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
        if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
        throw std::runtime_error("engram-server exited at start; its log:\n" + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("engram-server did not start within 30 s");
  }

  std::string dir_;
  uint32_t node_id_ = 0;
  std::vector<std::string> flags_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
  uint16_t port_ = 0, admin_port_ = 0;
};

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_TESTING_SERVER_PROCESS_H_
