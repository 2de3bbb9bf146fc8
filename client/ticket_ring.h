// TicketRing: the ring of tickets and the two worker threads (pulls, pushes) that both
// LayerPrefetcher engines run on. An engine derives from it, keeps its buffers per ticket index,
// and implements Forward (the pull side, on the pull thread) and Push (on the push thread).
// Thread-safety: the public-facing helpers may be called from any thread; one ticket's calls
// are ordered by its caller (Take, then WaitReady/EnqueuePush, then Release).
#ifndef ENGRAM_CLIENT_TICKET_RING_H_
#define ENGRAM_CLIENT_TICKET_RING_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engram/status.h"

namespace engram::client {

class TicketRing {
 protected:
  // What every ticket carries, whatever the engine.
  struct Ticket {
    int64_t layer = 0;
    size_t batch = 0, seq = 0;
  };

  explicit TicketRing(size_t tickets) : state_(tickets), tickets_(tickets) {}
  // REQUIRES: StopWorkers() was called (by the engine's destructor, before its buffers go).
  virtual ~TicketRing() = default;

  void StartWorkers() {
    pull_thread_ = std::thread([this] { Run(&pulls_); });
    push_thread_ = std::thread([this] { Run(&pushes_); });
  }
  void StopWorkers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (pull_thread_.joinable()) pull_thread_.join();
    if (push_thread_.joinable()) push_thread_.join();
  }

  // The engine's work for ticket `t`, on the pull thread; its status is what WaitReady returns.
  virtual Status Forward(int t) = 0;
  // The push of ticket `t`'s summed gradients, on the push thread.
  virtual Status Push(int t) = 0;
  // Called by Release once ticket `t` is done (its forward and its push), before it is reused.
  virtual void OnRelease(int /*t*/) {}

  Status CheckTicket(int t) const {
    if (t < 0 || static_cast<size_t>(t) >= state_.size()) return Status::InvalidArgument("no ticket " + std::to_string(t));
    return Status::OK();
  }
  // Blocks until a ticket is free; returns it, marked in use, with `info`.
  int Take(const Ticket& info) {
    std::unique_lock<std::mutex> lock(mu_);
    int t = -1;
    cv_.wait(lock, [&] {
      for (size_t i = 0; i < state_.size() && t < 0; ++i) {
        if (!state_[i].in_use) t = static_cast<int>(i);
      }
      return t >= 0;
    });
    State& s = state_[t];
    s.in_use = true;
    s.ready = s.pushing = false;
    s.status = Status::OK();
    tickets_[t] = info;
    return t;
  }
  // Queues Forward(t); or, with a non-OK `failed`, makes `t` ready with that error at once.
  void Enqueue(int t, const Status& failed = Status::OK()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed.ok()) {
      pulls_.push_back({t, false});
    } else {
      state_[t].status = failed;
      state_[t].ready = true;
    }
    cv_.notify_all();
  }
  // Waits for Forward(t); its status. With `for_push`, FailedPrecondition if t pushed already.
  Status WaitReady(int t, bool for_push = false) {
    ENGRAM_RETURN_IF_ERROR(CheckTicket(t));
    std::unique_lock<std::mutex> lock(mu_);
    State& s = state_[t];
    if (!s.in_use) return Status::FailedPrecondition("ticket " + std::to_string(t) + " is not in use");
    cv_.wait(lock, [&] { return s.ready; });
    ENGRAM_RETURN_IF_ERROR(s.status);
    if (for_push && s.pushing) return Status::FailedPrecondition("ticket " + std::to_string(t) + " pushed its gradients already");
    return Status::OK();
  }
  // Queues Push(t); the future says how it went.
  std::shared_future<Status> EnqueuePush(int t) {
    std::lock_guard<std::mutex> lock(mu_);
    State& s = state_[t];
    s.pushing = true;
    s.push_done = std::promise<Status>();
    s.push = s.push_done.get_future().share();
    pushes_.push_back({t, true});
    cv_.notify_all();
    return s.push;
  }
  // Waits for t's forward work and its push, calls OnRelease(t), and frees it.
  void ReleaseTicket(int t) {
    if (!CheckTicket(t).ok()) return;
    State& s = state_[t];
    std::shared_future<Status> push;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!s.in_use) return;
      cv_.wait(lock, [&] { return s.ready; });
      if (s.pushing) push = s.push;
    }
    if (push.valid()) push.wait();
    OnRelease(t);
    std::lock_guard<std::mutex> lock(mu_);
    s.in_use = false;
    cv_.notify_all();
  }
  // Forward(t)'s status. REQUIRES: WaitReady(t) returned (any status).
  const Status& forward_status(int t) const { return state_[t].status; }
  const Ticket& ticket(int t) const { return tickets_[t]; }
  size_t num_tickets() const { return tickets_.size(); }

 private:
  struct State {
    bool in_use = false, ready = false, pushing = false;
    Status status;
    std::promise<Status> push_done;
    std::shared_future<Status> push;
  };
  struct Job {
    int ticket;
    bool push;
  };

  void Run(std::deque<Job>* queue) {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue->empty(); });
        if (queue->empty()) return;
        job = queue->front();
        queue->pop_front();
      }
      if (job.push) {
        state_[job.ticket].push_done.set_value(Push(job.ticket));
        continue;
      }
      const Status st = Forward(job.ticket);
      std::lock_guard<std::mutex> lock(mu_);
      state_[job.ticket].status = st;
      state_[job.ticket].ready = true;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<State> state_;  // GUARDED_BY(mu_)
  std::vector<Ticket> tickets_;  // Written by Take, read by the ticket's caller and workers in turn.
  // Pulls and pushes have a thread each: a step's pulls never wait behind the last step's pushes.
  std::deque<Job> pulls_, pushes_;  // GUARDED_BY(mu_)
  bool stop_ = false;               // GUARDED_BY(mu_)
  std::thread pull_thread_, push_thread_;
};

}  // namespace engram::client

#endif  // ENGRAM_CLIENT_TICKET_RING_H_
