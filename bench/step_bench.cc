// engram-bench-step: a simulated training step with Engram layers, to measure what the
// parameter server adds to the step time (issue 4, part 3).
//
// Model of a GPU worker: each Transformer layer's compute is a sleep of --compute_us forward and
// the same backward (the GPU computes, the host thread waits, the CPU is free for the pulls),
// --layers layers, Engram at layers 1 and 15 with the reference shapes (max n-gram 3, 8 heads,
// 512 -> 64-dim f32 rows per head, so 16 lookups per token), --tokens per step drawn Zipf(1.1)
// over 128 K compressed ids, Adam tables. Modes, each run on the same token streams:
//   compute_only  the layers alone: the reference step time
//   prefetch      tables behind an engram-server, every Engram layer's rows prefetched at the
//                 start of the step (EngramPrefetcher, background completion); gradients pushed
//                 asynchronously in backward (--staleness: at most one step stale by default)
//   on_demand     tables behind the daemon, each layer's rows fetched when the layer runs
//   in_process    tables in this process (storage::Shard), rows gathered when the layer runs;
//                 gradients applied on a helper thread
// Reports step time p50, overhead vs compute_only, and the smallest --compute_us of the sweep at
// which prefetch keeps the overhead under 1 %.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <thread>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "client/client.h"
#include "client/dedup.h"
#include "client/engram_prefetch.h"
#include "storage/shard.h"

DEFINE_string(server_bin, "", "path of engram-server (default: the build tree's)");
DEFINE_string(compute_us, "2000,8000,32000,64000", "per-layer compute times (forward; backward the same) to sweep");
DEFINE_int32(layers, 30, "Transformer layers");
DEFINE_int32(batch, 8, "sequences per step");
DEFINE_int32(seq, 1024, "tokens per sequence");
DEFINE_int32(steps, 4, "timed steps per (mode, compute time), after one warm-up step");
DEFINE_int32(scale, 16, "divide the reference vocab sizes (646400 per n-gram order) by this");
DEFINE_string(modes, "compute_only,prefetch,on_demand,in_process", "modes to run");
DEFINE_int32(staleness, 1, "steps a push may lag: 1 = it overlaps the next step (asynchronous training), 0 = it lands before the next step's pulls");
DEFINE_bool(full, false, "more compute points and steps");
DEFINE_string(out, "", "write JSON results here");

namespace {

using namespace engram;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& what) {
  std::fprintf(stderr, "engram-bench-step: %s\n", what.c_str());
  return 1;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// One Engram layer's table in this process: the same hashing and layout as the prefetcher.
struct LocalLayer {
  std::unique_ptr<storage::Shard> shard;
  std::vector<uint64_t> ids, unique;
  std::vector<uint32_t> inverse;
  std::vector<float> staging, rows;
};

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // Rows appear as they are measured, also through tee.
  if (FLAGS_full) {
    FLAGS_compute_us = "250,500,1000,2000,4000,8000,16000,32000,64000";
    FLAGS_steps = 8;
  }
  client::EngramSpec spec;
  spec.engram_vocab_size = {646400 / FLAGS_scale, 646400 / FLAGS_scale};
  spec.layer_ids = {1, 15};
  spec.compressed_vocab_size = 128000;
  if (Status s = spec.Validate(); !s.ok()) return Fail(s.ToString());
  auto hasher = client::EngramHasher::Create(spec);
  if (!hasher.ok()) return Fail(hasher.status().ToString());
  const size_t B = FLAGS_batch, T = FLAGS_seq, n = B * T, k = spec.lookups_per_token();
  const uint32_t dim = spec.head_dim();

  // No --data_dir: the in-process tables are not durable either (durability costs are measured
  // by engram-bench-pull's durability section).
  auto daemon = bench::DaemonProcess::Start(FLAGS_server_bin, argv[0], {"--data_dir="});
  if (!daemon.ok()) return Fail("cannot start engram-server: " + daemon.status().ToString());
  client::ClientOptions o;
  o.servers = {(*daemon)->address()};
  auto cl = client::Client::Connect(o);
  if (!cl.ok()) return Fail("connect: " + cl.status().ToString());
  std::map<int64_t, LocalLayer> local;
  for (int64_t layer : spec.layer_ids) {
    TableSchema s;
    s.name = "engram_layer" + std::to_string(layer);
    s.num_rows = hasher->layer(layer)->table_rows;
    s.dim = dim;
    s.optimizer.kind = OptimizerKind::kAdam;
    s.optimizer.lr = 0.003f;
    s.init = {InitKind::kNormal, 0.02f, static_cast<uint64_t>(layer)};
    if (Status st = (*cl)->CreateTable(s, 4); !st.ok()) return Fail("create table: " + st.ToString());
    auto shard = storage::Shard::Create(s, 0, s.num_rows, {});
    if (!shard.ok()) return Fail("in-process shard: " + shard.status().ToString());
    local[layer].shard = std::move(shard).value();
  }
  auto pf = client::EngramPrefetcher::Create(cl->get(), spec, "engram");
  if (!pf.ok()) return Fail("prefetcher: " + pf.status().ToString());

  // Token streams: one per step (+1 warm-up), the same for every mode.
  bench::RowSampler sampler(spec.compressed_vocab_size, 1.1, 7);
  std::vector<std::vector<int64_t>> streams(FLAGS_steps + 1, std::vector<int64_t>(n));
  for (auto& s : streams) {
    for (auto& t : s) t = static_cast<int64_t>(sampler.Next());
  }
  std::vector<float> grads(n * k * dim, 1e-4f);
  // Steady state: every row the streams touch is materialised in both the daemon's and the
  // in-process tables before timing (a zero-gradient Adam step leaves values unchanged), so no
  // mode pays first-touch initialisation that an earlier mode already paid.
  for (int64_t layer : spec.layer_ids) {
    std::vector<uint64_t> ids(n * k), all;
    for (const auto& s : streams) {
      if (Status st = hasher->Hash(layer, s, B, T, {}, ids.data()); !st.ok()) return Fail(st.ToString());
      all.insert(all.end(), ids.begin(), ids.end());
    }
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    std::vector<float> zeros(all.size() * dim, 0.0f);
    storage::ApplyScratch scratch;
    auto table = (*cl)->OpenTable("engram_layer" + std::to_string(layer));
    if (!table.ok() || !(*table)->Push(all, zeros.data()).ok() ||
        !local[layer].shard->ApplyGradients(all, zeros.data(), &scratch).ok()) {
      return Fail("materialising the rows failed");
    }
  }

  nlohmann::json results = nlohmann::json::array();
  std::printf("simulated step: %d layers, Engram at layers 1 and 15, %zu tokens (%zu x %zu), %zu lookups/token, "
              "%u-dim f32 rows, %llu rows per table; forward + backward compute per layer = 2 x compute_us\n",
              FLAGS_layers, n, B, T, k, dim, static_cast<unsigned long long>(hasher->layer(1)->table_rows));
  std::printf("%10s | %-22s | %-22s | %-22s | %-22s\n", "compute_us", "compute_only ms", "prefetch ms (overhead)",
              "on_demand ms (overhead)", "in_process ms (overhead)");
  const auto modes = bench::SplitList(FLAGS_modes);
  int64_t under_1pct = -1;
  for (const auto& cu : bench::SplitList(FLAGS_compute_us)) {
    const auto compute = std::chrono::microseconds(std::stoll(cu));
    std::map<std::string, double> p50;
    std::map<std::string, double> wait_ms;
    for (const auto& mode : modes) {
      std::vector<double> steps_ms;
      double waited = 0;
      std::vector<std::future<Status>> pushes;
      for (int step = 0; step <= FLAGS_steps; ++step) {
        const auto& tokens = streams[step];
        const auto t0 = Clock::now();
        std::map<int64_t, std::unique_ptr<client::PrefetchHandle>> handles;
        if (mode == "prefetch") {
          for (int64_t layer : spec.layer_ids) {
            auto h = (*pf)->Prefetch(layer, tokens, B, T);
            if (!h.ok()) return Fail(h.status().ToString());
            handles[layer] = std::move(h).value();
          }
        }
        for (int layer = 0; layer < FLAGS_layers; ++layer) {
          const bool engram = std::find(spec.layer_ids.begin(), spec.layer_ids.end(), layer) != spec.layer_ids.end();
          if (engram && mode != "compute_only") {
            const auto w0 = Clock::now();
            if (mode == "on_demand") {
              auto h = (*pf)->Prefetch(layer, tokens, B, T);
              if (!h.ok()) return Fail(h.status().ToString());
              handles[layer] = std::move(h).value();
            }
            if (mode == "in_process") {
              LocalLayer& L = local[layer];
              L.ids.resize(n * k);
              if (Status s = hasher->Hash(layer, tokens, B, T, {}, L.ids.data()); !s.ok()) return Fail(s.ToString());
              client::Deduplicate(L.ids, &L.unique, &L.inverse);
              L.staging.resize(L.unique.size() * dim);
              if (Status s = L.shard->GatherF32(L.unique, L.staging.data()); !s.ok()) return Fail(s.ToString());
              L.rows.resize(n * k * dim);
              for (size_t i = 0; i < L.inverse.size(); ++i) {
                std::copy_n(&L.staging[size_t{L.inverse[i]} * dim], dim, &L.rows[i * dim]);
              }
            } else if (Status s = handles[layer]->Wait(); !s.ok()) {
              return Fail(s.ToString());
            }
            if (step > 0) waited += Ms(Clock::now() - w0);
          }
          std::this_thread::sleep_for(compute);
        }
        for (auto& f : pushes) {  // The previous step's (staleness 1), before this step's.
          if (Status s = f.get(); !s.ok()) return Fail("push: " + s.ToString());
        }
        pushes.clear();
        for (int layer = FLAGS_layers - 1; layer >= 0; --layer) {
          std::this_thread::sleep_for(compute);
          const bool engram = std::find(spec.layer_ids.begin(), spec.layer_ids.end(), layer) != spec.layer_ids.end();
          if (!engram || mode == "compute_only") continue;
          if (mode == "in_process") {
            LocalLayer& L = local[layer];
            // Copies: with staleness 1 this apply overlaps the next step, which rewrites L.
            pushes.push_back(std::async(std::launch::async, [shard = L.shard.get(), unique = L.unique,
                                                             inverse = L.inverse, &grads, dim] {
              std::vector<float> summed(unique.size() * dim);
              client::SumByInverse(inverse, unique.size(), dim, grads.data(), summed.data());
              storage::ApplyScratch scratch;
              return shard->ApplyGradients(unique, summed.data(), &scratch);
            }));
          } else {
            pushes.push_back(handles[layer]->PushGradsAsync(grads.data()));
          }
        }
        // With --staleness=0 this step's pushes land before the next step's pulls read; with 1
        // they overlap the next step and must land before its own pushes are issued.
        if (FLAGS_staleness == 0 || step == FLAGS_steps) {
          for (auto& f : pushes) {
            if (Status s = f.get(); !s.ok()) return Fail("push: " + s.ToString());
          }
          pushes.clear();
        }
        if (step > 0) steps_ms.push_back(Ms(Clock::now() - t0));
      }
      std::sort(steps_ms.begin(), steps_ms.end());
      p50[mode] = steps_ms[steps_ms.size() / 2];
      wait_ms[mode] = waited / FLAGS_steps;
    }
    auto cell = [&](const std::string& m) {
      if (!p50.count(m)) return std::string("-");
      char buf[64];
      const double base = p50.count("compute_only") ? p50["compute_only"] : 0;
      if (m == "compute_only" || base == 0) {
        std::snprintf(buf, sizeof(buf), "%9.1f", p50[m]);
      } else {
        std::snprintf(buf, sizeof(buf), "%9.1f (%+6.1f %%)", p50[m], (p50[m] / base - 1) * 100);
      }
      return std::string(buf);
    };
    std::printf("%10s | %-22s | %-22s | %-22s | %-22s\n", cu.c_str(), cell("compute_only").c_str(),
                cell("prefetch").c_str(), cell("on_demand").c_str(), cell("in_process").c_str());
    nlohmann::json row = {{"compute_us", std::stoll(cu)}, {"layers", FLAGS_layers}, {"tokens", n}};
    for (const auto& [m, v] : p50) {
      row[m] = {{"step_ms_p50", v}, {"engram_wait_ms_per_step", wait_ms[m]}};
      if (p50.count("compute_only") && m != "compute_only") row[m]["overhead_pct"] = (v / p50["compute_only"] - 1) * 100;
    }
    results.push_back(row);
    if (under_1pct < 0 && p50.count("prefetch") && p50.count("compute_only") &&
        p50["prefetch"] <= p50["compute_only"] * 1.01) {
      under_1pct = std::stoll(cu);
    }
  }
  if (under_1pct >= 0) {
    std::printf("smallest per-layer compute time of the sweep with prefetch overhead under 1 %%: %lld us\n",
                static_cast<long long>(under_1pct));
  } else {
    std::printf("prefetch overhead stayed above 1 %% at every compute time of the sweep\n");
  }
  if (!FLAGS_out.empty()) {
    std::ofstream(FLAGS_out) << nlohmann::json{{"step", results}, {"prefetch_under_1pct_compute_us", under_1pct}}.dump(1)
                             << "\n";
  }
  return 0;
}
