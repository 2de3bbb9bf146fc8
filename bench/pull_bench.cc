// engram-bench-pull: pull latency and throughput through a real engram-server, against the
// same gather done in-process, measured in the same run.
//
// Starts its own engram-server on 127.0.0.1 (ephemeral ports), creates a table, writes every
// row, then for each batch size measures, per call: the RPC pull, the one-sided pull (same host,
// shared memory), and the in-process baseline (storage::Shard::Gather on an identical shard in
// this process). Prints a table (p50/p99 latency, rows/s, ratios) and writes JSON to --out.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "bench/redis_baseline.h"
#include "client/client.h"
#include "storage/shard.h"

DEFINE_string(server_bin, "", "path of engram-server (default: next to this binary's build tree)");
DEFINE_uint64(rows, 1 << 20, "table rows");
DEFINE_uint32(row_bytes, 264, "bytes per row (opaque rows; 264 = DeepSeek-V4.1-Flash FP8 + scales)");
DEFINE_string(batches, "48,384,4096,32768", "batch sizes in rows (48 = one decode token's lookups)");
DEFINE_int32(iters, 200, "calls per batch size and path (fewer for large batches)");
DEFINE_double(zipf, 0.0, "Zipf exponent of row choice (0: uniform)");
DEFINE_string(out, "", "write JSON results here");
DEFINE_string(paths, "in_process,one_sided,rpc,redis,push", "paths to measure (for profiling one of them)");
DEFINE_uint32(push_dim, 64, "row dim (f32) of the push benchmark's Adam table");
DEFINE_bool(local_huge_pages, true, "back the in-process baseline's arena with transparent huge pages (false: 4 KiB pages, like the shared-memory arena a one-sided client maps)");
DEFINE_string(redis_server, "/usr/bin/redis-server", "redis-server binary for the Redis MGET baseline");

namespace {

using namespace engram;
using Clock = std::chrono::steady_clock;

struct Server {
  pid_t pid = -1;
  std::string address;
  ~Server() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

bool StartServer(const std::string& bin, Server* s) {
  char tmpl[] = "/tmp/engram_bench_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return false;
  const std::string ports = std::string(tmpl) + "/ports";
  s->pid = fork();
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    freopen("/dev/null", "w", stderr);
    execl(bin.c_str(), bin.c_str(), "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0",
          ("--port_file=" + ports).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 1500; ++i) {
    std::ifstream f(ports);
    int data = 0, admin = 0;
    if (f >> data >> admin) {
      s->address = "127.0.0.1:" + std::to_string(data);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

struct Stats {
  double p50_us, p99_us, rows_per_s;
};

template <typename F>
Stats Measure(int iters, size_t batch, F&& call) {
  std::vector<double> us;
  for (int w = 0; w < 3; ++w) call(w);  // Warm-up.
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) {
    const auto a = Clock::now();
    call(i);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], batch * iters / total};
}

std::vector<std::vector<uint64_t>> RowSets(size_t batch, int count, uint64_t rows, double zipf, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<double> cdf;
  if (zipf > 0) {
    cdf.resize(rows);
    double acc = 0;
    for (uint64_t k = 0; k < rows; ++k) cdf[k] = acc += 1.0 / std::pow(double(k + 1), zipf);
    for (auto& c : cdf) c /= acc;
  }
  std::vector<std::vector<uint64_t>> sets(count, std::vector<uint64_t>(batch));
  for (auto& s : sets) {
    for (auto& r : s) {
      if (zipf > 0) {
        const double u = std::uniform_real_distribution<double>(0, 1)(gen);
        r = std::min<uint64_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin(), rows - 1);
        r = (r * 0x9E3779B97F4A7C15ull) % rows;  // Hot rows spread over the table, not packed.
      } else {
        r = gen() % rows;
      }
    }
  }
  return sets;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::string bin = FLAGS_server_bin;
  if (bin.empty()) {
    const std::string self = argv[0];
    bin = self.substr(0, self.rfind('/')) + "/../ps/engram-server";
  }
  Server server;
  if (!StartServer(bin, &server)) {
    std::fprintf(stderr, "engram-bench-pull: cannot start %s; no ratios without the server\n", bin.c_str());
    return 1;
  }
  TableSchema schema;
  schema.name = "bench";
  schema.num_rows = FLAGS_rows;
  schema.dim = FLAGS_row_bytes;
  schema.dtype = DType::kBytes;
  schema.optimizer.kind = OptimizerKind::kNone;
  schema.init.kind = InitKind::kZeros;
  const size_t vb = schema.value_bytes();

  client::ClientOptions o;
  o.servers = {server.address};
  o.progress_thread = false;  // Blocking pulls progress the worker themselves; no thread competes for the cores.
  auto direct_client = client::Client::Connect(o);
  o.force_rma_get = true;  // ucp_get_nbx of whole slots (the RDMA path), here over shared memory.
  auto get_client = client::Client::Connect(o);
  o.force_rma_get = false;
  o.one_sided = false;
  auto rpc_client = client::Client::Connect(o);
  if (!direct_client.ok() || !get_client.ok() || !rpc_client.ok()) {
    std::fprintf(stderr, "engram-bench-pull: connect failed\n");
    return 1;
  }
  if (Status s = (*rpc_client)->CreateTable(schema, 1); !s.ok()) {
    std::fprintf(stderr, "engram-bench-pull: %s\n", s.ToString().c_str());
    return 1;
  }
  auto rpc = (*rpc_client)->OpenTable("bench");
  auto direct = (*direct_client)->OpenTable("bench");
  auto get = (*get_client)->OpenTable("bench");
  // Baseline: the same rows in an in-process shard (same arena code, no network).
  storage::ShardOptions local_options;
  if (!FLAGS_local_huge_pages) local_options.arena.huge_pages = storage::HugePages::kNever;
  auto local = storage::Shard::Create(schema, 0, schema.num_rows, local_options);
  if (!rpc.ok() || !direct.ok() || !get.ok() || !local.ok()) {
    std::fprintf(stderr, "engram-bench-pull: table setup failed\n");
    return 1;
  }
  {
    const uint64_t chunk = 32768;
    std::vector<uint8_t> vals(chunk * vb);
    std::vector<uint64_t> ids(chunk);
    for (uint64_t first = 0; first < schema.num_rows; first += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, schema.num_rows - first);
      ids.resize(n);
      for (uint64_t i = 0; i < n; ++i) {
        ids[i] = first + i;
        std::memset(&vals[i * vb], static_cast<int>((first + i) & 0xff), vb);
      }
      if (!(*rpc)->Put(ids, vals.data()).ok() || !(*local)->Put(ids, vals.data()).ok()) {
        std::fprintf(stderr, "engram-bench-pull: filling the table failed\n");
        return 1;
      }
    }
  }

  std::unique_ptr<bench::RedisBaseline> redis;
  if (FLAGS_paths.find("redis") != std::string::npos) {
    auto r = bench::RedisBaseline::Start(FLAGS_redis_server);
    if (!r.ok()) {
      std::fprintf(stderr, "engram-bench-pull: Redis baseline: %s (no ratio against nothing; --paths without redis to skip)\n",
                   r.status().ToString().c_str());
      return 1;
    }
    redis = std::move(r).value();
    Status s = redis->Load(schema.num_rows, vb, [](uint64_t row, uint8_t* out, size_t n) {
      std::memset(out, static_cast<int>(row & 0xff), n);
    });
    if (!s.ok()) {
      std::fprintf(stderr, "engram-bench-pull: loading Redis: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  nlohmann::json results = nlohmann::json::array();
  std::printf("pull of %u-byte rows, table of %llu rows, %s rows; server on %s; medians of per-call latency\n",
              FLAGS_row_bytes, static_cast<unsigned long long>(FLAGS_rows),
              FLAGS_zipf > 0 ? ("Zipf(" + std::to_string(FLAGS_zipf) + ")").c_str() : "uniform", server.address.c_str());
  std::printf("%8s | %-22s | %-22s | %-22s | %-22s | %9s %9s %9s\n", "batch", "in-process p50/p99 us",
              "one-sided p50/p99 us", "RPC p50/p99 us", "Redis MGET p50/p99 us", "1s/local", "rpc/local", "rpc/redis");
  std::stringstream ss(FLAGS_batches);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t batch = std::stoul(item);
    const int iters = batch > 4096 ? std::max(10, FLAGS_iters / 8) : FLAGS_iters;
    const auto sets = RowSets(batch, 16, schema.num_rows, FLAGS_zipf, batch);
    std::vector<uint8_t> out(batch * vb);
    auto wanted = [](const char* path) { return FLAGS_paths.find(path) != std::string::npos; };
    const Stats none{0, 0, 1};
    const Stats in_proc = wanted("in_process")
                              ? Measure(iters, batch, [&](int i) { (void)(*local)->Gather(sets[i % 16], out.data()).ok(); })
                              : none;
    const Stats one = wanted("one_sided")
                          ? Measure(iters, batch, [&](int i) { (void)(*direct)->Pull(sets[i % 16], out.data()).ok(); })
                          : none;
    const Stats rp = wanted("rpc") ? Measure(iters, batch, [&](int i) { (void)(*rpc)->Pull(sets[i % 16], out.data()).ok(); })
                                   : none;
    const Stats rd = redis ? Measure(iters, batch, [&](int i) { (void)redis->MGet(sets[i % 16], vb, out.data()).ok(); })
                           : none;
    std::printf("%8zu | %10.1f / %9.1f | %10.1f / %9.1f | %10.1f / %9.1f | %10.1f / %9.1f | %8.2fx %8.2fx %8.2fx\n",
                batch, in_proc.p50_us, in_proc.p99_us, one.p50_us, one.p99_us, rp.p50_us, rp.p99_us, rd.p50_us,
                rd.p99_us, one.rows_per_s / in_proc.rows_per_s, rp.rows_per_s / in_proc.rows_per_s,
                rp.rows_per_s / rd.rows_per_s);
    auto j = [](const Stats& s) { return nlohmann::json{{"p50_us", s.p50_us}, {"p99_us", s.p99_us}, {"rows_per_s", s.rows_per_s}}; };
    results.push_back({{"batch", batch}, {"row_bytes", FLAGS_row_bytes}, {"in_process", j(in_proc)},
                       {"one_sided", j(one)}, {"rpc", j(rp)}, {"redis_mget", j(rd)},
                       {"zipf", FLAGS_zipf}});
  }
  // Push: sparse Adam updates through the daemon vs the same apply in process.
  nlohmann::json push_results = nlohmann::json::array();
  if (FLAGS_paths.find("push") != std::string::npos) {
    TableSchema ps;
    ps.name = "bench_adam";
    ps.num_rows = FLAGS_rows;
    ps.dim = FLAGS_push_dim;
    ps.optimizer.kind = OptimizerKind::kAdam;
    ps.optimizer.lr = 0.001f;
    ps.init = {InitKind::kNormal, 0.02f, 1};
    auto local_adam = storage::Shard::Create(ps, 0, ps.num_rows, {});
    if (!local_adam.ok() || !(*rpc_client)->CreateTable(ps, 1).ok()) {
      std::fprintf(stderr, "engram-bench-pull: push table setup failed\n");
      return 1;
    }
    auto remote_adam = (*rpc_client)->OpenTable("bench_adam");
    std::printf("\npush of f32 gradients, dim %u, Adam; unique random rows; medians of per-call latency\n", ps.dim);
    std::printf("%8s | %-24s | %-24s | %9s\n", "batch", "in-process p50/p99 us", "through daemon p50/p99 us",
                "daemon/local");
    for (size_t batch : {size_t{4096}, size_t{32768}}) {
      auto sets = RowSets(batch, 8, ps.num_rows, 0.0, batch + 7);
      for (auto& set : sets) {  // Unique rows per call (the client sums duplicates anyway).
        std::sort(set.begin(), set.end());
        set.erase(std::unique(set.begin(), set.end()), set.end());
      }
      std::vector<float> g(batch * ps.dim, 1e-3f);
      storage::ApplyScratch scratch;
      for (const auto& set : sets) {  // Materialise the rows on both sides first.
        (void)(*local_adam)->ApplyGradients(set, g.data(), &scratch).ok();
        (void)(*remote_adam)->Push(set, g.data()).ok();
      }
      const int iters = batch > 4096 ? 16 : 64;
      const Stats loc = Measure(iters, batch, [&](int i) { (void)(*local_adam)->ApplyGradients(sets[i % 8], g.data(), &scratch).ok(); });
      const Stats rem = Measure(iters, batch, [&](int i) { (void)(*remote_adam)->Push(sets[i % 8], g.data()).ok(); });
      std::printf("%8zu | %11.1f / %10.1f | %11.1f / %10.1f | %8.2fx\n", batch, loc.p50_us, loc.p99_us, rem.p50_us,
                  rem.p99_us, rem.rows_per_s / loc.rows_per_s);
      push_results.push_back({{"batch", batch}, {"dim", ps.dim},
                              {"in_process", {{"p50_us", loc.p50_us}, {"p99_us", loc.p99_us}, {"rows_per_s", loc.rows_per_s}}},
                              {"daemon", {{"p50_us", rem.p50_us}, {"p99_us", rem.p99_us}, {"rows_per_s", rem.rows_per_s}}}});
    }
  }
  const auto st = (*direct_client)->stats();
  std::printf("one-sided client: %llu rows direct, %llu by RPC fallback, %llu torn copies\n",
              static_cast<unsigned long long>(st.rows_one_sided), static_cast<unsigned long long>(st.rows_rpc),
              static_cast<unsigned long long>(st.torn_copies));
  if (!FLAGS_out.empty()) std::ofstream(FLAGS_out) << nlohmann::json{{"pull", results}, {"push", push_results}}.dump(2) << "\n";
  return 0;
}
