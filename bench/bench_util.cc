// Benchmark helpers: daemon lifecycle, row samplers, multi-thread timing.
#include "bench/bench_util.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace engram::bench {

using Clock = std::chrono::steady_clock;

StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(const std::string& bin_flag, const std::string& argv0,
                                                              const std::vector<std::string>& extra_flags) {
  std::string bin = bin_flag;
  if (bin.empty()) bin = argv0.substr(0, argv0.rfind('/') + 1) + "../ps/engram-server";
  char tmpl[] = "/tmp/engram_bench_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Status::IoError("mkdtemp failed");
  const std::string ports = std::string(tmpl) + "/ports";
  std::vector<std::string> args = {bin, "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0", "--port_file=" + ports,
                                   std::string("--data_dir=") + tmpl + "/data"};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  auto d = std::unique_ptr<DaemonProcess>(new DaemonProcess());
  d->dir_ = tmpl;
  d->pid_ = fork();
  if (d->pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (std::freopen("/dev/null", "w", stderr) == nullptr) _exit(126);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  for (int i = 0; i < 1500; ++i) {
    std::ifstream f(ports);
    int data = 0, admin = 0;
    if (f >> data >> admin) {
      d->address_ = "127.0.0.1:" + std::to_string(data);
      return d;
    }
    int status;
    if (waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      return Status::Unavailable(bin + " exited at start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::Unavailable(bin + " did not write its port file within 15 s");
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  std::error_code ec;  // Best effort: a benchmark's leftovers must not fill /tmp (logs reach GBs).
  std::filesystem::remove_all(dir_, ec);
}

RowSampler::RowSampler(uint64_t rows, double exponent, uint64_t seed) : rows_(rows), exponent_(exponent), gen_(seed) {
  if (exponent_ > 0) {
    cdf_.resize(rows_);
    double acc = 0;
    for (uint64_t k = 0; k < rows_; ++k) cdf_[k] = acc += 1.0 / std::pow(double(k + 1), exponent_);
    for (auto& c : cdf_) c /= acc;
  }
}

uint64_t RowSampler::Next() {
  if (exponent_ <= 0) return gen_() % rows_;
  const double u = std::uniform_real_distribution<double>(0, 1)(gen_);
  const uint64_t rank = std::min<uint64_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(), rows_ - 1);
  return static_cast<uint64_t>((static_cast<unsigned __int128>(rank) * 0x9E3779B97F4A7C15ull) % rows_);
}

std::vector<std::vector<uint64_t>> RowSampler::Batches(size_t batch, int count) {
  std::vector<std::vector<uint64_t>> sets(count, std::vector<uint64_t>(batch));
  for (auto& s : sets) {
    for (auto& r : s) r = Next();
  }
  return sets;
}

std::vector<std::vector<uint64_t>> RowSampler::UniqueBatches(size_t batch, int count) {
  auto sets = Batches(batch, count);
  for (auto& set : sets) {
    std::sort(set.begin(), set.end());
    set.erase(std::unique(set.begin(), set.end()), set.end());
  }
  return sets;
}

Timing Measure(int threads, double budget_s, int min_calls, int max_calls, const std::function<void(int, int)>& call) {
  std::vector<std::vector<double>> us(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int w = 0; w < 2; ++w) call(t, w);
      const auto start = Clock::now();
      for (int i = 0; i < max_calls; ++i) {
        if (i >= min_calls && std::chrono::duration<double>(Clock::now() - start).count() > budget_s) break;
        const auto a = Clock::now();
        call(t, i);
        us[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      }
    });
  }
  for (auto& th : pool) th.join();
  std::vector<double> all;
  for (auto& v : us) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Timing r;
  r.calls = static_cast<int>(all.size());
  if (all.empty()) return r;
  r.p50_us = all[all.size() / 2];
  r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  // Throughput from the per-call times (the warm-up calls are outside the timed window).
  double busiest = 0;
  for (auto& v : us) {
    double sum = 0;
    for (double x : v) sum += x;
    busiest = std::max(busiest, sum);
  }
  r.calls_per_s = busiest > 0 ? all.size() / (busiest * 1e-6) : 0;
  return r;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace engram::bench
