// PushDedup: recognises retransmitted pushes so each is applied exactly once.
//
// Every push carries (client id, sequence number); a client never reuses a sequence number for
// a different push. The server remembers, per client, the outcome of its most recent
// `window` pushes. A retransmission of a finished push gets the first outcome back without
// being applied again; one that arrives while the original is still applying is told to retry.
// Thread-safe.
#ifndef ENGRAM_PS_PUSH_DEDUP_H_
#define ENGRAM_PS_PUSH_DEDUP_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engram/status.h"

namespace engram::ps {

class PushDedup {
 public:
  explicit PushDedup(size_t window = 1 << 16) : window_(window) {}

  enum class Verdict {
    kApply,       // First time seen: apply, then call Finish().
    kDuplicate,   // Already applied: *outcome holds its result; do not apply.
    kInProgress,  // The original is applying now: answer Unavailable (retry).
    kTooOld,      // Older than the window: cannot prove it was not applied; refuse.
  };

  Verdict Begin(uint64_t client, uint64_t seq, Status* outcome);
  void Finish(uint64_t client, uint64_t seq, const Status& outcome);
  // The push begun was refused before it changed anything (stale shard map, a frozen shard):
  // forget it, so that its retry is judged afresh.
  void Forget(uint64_t client, uint64_t seq);
  // Durability: the push is applied and in the write-ahead log (called under the table's write
  // locks, right after the append), so a checkpoint taken from now on must remember it.
  void MarkLogged(uint64_t client, uint64_t seq);
  // Recovery: a push found in the log or a checkpoint was applied (outcome OK).
  void RecordApplied(uint64_t client, uint64_t seq);
  // Every (client, seq) marked logged or recorded applied, for a checkpoint.
  std::vector<std::pair<uint64_t, uint64_t>> Logged() const;
  // Number of pushes recognised as duplicates so far.
  uint64_t duplicates() const;

 private:
  struct Entry {
    bool done = false;
    bool logged = false;
    Status outcome;
  };
  const size_t window_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::map<uint64_t, Entry>> clients_;  // GUARDED_BY(mu_)
  uint64_t duplicates_ = 0;                                          // GUARDED_BY(mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_PUSH_DEDUP_H_
