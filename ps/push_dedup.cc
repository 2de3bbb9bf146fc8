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

uint64_t PushDedup::duplicates() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duplicates_;
}

}  // namespace engram::ps
