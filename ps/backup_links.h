// BackupLinks: a primary stops waiting on a silent backup node all at once.
//
// A replica is sent to its backup node while the write holds its shards' write locks and the
// table's map lock, and waits up to one lease TTL for the answer. When one such wait ends without
// an answer, every other wait on that node ends at once (each would time out the same way, still
// holding its locks, and a map change queued behind them holds every reader of the table
// meanwhile); each of those writes then drops the backup from the map, as a timed-out one does.
// For `silence` after that, new replicas to the node fail at once too (0, the daemon's setting:
// they wait again, so a backup slow once loses only the shards whose writes timed out). An answer
// clears the mark.
//
// Thread-safety: thread-safe; never blocks.
#ifndef ENGRAM_PS_BACKUP_LINKS_H_
#define ENGRAM_PS_BACKUP_LINKS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "engram/mix.h"

namespace engram::ps {

class BackupLinks {
 public:
  // `now_ms`: a steady clock in milliseconds (injectable for tests; default the real one).
  explicit BackupLinks(std::chrono::milliseconds silence, std::function<int64_t()> now_ms = nullptr)
      : silence_ms_(silence.count()), now_ms_(now_ms ? std::move(now_ms) : SteadyNowMs) {}

  // The flag a wait on `node` must watch (it turns true when the node is found silent: give up),
  // or nullptr within `silence` of that (fail at once, without sending).
  std::shared_ptr<const std::atomic<bool>> Begin(uint32_t node) {
    std::lock_guard<std::mutex> lock(mu_);
    Link& l = links_[node];
    if (l.silent && l.silent->load()) {
      if (now_ms_() < l.until_ms) return nullptr;
      l.silent.reset();  // The mark expired: try the node again.
    }
    if (!l.silent) l.silent = std::make_shared<std::atomic<bool>>(false);
    return l.silent;
  }
  // A wait on `node` begun with `flag` ended: answered (any reply), or not (timed out, lost).
  void End(uint32_t node, const std::shared_ptr<const std::atomic<bool>>& flag, bool answered) {
    std::lock_guard<std::mutex> lock(mu_);
    Link& l = links_[node];
    if (l.silent != flag) return;  // A later mark (or its expiry) supersedes this wait's view.
    if (answered) {
      if (!l.silent->load()) return;
      l.silent.reset();
      return;
    }
    if (!l.silent->exchange(true)) l.until_ms = now_ms_() + silence_ms_;
  }

 private:
  struct Link {
    std::shared_ptr<std::atomic<bool>> silent;  // Shared with the waits begun on it.
    int64_t until_ms = 0;
  };
  const int64_t silence_ms_;
  const std::function<int64_t()> now_ms_;
  std::mutex mu_;
  std::map<uint32_t, Link> links_;  // GUARDED_BY(mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_BACKUP_LINKS_H_
