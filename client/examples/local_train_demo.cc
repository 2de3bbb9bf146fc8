// engram-local-demo: a synthetic Engram training loop against in-process tables.
//
// Zipf-distributed token streams are hashed with the reference Engram addressing (layers 1 and
// 15 of the demo defaults, vocab sizes scaled down by --scale), the looked-up rows are
// de-duplicated and pulled, a toy objective is evaluated, and one summed gradient per unique row
// is pushed through Adam. The objective: for each position, the mean of its 16 head rows should
// equal a fixed pseudo-random target vector of the (previous token, token) bigram, so rows
// shared by frequent n-grams learn and the loss falls.
//
// This runs tables in the same process (storage + ps, no network). The daemon-backed demo with
// layer-ahead prefetch replaces it when the data plane lands. Last stdout line: one JSON object.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <vector>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "client/dedup.h"
#include "client/engram_hash.h"
#include "engram/init.h"
#include "ps/table_registry.h"

DEFINE_int32(steps, 150, "training steps");
DEFINE_int32(batch, 8, "sequences per step");
DEFINE_int32(seq, 256, "tokens per sequence");
DEFINE_int32(scale, 16, "divide the reference engram_vocab_size (646400) by this to fit the machine");
DEFINE_double(zipf, 1.1, "Zipf exponent of the token distribution");
DEFINE_int64(vocab, 128000, "compressed vocabulary size V");
DEFINE_double(lr, 0.003, "Adam learning rate of the Engram tables");
DEFINE_uint64(seed, 1, "seed of the token stream");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Samples token ids in [0, V) with P(k) proportional to 1 / (k+1)^s.
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
  std::cerr << "engram-local-demo: " << s.ToString() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("synthetic Engram training loop on in-process tables");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  using namespace engram;
  if (FLAGS_steps < 1 || FLAGS_batch < 1 || FLAGS_seq < 1 || FLAGS_scale < 1) {
    return Fail(Status::InvalidArgument("--steps, --batch, --seq and --scale must be >= 1"));
  }

  client::EngramSpec spec;
  spec.engram_vocab_size = {646400 / FLAGS_scale, 646400 / FLAGS_scale};
  spec.layer_ids = {1, 15};
  spec.compressed_vocab_size = FLAGS_vocab;
  auto hasher = client::EngramHasher::Create(spec);
  if (!hasher.ok()) return Fail(hasher.status());
  const uint32_t dim = static_cast<uint32_t>(spec.head_dim());
  const size_t k = static_cast<size_t>(spec.lookups_per_token());

  ps::TableRegistry registry;
  std::vector<std::shared_ptr<ps::Table>> tables;
  for (int64_t layer : spec.layer_ids) {
    TableSchema schema;
    schema.name = "engram_layer_" + std::to_string(layer);
    schema.num_rows = hasher->layer(layer)->table_rows;
    schema.dim = dim;
    schema.optimizer.kind = OptimizerKind::kAdam;
    schema.optimizer.lr = static_cast<float>(FLAGS_lr);
    schema.init = {InitKind::kNormal, 0.02f, static_cast<uint64_t>(layer)};
    auto t = registry.CreateTable(schema, 16);
    if (!t.ok()) return Fail(t.status());
    tables.push_back(*t);
    std::cerr << "table " << schema.name << ": " << schema.num_rows << " rows x " << dim << " f32 (Adam)\n";
  }

  ZipfSampler sampler(FLAGS_vocab, FLAGS_zipf, FLAGS_seed);
  const size_t B = FLAGS_batch, T = FLAGS_seq, n = B * T;
  std::vector<int64_t> tokens(n);
  std::vector<uint64_t> ids(n * k), unique;
  std::vector<uint32_t> inverse;
  std::vector<float> rows, grads(n * k * dim), unique_grads, targets(n * dim), pred(dim);
  client::HashScratch hash_scratch;
  client::DedupScratch dedup_scratch;
  const InitConfig target_init{InitKind::kNormal, 0.1f, 777};

  double loss_first = 0, loss_last = 0, hash_s = 0, pull_s = 0, push_s = 0;
  uint64_t pulled = 0, pushed = 0, hashed = 0;
  for (int step = 0; step < FLAGS_steps; ++step) {
    for (auto& t : tokens) t = sampler.Next();
    for (size_t p = 0; p < n; ++p) {
      const int64_t prev = p % T == 0 ? spec.pad_id : tokens[p - 1];
      InitialRow(target_init, static_cast<uint64_t>(prev) * FLAGS_vocab + tokens[p], dim, &targets[p * dim]);
    }
    double loss = 0;
    for (size_t li = 0; li < tables.size(); ++li) {
      const int64_t layer = spec.layer_ids[li];
      auto t0 = Clock::now();
      if (Status s = hasher->Hash(layer, tokens, B, T, {}, ids.data(), &hash_scratch); !s.ok()) return Fail(s);
      client::Deduplicate(ids, &unique, &inverse, &dedup_scratch);
      auto t1 = Clock::now();
      rows.resize(unique.size() * dim);
      if (Status s = tables[li]->Pull(unique, reinterpret_cast<uint8_t*>(rows.data())); !s.ok()) return Fail(s);
      auto t2 = Clock::now();
      // Forward and backward of the toy objective: 0.5 * ||mean_h row_h - target(bigram)||^2.
      const float inv_k = 1.0f / static_cast<float>(k);
      for (size_t p = 0; p < n; ++p) {
        const float* target = &targets[p * dim];
        std::fill(pred.begin(), pred.end(), 0.0f);
        for (size_t h = 0; h < k; ++h) {
          const float* r = rows.data() + size_t{inverse[p * k + h]} * dim;
          for (uint32_t c = 0; c < dim; ++c) pred[c] += r[c] * inv_k;
        }
        double l = 0;
        for (uint32_t c = 0; c < dim; ++c) {
          const float e = pred[c] - target[c];
          l += 0.5 * e * e;
          for (size_t h = 0; h < k; ++h) grads[(p * k + h) * dim + c] = e * inv_k / static_cast<float>(n);
        }
        loss += l / static_cast<double>(n * tables.size());
      }
      unique_grads.resize(unique.size() * dim);
      client::SumByInverse(inverse, unique.size(), dim, grads.data(), unique_grads.data());
      auto t3 = Clock::now();
      if (Status s = tables[li]->Push(unique, unique_grads.data()); !s.ok()) return Fail(s);
      auto t4 = Clock::now();
      hash_s += Seconds(t1 - t0);
      pull_s += Seconds(t2 - t1);
      push_s += Seconds(t4 - t3);
      hashed += ids.size();
      pulled += unique.size();
      pushed += unique.size();
    }
    if (step == 0) loss_first = loss;
    loss_last = loss;
    if (step % 10 == 0 || step + 1 == FLAGS_steps) {
      std::fprintf(stderr, "step %4d/%d  loss %.5f  unique rows/layer %zu\n", step + 1, FLAGS_steps, loss,
                   unique.size());
    }
  }
  nlohmann::json out = {
      {"mode", "in-process"},
      {"steps", FLAGS_steps},
      {"tokens_per_step", n},
      {"loss_first", loss_first},
      {"loss_last", loss_last},
      {"row_ids_hashed_per_s", hashed / hash_s},
      {"rows_pulled_per_s", pulled / pull_s},
      {"rows_pushed_per_s", pushed / push_s},
  };
  std::cout << out.dump() << std::endl;
  return loss_last < loss_first ? 0 : 3;
}
