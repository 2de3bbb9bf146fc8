// engram-train-demo: a synthetic Engram training loop against engram-server daemons, with
// layer-ahead prefetch through LayerPrefetcher (its CPU engine: the demo runs anywhere; a GPU
// worker makes the same calls on gpu::CreateLayerPrefetcher with its compute stream).
//
// Each step draws Zipf-distributed token streams, and at the start of the step issues the pulls
// for both Engram layers (1 and 15, as in the reference); the simulated Transformer layers
// compute (--layer_compute_us each) while the rows are in flight, and each Engram layer waits on
// its prefetch just before it runs (that wait is `prefetch_wait_ms`). The toy objective: for each
// position, the mean of its K head rows should equal a fixed pseudo-random vector of the
// (previous token, token) bigram; after backward, one summed gradient per unique row is pushed
// through the tables' Adam. Progress goes to stderr; the last stdout line is one JSON object.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "client/engram_prefetch.h"
#include "client/layer_prefetcher.h"
#include "engram/init.h"

DEFINE_string(servers, "", "HOST:PORT[,HOST:PORT...] of the engram-server nodes");
DEFINE_string(spec, "", "Engram spec JSON the tables were created from (engramctl create-table --spec)");
DEFINE_string(table_prefix, "engram", "tables are <prefix>_layer<L>");
DEFINE_int32(steps, 60, "training steps");
DEFINE_int32(batch, 8, "sequences per step");
DEFINE_int32(seq, 256, "tokens per sequence");
DEFINE_int32(layers, 30, "Transformer layers simulated per step");
DEFINE_int32(layer_compute_us, 2000, "simulated compute time of one Transformer layer (forward)");
DEFINE_double(zipf, 1.1, "Zipf exponent of the token distribution");
DEFINE_uint64(seed, 1, "seed of the token stream");
DEFINE_bool(async_push, true, "push each step's gradients on a helper thread while the next step runs (rows read up to one step stale); false: push before the next step");
DEFINE_bool(one_sided, true, "read rows one-sidedly where the servers' arenas can be mapped (same host)");

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class ZipfSampler {
 public:
  ZipfSampler(int64_t v, double s, uint64_t seed) : gen_(seed), cdf_(v) {
    double acc = 0;
    for (int64_t k = 0; k < v; ++k) cdf_[k] = acc += 1.0 / std::pow(double(k + 1), s);
    for (auto& c : cdf_) c /= acc;
  }
  int64_t Next() {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(gen_);
    return std::min<int64_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(), cdf_.size() - 1);
  }

 private:
  std::mt19937_64 gen_;
  std::vector<double> cdf_;
};

int Fail(const engram::Status& s) {
  std::cerr << "engram-train-demo: " << s.ToString() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("synthetic Engram training loop with layer-ahead prefetch");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  using namespace engram;
  if (FLAGS_steps < 1 || FLAGS_batch < 1 || FLAGS_seq < 1 || FLAGS_layers < 2) {
    return Fail(Status::InvalidArgument("--steps, --batch, --seq must be >= 1 and --layers >= 2"));
  }
  auto spec = client::EngramSpec::FromFile(FLAGS_spec);
  if (!spec.ok()) return Fail(spec.status());
  client::ClientOptions opts;
  opts.one_sided = FLAGS_one_sided;
  std::stringstream ss(FLAGS_servers);
  for (std::string s; std::getline(ss, s, ',');) opts.servers.push_back(s);
  auto cl = client::Client::Connect(opts);
  if (!cl.ok()) return Fail(cl.status());
  auto hasher = client::EngramHasher::Create(*spec);
  if (!hasher.ok()) return Fail(hasher.status());
  auto io = client::TableRowIo(cl->get(), *hasher, FLAGS_table_prefix);
  if (!io.ok()) return Fail(io.status());
  const size_t B = FLAGS_batch, T = FLAGS_seq, n = B * T;
  const size_t k = static_cast<size_t>(spec->lookups_per_token());
  const uint32_t dim = static_cast<uint32_t>(spec->head_dim());
  client::LayerPrefetcherOptions po;
  po.max_batch = B;
  po.max_seq = T;
  po.max_in_flight = 2 * spec->layer_ids.size();  // This step's tickets and the last step's (pushing).
  po.dim = dim;
  {
    auto first = cl->get()->OpenTable(FLAGS_table_prefix + "_layer" + std::to_string(spec->layer_ids.at(0)));
    if (!first.ok()) return Fail(first.status());
    po.dtype = (*first)->schema().dtype;
  }
  auto pf = client::CreateCpuLayerPrefetcher(&*hasher, *io, po);
  if (!pf.ok()) return Fail(pf.status());
  const InitConfig target_init{InitKind::kNormal, 0.1f, 777};
  ZipfSampler sampler(spec->compressed_vocab_size, FLAGS_zipf, FLAGS_seed);
  std::vector<int64_t> tokens(n);
  std::vector<float> targets(n * dim), pred(dim);
  // Each Engram layer's gradients, [B][T][K][dim].
  std::vector<std::vector<float>> grads(spec->layer_ids.size(), std::vector<float>(n * k * dim));
  const auto compute = std::chrono::microseconds(FLAGS_layer_compute_us);

  double loss_first = 0, loss_last = 0, pull_rows = 0, push_rows = 0, push_s = 0;
  std::vector<double> waits_ms;
  std::vector<std::vector<double>> layer_waits_ms(spec->layer_ids.size());
  std::vector<std::pair<int, std::shared_future<Status>>> pushes;  // The previous step's, with --async_push.
  const auto t_start = Clock::now();
  for (int step = 0; step < FLAGS_steps; ++step) {
    for (auto& t : tokens) t = sampler.Next();
    // Issue every Engram layer's pulls now: they travel while the layers before them compute.
    std::vector<int> handles;
    for (int64_t layer : spec->layer_ids) {
      auto h = (*pf)->Prefetch(layer, tokens, B, T);
      if (!h.ok()) return Fail(h.status());
      handles.push_back(*h);
    }
    for (size_t p = 0; p < n; ++p) {
      const int64_t prev = p % T == 0 ? spec->pad_id : tokens[p - 1];
      InitialRow(target_init, static_cast<uint64_t>(prev) * spec->compressed_vocab_size + tokens[p], dim, &targets[p * dim]);
    }
    double loss = 0;
    size_t next_engram = 0;
    for (int layer = 0; layer < FLAGS_layers; ++layer) {
      if (next_engram < handles.size() && layer == spec->layer_ids[next_engram]) {
        const int h = handles[next_engram++];
        const auto w0 = Clock::now();
        auto acquired = (*pf)->Acquire(h, /*compute_stream=*/nullptr);
        if (!acquired.ok()) return Fail(acquired.status());
        waits_ms.push_back(Seconds(Clock::now() - w0) * 1e3);
        layer_waits_ms[next_engram - 1].push_back(waits_ms.back());
        pull_rows += (*pf)->num_unique_rows(h);
        // The Engram module of this layer: forward and backward of the toy objective.
        const float inv_k = 1.0f / static_cast<float>(k);
        const float* rows = static_cast<const float*>(*acquired);
        for (size_t p = 0; p < n; ++p) {
          std::fill(pred.begin(), pred.end(), 0.0f);
          for (size_t j = 0; j < k; ++j) {
            const float* r = rows + (p * k + j) * dim;
            for (uint32_t c = 0; c < dim; ++c) pred[c] += r[c] * inv_k;
          }
          for (uint32_t c = 0; c < dim; ++c) {
            const float e = pred[c] - targets[p * dim + c];
            loss += 0.5 * e * e / static_cast<double>(n * handles.size());
            for (size_t j = 0; j < k; ++j) grads[next_engram - 1][(p * k + j) * dim + c] = e * inv_k / static_cast<float>(n);
          }
        }
      }
      std::this_thread::sleep_for(compute);  // The Transformer layer's own compute.
    }
    // Backward done: one summed gradient per unique row, per Engram layer. The previous
    // step's pushes must have landed first (staleness stays at most one step).
    const auto p0 = Clock::now();
    for (auto& [h, f] : pushes) {
      if (Status s = f.get(); !s.ok()) return Fail(s);
      (*pf)->Release(h);
    }
    pushes.clear();
    for (size_t i = 0; i < handles.size(); ++i) {
      const int h = handles[i];
      push_rows += (*pf)->num_unique_rows(h);
      auto pushed = (*pf)->PushGrads(h, grads[i].data(), nullptr);  // Summed before it returns: grads is free.
      if (!pushed.ok()) return Fail(pushed.status());
      pushes.emplace_back(h, *pushed);
      if (!FLAGS_async_push) {
        if (Status s = pushes.back().second.get(); !s.ok()) return Fail(s);
      }
    }
    push_s += Seconds(Clock::now() - p0);
    if (step == 0) loss_first = loss;
    loss_last = loss;
    if (step % 10 == 0 || step + 1 == FLAGS_steps) {
      std::fprintf(stderr, "step %4d/%d  loss %.5f  prefetch wait %.3f ms\n", step + 1, FLAGS_steps, loss,
                   waits_ms.back());
    }
  }
  for (auto& [h, f] : pushes) {  // The last step's pushes.
    if (Status s = f.get(); !s.ok()) return Fail(s);
    (*pf)->Release(h);
  }
  const double total_s = Seconds(Clock::now() - t_start);
  auto p50 = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> sorted = waits_ms;
  std::sort(sorted.begin(), sorted.end());
  nlohmann::json per_layer = nlohmann::json::object();
  for (size_t i = 0; i < layer_waits_ms.size(); ++i) {
    per_layer[std::to_string(spec->layer_ids[i])] = p50(layer_waits_ms[i]);
  }
  const double compute_s = double(FLAGS_steps) * FLAGS_layers * FLAGS_layer_compute_us * 1e-6;
  nlohmann::json out = {
      {"steps", FLAGS_steps},
      {"servers", opts.servers.size()},
      {"one_sided", FLAGS_one_sided},
      {"rows_read_one_sided", (*cl)->stats().rows_one_sided},
      {"rows_read_rpc", (*cl)->stats().rows_rpc},
      {"tokens_per_step", n},
      {"loss_first", loss_first},
      {"loss_last", loss_last},
      // Unique rows moved per second of the run (pulls and pushes overlap the compute).
      {"rows_pulled_per_s", pull_rows / total_s},
      {"rows_pushed_per_s", push_rows / total_s},
      {"async_push", FLAGS_async_push},
      {"push_wait_ms_per_step", push_s / FLAGS_steps * 1e3},
      {"prefetch_wait_ms_p50", sorted[sorted.size() / 2]},
      {"prefetch_wait_ms_p99", sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)]},
      {"prefetch_wait_ms_p50_by_layer", per_layer},
      {"step_ms", total_s / FLAGS_steps * 1e3},
      {"simulated_compute_ms_per_step", compute_s / FLAGS_steps * 1e3},
  };
  std::cout << out.dump() << std::endl;
  return loss_last < loss_first ? 0 : 3;
}
