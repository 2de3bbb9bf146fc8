// engram-bench-move: what a live shard move costs a training client (issue 5).
//
// Two engram-server daemons (sync durability), an Adam table of --rows x --dim f32 rows in
// --shards shards, every row materialised first. A trainer pushes batches of --batch distinct
// Zipf(1.1) rows back to back. Phase 1 times its pushes with no move running (the reference);
// phase 2 moves --moves shards from node 0 to node 1 one after another (cluster/shard_mover.h)
// while it pushes. Reports per move: duration, rows and MB copied, the write freeze (freeze to
// flip: when pushes to that shard are refused and retried); and the trainer's push latency
// p50 / p99 / max in both phases, with failed pushes (there must be none).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "client/client.h"
#include "cluster/shard_mover.h"
#include "storage/optimizer.h"

DEFINE_string(server_bin, "", "path of engram-server (default: the build tree's)");
DEFINE_uint64(rows, 1 << 18, "table rows");
DEFINE_uint32(dim, 64, "f32 values per row (Adam: 3x that in bytes with its moments)");
DEFINE_uint32(shards, 8, "virtual shards");
DEFINE_int32(batch, 1024, "rows per push (distinct)");
DEFINE_int32(moves, 3, "shards moved in phase 2");
DEFINE_double(baseline_s, 3.0, "phase 1 seconds");
DEFINE_string(out, "", "write JSON results here");

namespace {

using namespace engram;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& what) {
  std::fprintf(stderr, "engram-bench-move: %s\n", what.c_str());
  return 1;
}

struct Latency {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  size_t n = 0;
};

Latency Summarise(std::vector<double> ms) {
  Latency l;
  l.n = ms.size();
  if (ms.empty()) return l;
  std::sort(ms.begin(), ms.end());
  l.p50_ms = ms[ms.size() / 2];
  l.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  l.max_ms = ms.back();
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("engram-bench-move: push latency of a trainer while shards move (see the source header)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::vector<std::unique_ptr<bench::DaemonProcess>> daemons;
  for (int n = 0; n < 2; ++n) {
    auto d = bench::DaemonProcess::Start(FLAGS_server_bin, argv[0], {"--node_id=" + std::to_string(n), "--threads=2"});
    if (!d.ok()) return Fail("starting a daemon: " + d.status().ToString());
    daemons.push_back(std::move(d).value());
  }
  client::ClientOptions o;
  for (const auto& d : daemons) o.servers.push_back(d->address());
  o.max_attempts = 30;  // A trainer meant to ride through moves.
  o.timeout = std::chrono::seconds(30);
  auto admin = client::Client::Connect(o);
  auto trainer_client = client::Client::Connect(o);
  if (!admin.ok() || !trainer_client.ok()) return Fail("connecting");
  TableSchema s;
  s.name = "moving";
  s.num_rows = FLAGS_rows;
  s.dim = FLAGS_dim;
  s.optimizer.kind = OptimizerKind::kAdam;
  s.init = {InitKind::kNormal, 0.02f, 1};
  // All shards on node 0 first: create on node 0's own client, then tell node 1 of the table.
  if (Status st = (*admin)->CreateTable(s, FLAGS_shards); !st.ok()) return Fail(st.ToString());
  cluster::ShardMover mover(admin->get(), nullptr);
  {  // Node 0 gets every shard: move the odd ones home (this also warms the move path).
    auto info = (*admin)->DescribeTable(s.name);
    for (uint32_t sh = 0; info.ok() && sh < info->owners.size(); ++sh) {
      if (info->owners[sh] != 0 && !mover.Move(s.name, sh, 0).ok()) return Fail("placing shards on node 0");
    }
  }
  auto table = (*trainer_client)->OpenTable(s.name);
  if (!table.ok()) return Fail(table.status().ToString());
  {  // Materialise every row (value + Adam moments) so the moves copy the whole table's share.
    std::vector<uint64_t> rows;
    std::vector<float> g;
    for (uint64_t first = 0; first < FLAGS_rows; first += 8192) {
      rows.clear();
      for (uint64_t r = first; r < std::min<uint64_t>(FLAGS_rows, first + 8192); ++r) rows.push_back(r);
      g.assign(rows.size() * FLAGS_dim, 0.001f);
      if (Status st = (*table)->Push(rows, g.data()); !st.ok()) return Fail("filling: " + st.ToString());
    }
  }
  std::atomic<int> phase{1};
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<double> lat[3];
  std::thread trainer([&] {
    bench::RowSampler sampler(FLAGS_rows, 1.1, 7);
    auto batches = sampler.UniqueBatches(FLAGS_batch, 64);
    std::vector<float> g(static_cast<size_t>(FLAGS_batch) * FLAGS_dim, 0.01f);
    for (size_t i = 0; !stop; ++i) {
      const auto& b = batches[i % batches.size()];
      const auto t0 = Clock::now();
      const Status st = (*table)->Push(b, g.data());
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (!st.ok()) failures++;
      lat[phase.load()].push_back(ms);
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(FLAGS_baseline_s));
  phase = 2;
  nlohmann::json moves = nlohmann::json::array();
  const size_t state = storage::OptimizerStateBytes(s.optimizer, s.dim);
  const double row_mb = (s.value_bytes() + state + 16) / 1e6;
  std::printf("table: %llu rows x %u f32 Adam (%.0f MB with moments), %u shards on node 0; trainer pushes %d distinct "
              "Zipf(1.1) rows\n",
              static_cast<unsigned long long>(FLAGS_rows), FLAGS_dim, FLAGS_rows * row_mb, FLAGS_shards, FLAGS_batch);
  std::printf("%-6s %10s %10s %10s %12s\n", "shard", "move ms", "rows", "MB/s", "freeze ms");
  for (int m = 0; m < FLAGS_moves; ++m) {
    const uint32_t shard = static_cast<uint32_t>(m);
    Clock::time_point frozen, flipped;
    uint64_t rows = 0;
    cluster::MoveOptions mo;
    mo.progress = [&](const cluster::MoveProgress& p) {
      rows = p.rows_copied;
      if (std::string(p.phase) == "freeze") frozen = Clock::now();
      if (std::string(p.phase) == "done") flipped = Clock::now();
    };
    const auto t0 = Clock::now();
    auto e = mover.Move(s.name, shard, 1, mo);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!e.ok()) return Fail("move: " + e.status().ToString());
    const double freeze_ms = std::chrono::duration<double, std::milli>(flipped - frozen).count();
    std::printf("%-6u %10.0f %10llu %10.1f %12.1f\n", shard, ms, static_cast<unsigned long long>(rows),
                rows * row_mb / (ms / 1e3), freeze_ms);
    moves.push_back({{"shard", shard}, {"ms", ms}, {"rows", rows}, {"mb_per_s", rows * row_mb / (ms / 1e3)},
                     {"freeze_ms", freeze_ms}});
  }
  stop = true;
  trainer.join();
  const Latency base = Summarise(lat[1]), during = Summarise(lat[2]);
  std::printf("trainer pushes  without moves: p50 %.2f ms  p99 %.2f ms  max %.1f ms  (%zu pushes)\n", base.p50_ms,
              base.p99_ms, base.max_ms, base.n);
  std::printf("trainer pushes  during moves:  p50 %.2f ms  p99 %.2f ms  max %.1f ms  (%zu pushes)\n", during.p50_ms,
              during.p99_ms, during.max_ms, during.n);
  std::printf("failed pushes: %d\n", failures.load());
  if (!FLAGS_out.empty()) {
    nlohmann::json j = {{"rows", FLAGS_rows}, {"dim", FLAGS_dim}, {"shards", FLAGS_shards}, {"batch", FLAGS_batch},
                        {"moves", moves}, {"failed_pushes", failures.load()},
                        {"baseline", {{"p50_ms", base.p50_ms}, {"p99_ms", base.p99_ms}, {"max_ms", base.max_ms}, {"n", base.n}}},
                        {"during", {{"p50_ms", during.p50_ms}, {"p99_ms", during.p99_ms}, {"max_ms", during.max_ms}, {"n", during.n}}}};
    std::ofstream(FLAGS_out) << j.dump(1) << "\n";
  }
  return failures.load() == 0 ? 0 : 1;
}
