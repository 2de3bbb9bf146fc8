// PushDedup: per-client windows of push outcomes.
#include "ps/push_dedup.h"

#include <algorithm>
#include <iterator>

#include "engram/mix.h"

namespace engram::ps {

PushDedup::PushDedup(size_t window, std::chrono::milliseconds idle_forget, std::function<int64_t()> now_ms)
    : window_(window),
      idle_forget_ms_(idle_forget.count()),
      now_ms_(now_ms ? std::move(now_ms) : SteadyNowMs) {}

std::map<uint64_t, PushDedup::Entry>& PushDedup::Use(uint64_t client) {
  const int64_t now = now_ms_();
  // A sweep at most every tenth of the idle period: the cost of a scan, amortised.
  if (now - last_sweep_ms_ >= idle_forget_ms_ / 10) {
    last_sweep_ms_ = now;
    for (auto it = clients_.begin(); it != clients_.end();) {
      const auto& seen = it->second.seen;
      const bool idle = now - it->second.last_ms > idle_forget_ms_ && it->first != client;
      if (idle && std::all_of(seen.begin(), seen.end(), [](const auto& kv) { return kv.second.done; })) {
        it = clients_.erase(it);
        ++forgotten_;
      } else {
        ++it;
      }
    }
  }
  Window& w = clients_[client];
  w.last_ms = now;
  return w.seen;
}

PushDedup::Verdict PushDedup::Begin(uint64_t client, uint64_t seq, std::span<const uint32_t> shards, Status* outcome,
                                    std::vector<uint32_t>* to_apply) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto it = seen.find(seq);
  to_apply->clear();
  if (it != seen.end()) {
    Entry& e = it->second;
    if (!e.done) {
      ++duplicates_;
      return Verdict::kInProgress;
    }
    if (!e.all_shards && e.outcome.ok()) {
      std::set_difference(shards.begin(), shards.end(), e.shards.begin(), e.shards.end(), std::back_inserter(*to_apply));
    }
    if (to_apply->empty()) {
      ++duplicates_;
      *outcome = e.outcome;
      return Verdict::kDuplicate;
    }
    e.done = false;  // Reopened for the rows of shards it was not applied to.
    e.first_attempt = false;
    e.attempt = *to_apply;
    return Verdict::kApply;
  }
  if (seen.size() >= window_ && seq < seen.begin()->first) return Verdict::kTooOld;
  to_apply->assign(shards.begin(), shards.end());
  seen.emplace(seq, Entry{}).first->second.attempt = *to_apply;
  while (seen.size() > window_) seen.erase(seen.begin());
  return Verdict::kApply;
}

namespace {
void Merge(std::vector<uint32_t>* into, std::span<const uint32_t> more) {
  std::vector<uint32_t> out;
  std::set_union(into->begin(), into->end(), more.begin(), more.end(), std::back_inserter(out));
  *into = std::move(out);
}
}  // namespace

void PushDedup::MarkApplied(uint64_t client, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto it = seen.find(seq);
  if (it != seen.end()) Merge(&it->second.shards, it->second.attempt);
}

void PushDedup::Finish(uint64_t client, uint64_t seq, const Status& outcome, std::span<const uint32_t> applied) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto it = seen.find(seq);
  if (it == seen.end()) return;  // Slid out of the window meanwhile.
  Entry& e = it->second;
  e.done = true;
  e.attempt.clear();
  if (outcome.ok()) {
    Merge(&e.shards, applied);
  } else if (e.first_attempt) {
    e.outcome = outcome;  // A reopened part keeps its first OK (and what it applied).
  }
}

void PushDedup::Forget(uint64_t client, uint64_t seq) { Unapply(client, seq, {}); }

void PushDedup::Unapply(uint64_t client, uint64_t seq, std::span<const uint32_t> lost) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto it = seen.find(seq);
  if (it == seen.end() || it->second.done) return;
  Entry& e = it->second;
  std::vector<uint32_t> kept;
  std::set_difference(e.shards.begin(), e.shards.end(), lost.begin(), lost.end(), std::back_inserter(kept));
  e.shards = std::move(kept);
  e.attempt.clear();
  if (e.shards.empty()) {
    seen.erase(it);
  } else {
    e.done = true;  // Reopened: what the earlier attempts applied (and kept) stays known.
  }
}

void PushDedup::MarkLogged(uint64_t client, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto it = seen.find(seq);
  if (it != seen.end()) it->second.logged = true;
}

void PushDedup::RecordApplied(uint64_t client, uint64_t seq, std::span<const uint32_t> shards, bool all_shards) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = Use(client);
  auto [it, fresh] = seen.try_emplace(seq);
  Entry& e = it->second;
  if (fresh || e.done) {  // One being applied now (under Begin) is finished by its Finish.
    e.done = true;
    e.outcome = Status::OK();
  }
  e.logged = true;
  e.all_shards |= all_shards;
  Merge(&e.shards, shards);
  while (seen.size() > window_) seen.erase(seen.begin());
}

std::vector<PushDedup::Applied> PushDedup::Logged() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Applied> out;
  for (const auto& [client, w] : clients_) {
    const auto& seen = w.seen;
    for (const auto& [seq, e] : seen) {
      if (e.logged) out.push_back(Applied{client, seq, e.all_shards, e.shards});
    }
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> PushDedup::AppliedTo(uint32_t shard) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [client, w] : clients_) {
    const auto& seen = w.seen;
    for (const auto& [seq, e] : seen) {
      if (e.all_shards || std::binary_search(e.shards.begin(), e.shards.end(), shard)) {
        out.emplace_back(client, seq);
      }
    }
  }
  return out;
}

uint64_t PushDedup::duplicates() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duplicates_;
}

size_t PushDedup::clients() const {
  std::lock_guard<std::mutex> lock(mu_);
  return clients_.size();
}

uint64_t PushDedup::forgotten() const {
  std::lock_guard<std::mutex> lock(mu_);
  return forgotten_;
}

}  // namespace engram::ps
