// PushDedup: recognises retransmitted pushes so each is applied exactly once.
//
// Every push part carries (client id, sequence number); a client never reuses a sequence number
// for other rows, but a part whose outcome it could not learn is sent again under its own
// number, and when the shard map changed meanwhile its rows are split among their new owners:
// one server may then get a part under a number it applied before for other rows of the same
// push. So the server remembers, per client, the outcome of its most recent `window` parts and
// the table shards each was applied to. A retransmission whose shards were all applied gets the
// first outcome back; one with rows of shards not applied under that number applies those rows
// (and only those); one that arrives while the original is still applying is told to retry.
// A client (a Client object's push session) that sent nothing for `idle_forget` is forgotten
// with its window: every Client numbers its pushes in a session of its own, so the sessions of
// trainers that ended would otherwise pile up, in memory, in every checkpoint and in every move's
// list. A retransmission comes within its client's call deadline, far shorter.
// Thread-safe.
#ifndef ENGRAM_PS_PUSH_DEDUP_H_
#define ENGRAM_PS_PUSH_DEDUP_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engram/status.h"

namespace engram::ps {

class PushDedup {
 public:
  // `now_ms`: a steady clock in milliseconds (injectable for tests; default the real one).
  explicit PushDedup(size_t window = 1 << 16, std::chrono::milliseconds idle_forget = std::chrono::hours(1),
                     std::function<int64_t()> now_ms = nullptr);

  enum class Verdict {
    kApply,       // First time seen: apply, then call Finish().
    kDuplicate,   // Already applied: *outcome holds its result; do not apply.
    kInProgress,  // The original is applying now: answer Unavailable (retry).
    kTooOld,      // Older than the window: cannot prove it was not applied; refuse.
  };

  // `shards`: the table shards the part's rows fall in (sorted, distinct). On kApply,
  // *to_apply holds those not applied yet under this number (all of them, the first time).
  Verdict Begin(uint64_t client, uint64_t seq, std::span<const uint32_t> shards, Status* outcome,
                std::vector<uint32_t>* to_apply);
  // The attempt begun has applied its rows (call under the table's write locks, right after):
  // from now on the part counts as applied to those shards, for AppliedTo too.
  void MarkApplied(uint64_t client, uint64_t seq);
  // The part begun is finished: applied to `applied` (when `outcome` is OK), or failed.
  void Finish(uint64_t client, uint64_t seq, const Status& outcome, std::span<const uint32_t> applied);
  // The part begun was refused before it changed anything (stale shard map, a frozen shard):
  // forget it, so that its retry is judged afresh (what an earlier attempt applied stays known).
  void Forget(uint64_t client, uint64_t seq);
  // The part begun was applied here, but this node lost the copies of shards `lost` (sorted)
  // meanwhile (failed over): it no longer counts as applied to them, so that its retry there is
  // judged afresh (it goes to their new owner); the rest stays known.
  void Unapply(uint64_t client, uint64_t seq, std::span<const uint32_t> lost);
  // Durability: the push is applied and in the write-ahead log (called under the table's write
  // locks, right after the append), so a checkpoint taken from now on must remember it.
  void MarkLogged(uint64_t client, uint64_t seq);
  // A part applied outside Begin/Finish (recovery from the log, a backup's replica): on
  // `shards`, or, when they are unknown (a checkpoint's list), on every shard.
  void RecordApplied(uint64_t client, uint64_t seq, std::span<const uint32_t> shards = {}, bool all_shards = true);
  // Every part marked logged or recorded applied, with its shards, for a checkpoint.
  struct Applied {
    uint64_t client = 0, seq = 0;
    bool all_shards = false;
    std::vector<uint32_t> shards;
  };
  std::vector<Applied> Logged() const;
  // The (client, seq) of every part whose rows were applied to `shard` of some table (MarkApplied
  // on), for a shard that moves: asked after its freeze, when no part can apply rows to it any
  // more; its new owner must answer their retransmissions too. A part begun but refused by the
  // freeze is not listed. (Sequence numbers are per client,
  // not per table, so another table's entries for the same shard id name no part of this one.)
  std::vector<std::pair<uint64_t, uint64_t>> AppliedTo(uint32_t shard) const;
  // Number of pushes recognised as duplicates so far.
  uint64_t duplicates() const;
  // Clients remembered now, and clients forgotten so far for being idle.
  size_t clients() const;
  uint64_t forgotten() const;

 private:
  struct Entry {
    bool done = false;
    bool logged = false;
    bool all_shards = false;       // Applied on every shard (known from a checkpoint only).
    Status outcome;
    bool first_attempt = true;     // Not reopened: a failure is this part's outcome.
    std::vector<uint32_t> shards;  // Sorted: the shards its rows were applied to so far.
    std::vector<uint32_t> attempt;  // Sorted: the shards the attempt in progress is applying.
  };
  struct Window {
    std::map<uint64_t, Entry> seen;  // By sequence number.
    int64_t last_ms = 0;             // When it was last used.
  };
  // REQUIRES: mu_ held. The client's window, marked used now; every so often, first forgets the
  // clients idle for longer than idle_forget_ whose parts are all done.
  std::map<uint64_t, Entry>& Use(uint64_t client);
  const size_t window_;
  const int64_t idle_forget_ms_;
  const std::function<int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Window> clients_;  // GUARDED_BY(mu_)
  uint64_t duplicates_ = 0;                       // GUARDED_BY(mu_)
  uint64_t forgotten_ = 0;                        // GUARDED_BY(mu_)
  int64_t last_sweep_ms_ = 0;                     // GUARDED_BY(mu_)
};

}  // namespace engram::ps

#endif  // ENGRAM_PS_PUSH_DEDUP_H_
