// engram-bench-pull: pull (and push) throughput and latency through a real engram-server,
// against baselines measured in the same run.
//
// Starts its own engram-server on 127.0.0.1 (ephemeral ports) and, for the Redis baseline, its
// own redis-server. For each row size it creates a table of opaque rows, writes every row to the
// daemon, to an identical in-process shard and to Redis, then for each row distribution, client
// thread count and batch size times every path:
//   in_process  storage::Shard::Gather on the in-process shard (the local limit)
//   one_sided   the client reading the daemon's arena mapped over shared memory (same host)
//   rma_get     the client reading with ucp_get_nbx of whole slots (the RDMA path; here over
//               shared memory, since this machine has no RDMA NIC)
//   rpc_tcp     pull requests over UCX's tcp lanes (what a client on another host gets without RDMA)
//   rpc_shm     pull requests over UCX's shared-memory lanes (same host)
//   redis       pipelined MGETs of the same rows as keys, one connection per client thread
// Prints tables with ratios and writes every figure to --out as JSON. Exits non-zero when a
// baseline cannot start: no ratio against nothing.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "bench/redis_baseline.h"
#include "client/client.h"
#include "storage/shard.h"

DEFINE_string(server_bin, "", "path of engram-server (default: the build tree's)");
DEFINE_string(redis_server, "/usr/bin/redis-server", "redis-server binary for the Redis MGET baseline");
DEFINE_bool(full, false, "the whole matrix: 5 row sizes, 6 batch sizes, uniform and Zipf 1.0/1.1/1.2, 1 and 2 threads");
DEFINE_string(row_bytes, "128,264,1024,4096", "row sizes in bytes (264 = DeepSeek-V4.1-Flash FP8 + scales)");
DEFINE_string(batches, "384,1024,16384,65536", "batch sizes in rows (384 = 8 sequences x 1 token x 48 rows: decode)");
DEFINE_string(dists, "uniform,zipf1.1", "row distributions: uniform or zipfX");
DEFINE_string(threads, "1", "client thread counts");
DEFINE_string(paths, "in_process,one_sided,rma_get,rpc_tcp,rpc_shm,redis", "pull paths to time");
DEFINE_uint64(table_mb, 256, "table size per row size (rows = table_mb MiB / row bytes, at most 4 M)");
DEFINE_double(budget_s, 0.3, "seconds per (path, configuration)");
DEFINE_bool(push, true, "also time Adam pushes through the daemon against the in-process apply");
DEFINE_uint32(push_dim, 64, "row dim (f32) of the push benchmark's Adam table");
DEFINE_bool(durability, true, "also time Adam pushes against daemons with --durability=sync, async and without a data dir");
DEFINE_bool(local_huge_pages, true, "back the in-process baseline with transparent huge pages (false: 4 KiB pages)");
DEFINE_string(out, "", "write JSON results here");

namespace {

using namespace engram;
using engram::bench::Timing;

double ParseDist(const std::string& d) {
  if (d == "uniform") return 0;
  if (d.rfind("zipf", 0) == 0) return std::stod(d.substr(4));
  std::fprintf(stderr, "engram-bench-pull: unknown distribution '%s'\n", d.c_str());
  std::exit(2);
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "engram-bench-pull: %s\n", what.c_str());
  return 1;
}

// Clients of one path, one per client thread (each trainer process has its own).
struct PathClients {
  std::vector<std::unique_ptr<client::Client>> clients;
  std::vector<std::unique_ptr<client::TableHandle>> tables;
};

// The push benchmarks' table: 2^20 rows of --push_dim f32 with Adam.
TableSchema AdamPushSchema(const std::string& name) {
  TableSchema ps;
  ps.name = name;
  ps.num_rows = 1 << 20;
  ps.dim = FLAGS_push_dim;
  ps.optimizer.kind = OptimizerKind::kAdam;
  ps.optimizer.lr = 0.001f;
  ps.init = {InitKind::kNormal, 0.02f, 1};
  return ps;
}

StatusOr<PathClients> ConnectPath(const std::string& path, const std::string& address, int threads) {
  PathClients pc;
  client::ClientOptions o;
  o.servers = {address};
  o.progress_thread = false;  // Blocking pulls progress the worker themselves.
  o.one_sided = path == "one_sided" || path == "rma_get";
  o.force_rma_get = path == "rma_get";
  o.rpc_over_shared_memory = path == "rpc_shm";
  for (int t = 0; t < threads; ++t) {
    ENGRAM_ASSIGN_OR_RETURN(auto c, client::Client::Connect(o));
    pc.clients.push_back(std::move(c));
  }
  return pc;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // Rows appear as they are measured, also through tee.
  if (FLAGS_full) {
    if (!gflags::GetCommandLineFlagInfoOrDie("row_bytes").is_default ||
        !gflags::GetCommandLineFlagInfoOrDie("batches").is_default) {
      return Fail("--full sets --row_bytes, --batches, --dists and --threads; do not combine them");
    }
    FLAGS_row_bytes = "128,256,264,1024,4096";
    FLAGS_batches = "48,384,1024,4096,16384,65536";
    FLAGS_dists = "uniform,zipf1.0,zipf1.1,zipf1.2";
    FLAGS_threads = "1,2";
    FLAGS_budget_s = 1.0;
  }
  const auto paths = bench::SplitList(FLAGS_paths);
  auto wanted = [&](const std::string& p) { return std::find(paths.begin(), paths.end(), p) != paths.end(); };
  std::vector<int> thread_counts;
  for (const auto& t : bench::SplitList(FLAGS_threads)) thread_counts.push_back(std::stoi(t));
  const int max_threads = *std::max_element(thread_counts.begin(), thread_counts.end());

  // No --data_dir: compared with in-process tables and Redis without persistence (the
  // durability section below measures what the write-ahead log costs).
  auto daemon = bench::DaemonProcess::Start(FLAGS_server_bin, argv[0], {"--rma_max_bytes=2147483648", "--data_dir="});
  if (!daemon.ok()) return Fail("cannot start engram-server: " + daemon.status().ToString() + "; no ratios without it");
  const std::string address = (*daemon)->address();

  client::ClientOptions admin_options;
  admin_options.servers = {address};
  admin_options.one_sided = false;
  auto admin = client::Client::Connect(admin_options);
  if (!admin.ok()) return Fail("connect: " + admin.status().ToString());

  std::map<std::string, PathClients> clients;
  for (const auto& p : paths) {
    if (p == "in_process" || p == "redis") continue;
    // The tcp lanes are chosen by restricting this client's UCX context to tcp.
    if (p == "rpc_tcp") setenv("UCX_TLS", "tcp", 1);
    auto pc = ConnectPath(p, address, max_threads);
    if (p == "rpc_tcp") unsetenv("UCX_TLS");
    if (!pc.ok()) return Fail("connect (" + p + "): " + pc.status().ToString());
    clients[p] = std::move(pc).value();
  }

  nlohmann::json results = nlohmann::json::array();
  for (const auto& rb_item : bench::SplitList(FLAGS_row_bytes)) {
    const uint32_t row_bytes = static_cast<uint32_t>(std::stoul(rb_item));
    TableSchema schema;
    schema.name = "bench_" + rb_item;
    schema.num_rows = std::min<uint64_t>((FLAGS_table_mb << 20) / row_bytes, uint64_t{4} << 20);
    schema.dim = row_bytes;
    schema.dtype = DType::kBytes;
    schema.optimizer.kind = OptimizerKind::kNone;
    schema.init.kind = InitKind::kZeros;
    const size_t vb = schema.value_bytes();
    if (Status s = (*admin)->CreateTable(schema, 4); !s.ok()) return Fail("create table: " + s.ToString());
    storage::ShardOptions local_options;
    if (!FLAGS_local_huge_pages) local_options.arena.huge_pages = storage::HugePages::kNever;
    auto local = storage::Shard::Create(schema, 0, schema.num_rows, local_options);
    if (!local.ok()) return Fail("in-process shard: " + local.status().ToString());
    auto fill = [](uint64_t row, uint8_t* out, size_t n) { std::memset(out, static_cast<int>(row * 7 + 1), n); };
    {
      auto table = (*admin)->OpenTable(schema.name);
      if (!table.ok()) return Fail("open: " + table.status().ToString());
      const uint64_t chunk = 16384;
      std::vector<uint8_t> vals(chunk * vb);
      std::vector<uint64_t> ids(chunk);
      for (uint64_t first = 0; first < schema.num_rows; first += chunk) {
        const uint64_t n = std::min<uint64_t>(chunk, schema.num_rows - first);
        ids.resize(n);
        for (uint64_t i = 0; i < n; ++i) fill(ids[i] = first + i, &vals[i * vb], vb);
        if (!(*table)->Put(ids, vals.data()).ok() || !(*local)->Put(ids, vals.data()).ok()) {
          return Fail("filling the tables failed");
        }
      }
    }
    for (auto& [p, pc] : clients) {  // Open after filling, so that mappings are populated.
      pc.tables.clear();
      for (auto& c : pc.clients) {
        auto t = c->OpenTable(schema.name);
        if (!t.ok()) return Fail("open (" + p + "): " + t.status().ToString());
        pc.tables.push_back(std::move(t).value());
      }
    }
    std::unique_ptr<bench::RedisBaseline> redis;
    if (wanted("redis")) {
      auto r = bench::RedisBaseline::Start(FLAGS_redis_server, max_threads);
      if (!r.ok()) return Fail("Redis baseline: " + r.status().ToString() + " (no ratio against nothing; drop redis from --paths to skip)");
      redis = std::move(r).value();
      if (Status s = redis->Load(schema.num_rows, vb, fill); !s.ok()) return Fail("loading Redis: " + s.ToString());
    }

    for (const auto& dist : bench::SplitList(FLAGS_dists)) {
      const double zipf = ParseDist(dist);
      bench::RowSampler sampler(schema.num_rows, zipf, row_bytes);
      for (int threads : thread_counts) {
        std::printf("\npull of %u-byte rows, table of %llu rows (%.0f MiB), %s rows, %d client thread(s); "
                    "p50/p99 per call in us, M rows/s (all threads)\n",
                    row_bytes, static_cast<unsigned long long>(schema.num_rows),
                    schema.num_rows * double(vb) / (1 << 20), dist.c_str(), threads);
        std::printf("%7s", "batch");
        for (const auto& p : paths) std::printf(" | %-24s", p.c_str());
        std::printf(" | %s\n", "ratios: 1s/local get/local rpc_tcp/redis");
        for (const auto& b_item : bench::SplitList(FLAGS_batches)) {
          const size_t batch = std::stoul(b_item);
          constexpr int kSets = 8;
          std::vector<std::vector<std::vector<uint64_t>>> sets(threads);
          for (auto& s : sets) s = sampler.Batches(batch, kSets);
          std::vector<std::vector<uint8_t>> out(threads, std::vector<uint8_t>(batch * vb));
          std::map<std::string, Timing> timing;
          std::printf("%7zu", batch);
          bool failed = false;
          for (const auto& p : paths) {
            std::function<void(int, int)> call;
            if (p == "in_process") {
              call = [&](int t, int i) { failed |= !(*local)->Gather(sets[t][i % kSets], out[t].data()).ok(); };
            } else if (p == "redis") {
              call = [&](int t, int i) { failed |= !redis->MGet(t, sets[t][i % kSets], vb, out[t].data()).ok(); };
            } else {
              auto& pc = clients[p];
              call = [&](int t, int i) { failed |= !pc.tables[t]->Pull(sets[t][i % kSets], out[t].data()).ok(); };
            }
            const Timing tm = bench::Measure(threads, FLAGS_budget_s, 5, 100000, call);
            timing[p] = tm;
            const double rows_per_s = tm.calls_per_s * batch;
            std::printf(" | %8.1f /%8.1f %6.2f", tm.p50_us, tm.p99_us, rows_per_s / 1e6);
            results.push_back({{"row_bytes", row_bytes}, {"dist", dist}, {"threads", threads}, {"batch", batch},
                               {"path", p}, {"p50_us", tm.p50_us}, {"p99_us", tm.p99_us}, {"rows_per_s", rows_per_s},
                               {"gb_per_s", rows_per_s * vb / 1e9}, {"calls", tm.calls}});
          }
          if (failed) return Fail("a pull failed during timing; figures would be meaningless");
          auto ratio = [&](const char* a, const char* b) {
            return timing.count(a) && timing.count(b) && timing[b].calls_per_s > 0
                       ? timing[a].calls_per_s / timing[b].calls_per_s : 0.0;
          };
          std::printf(" | %5.2fx %5.2fx %5.2fx\n", ratio("one_sided", "in_process"), ratio("rma_get", "in_process"),
                      ratio("rpc_tcp", "redis"));
        }
      }
    }
    for (auto& [p, pc] : clients) pc.tables.clear();
    if (Status s = (*admin)->DropTable(schema.name); !s.ok()) return Fail("drop table: " + s.ToString());
  }

  // Push: sparse Adam updates through the daemon vs the same apply in process.
  nlohmann::json push_results = nlohmann::json::array();
  if (FLAGS_push) {
    const TableSchema ps = AdamPushSchema("bench_adam");
    auto local_adam = storage::Shard::Create(ps, 0, ps.num_rows, {});
    if (!local_adam.ok() || !(*admin)->CreateTable(ps, 4).ok()) return Fail("push table setup failed");
    auto remote_adam = (*admin)->OpenTable("bench_adam");
    if (!remote_adam.ok()) return Fail("open push table: " + remote_adam.status().ToString());
    std::printf("\npush of f32 gradients, dim %u, Adam; unique random rows; p50/p99 per call in us\n", ps.dim);
    std::printf("%8s | %-30s | %-30s | %9s\n", "batch", "in-process apply", "through the daemon (tcp)", "daemon/local");
    for (size_t batch : {size_t{1024}, size_t{4096}, size_t{32768}}) {
      // Unique rows per call (the client sums duplicates anyway).
      auto sets = bench::RowSampler(ps.num_rows, 0, batch + 7).UniqueBatches(batch, 8);
      std::vector<float> g(batch * ps.dim, 1e-3f);
      storage::ApplyScratch scratch;
      for (const auto& set : sets) {  // Materialise the rows on both sides first.
        if (!(*local_adam)->ApplyGradients(set, g.data(), &scratch).ok() || !(*remote_adam)->Push(set, g.data()).ok()) {
          return Fail("push warm-up failed");
        }
      }
      bool failed = false;
      const Timing loc = bench::Measure(1, FLAGS_budget_s * 2, 5, 100000, [&](int, int i) {
        failed |= !(*local_adam)->ApplyGradients(sets[i % 8], g.data(), &scratch).ok();
      });
      const Timing rem = bench::Measure(1, FLAGS_budget_s * 2, 5, 100000, [&](int, int i) {
        failed |= !(*remote_adam)->Push(sets[i % 8], g.data()).ok();
      });
      if (failed) return Fail("a push failed during timing");
      const double n = static_cast<double>(sets[0].size());
      std::printf("%8zu | %8.1f /%8.1f %6.2f M/s | %8.1f /%8.1f %6.2f M/s | %8.2fx\n", batch, loc.p50_us, loc.p99_us,
                  loc.calls_per_s * n / 1e6, rem.p50_us, rem.p99_us, rem.calls_per_s * n / 1e6,
                  rem.calls_per_s / loc.calls_per_s);
      push_results.push_back({{"batch", batch}, {"dim", ps.dim},
                              {"in_process", {{"p50_us", loc.p50_us}, {"p99_us", loc.p99_us}, {"rows_per_s", loc.calls_per_s * n}}},
                              {"daemon", {{"p50_us", rem.p50_us}, {"p99_us", rem.p99_us}, {"rows_per_s", rem.calls_per_s * n}}}});
    }
  }
  // Push throughput by durability mode: each mode gets its own daemon (same flags otherwise).
  nlohmann::json durability_results = nlohmann::json::array();
  if (FLAGS_durability) {
    std::printf("\npush of f32 gradients, dim %u, Adam, through a daemon by durability mode; unique random rows, "
                "p50 us per call, M rows/s (all client threads)\n", FLAGS_push_dim);
    std::printf("%8s %7s | %-22s | %-22s | %-22s | %s\n", "batch", "threads", "no data dir", "async (100 ms)",
                "sync (group commit)", "sync / none");
    const std::vector<std::pair<std::string, std::vector<std::string>>> modes = {
        {"none", {"--data_dir="}}, {"async", {"--durability=async", "--checkpoint_interval_s=0"}},
        {"sync", {"--durability=sync", "--checkpoint_interval_s=0"}}};
    struct Cell {
      double p50, rows_per_s;
    };
    std::map<std::pair<size_t, int>, std::map<std::string, Cell>> cells;
    for (const auto& [mode, flags] : modes) {
      auto d = bench::DaemonProcess::Start(FLAGS_server_bin, argv[0], flags);
      if (!d.ok()) return Fail("durability bench: cannot start engram-server (" + mode + "): " + d.status().ToString());
      client::ClientOptions o;
      o.servers = {(*d)->address()};
      o.progress_thread = false;
      std::vector<std::unique_ptr<client::Client>> cs;
      std::vector<std::unique_ptr<client::TableHandle>> ts;
      for (int t = 0; t < 4; ++t) {
        auto c = client::Client::Connect(o);
        if (!c.ok()) return Fail("durability bench: connect: " + c.status().ToString());
        cs.push_back(std::move(c).value());
      }
      const TableSchema ps = AdamPushSchema("adam");
      if (Status st = cs[0]->CreateTable(ps, 4); !st.ok()) return Fail("durability bench: " + st.ToString());
      for (auto& c : cs) {
        auto t = c->OpenTable("adam");
        if (!t.ok()) return Fail("durability bench: " + t.status().ToString());
        ts.push_back(std::move(t).value());
      }
      for (size_t batch : {size_t{256}, size_t{4096}}) {
        for (int threads : {1, 4}) {
          std::vector<std::vector<std::vector<uint64_t>>> sets(threads);
          for (int t = 0; t < threads; ++t) sets[t] = bench::RowSampler(ps.num_rows, 0, batch * 31 + t).UniqueBatches(batch, 8);
          std::vector<float> g(batch * ps.dim, 1e-3f);
          bool failed = false;
          const Timing tm = bench::Measure(threads, FLAGS_budget_s * 2, 5, 100000, [&](int t, int i) {
            failed |= !ts[t]->Push(sets[t][i % 8], g.data()).ok();
          });
          if (failed) return Fail("durability bench: a push failed (" + mode + ")");
          cells[{batch, threads}][mode] = {tm.p50_us, tm.calls_per_s * double(sets[0][0].size())};
          durability_results.push_back({{"mode", mode}, {"batch", batch}, {"threads", threads}, {"p50_us", tm.p50_us},
                                        {"rows_per_s", tm.calls_per_s * double(sets[0][0].size())}});
        }
      }
    }
    for (auto& [key, m] : cells) {
      std::printf("%8zu %7d", key.first, key.second);
      for (const char* mode : {"none", "async", "sync"}) {
        std::printf(" | %8.0f us %6.2f M/s", m[mode].p50, m[mode].rows_per_s / 1e6);
      }
      std::printf(" | %6.2fx\n", m["sync"].rows_per_s / m["none"].rows_per_s);
    }
  }
  for (auto& [p, pc] : clients) {
    if (pc.clients.empty()) continue;
    const auto st = pc.clients[0]->stats();
    std::printf("%s client 0: %llu rows one-sided (%llu by gets), %llu by RPC, %llu torn copies\n", p.c_str(),
                static_cast<unsigned long long>(st.rows_one_sided), static_cast<unsigned long long>(st.rows_rma_get),
                static_cast<unsigned long long>(st.rows_rpc), static_cast<unsigned long long>(st.torn_copies));
  }
  if (!FLAGS_out.empty()) {
    std::ofstream(FLAGS_out) << nlohmann::json{{"pull", results}, {"push", push_results}, {"push_durability", durability_results}}
                                    .dump(1)
                             << "\n";
  }
  return 0;
}
