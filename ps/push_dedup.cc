// PushDedup: per-client windows of push outcomes.
#include "ps/push_dedup.h"

namespace engram::ps {

PushDedup::Verdict PushDedup::Begin(uint64_t client, uint64_t seq, Status* outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = clients_[client];
  auto it = seen.find(seq);
  if (it != seen.end()) {
    ++duplicates_;
    if (!it->second.done) return Verdict::kInProgress;
    *outcome = it->second.outcome;
    return Verdict::kDuplicate;
  }
  if (seen.size() >= window_ && seq < seen.begin()->first) return Verdict::kTooOld;
  seen.emplace(seq, Entry{});
  while (seen.size() > window_) seen.erase(seen.begin());
  return Verdict::kApply;
}

void PushDedup::Finish(uint64_t client, uint64_t seq, const Status& outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = clients_[client];
  auto it = seen.find(seq);
  if (it == seen.end()) return;  // Slid out of the window meanwhile.
  it->second.done = true;
  it->second.outcome = outcome;
}

void PushDedup::Forget(uint64_t client, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = clients_[client];
  auto it = seen.find(seq);
  if (it != seen.end() && !it->second.done) seen.erase(it);
}

void PushDedup::MarkLogged(uint64_t client, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = clients_[client];
  auto it = seen.find(seq);
  if (it != seen.end()) it->second.logged = true;
}

void PushDedup::RecordApplied(uint64_t client, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& seen = clients_[client];
  Entry& e = seen[seq];
  e.done = true;
  e.logged = true;
  e.outcome = Status::OK();
  while (seen.size() > window_) seen.erase(seen.begin());
}

std::vector<std::pair<uint64_t, uint64_t>> PushDedup::Logged() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [client, seen] : clients_) {
    for (const auto& [seq, e] : seen) {
      if (e.logged) out.emplace_back(client, seq);
    }
  }
  return out;
}

uint64_t PushDedup::duplicates() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duplicates_;
}

}  // namespace engram::ps
