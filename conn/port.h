// One worker as conn sees it: the ring to it (conn is its only writer, through this port),
// the ring from it, and the FIFO of users waiting, in order, for room in the ring to it.
// A user is anything that pushes records for the worker: a client connection today, a node
// link of the cluster later. The port knows nothing about sockets or clients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>

#include "core/log.h"
#include "core/stats.h"
#include "shmq/ring.h"

namespace asyncd::conn {

class Port;

// Something that pushes into a port and may have to wait for room. When there may be room,
// the port calls the first waiter's on_room: it pushes what it owes and returns false while
// it is still blocked (it stays first), true once through; then the port takes it out of the
// FIFO and calls on_dequeued.
class PortUser {
  public:
    virtual bool on_room(Port &port) = 0;
    virtual void on_dequeued(Port &port) = 0;
    // In a port's FIFO: set and cleared by the port only.
    bool waiting_for_room() const { return queued_; }

  protected:
    ~PortUser() = default;

  private:
    friend class Port;
    bool queued_ = false;
};

class Port {
  public:
    Port(int index, shmq::Ring *in, shmq::Ring *out, const shmq::Waker *worker_wake,
         const shmq::Waker *conn_wake, ConnStats *st, WorkerStats *ws, Log *log);

    int index() const { return index_; }
    shmq::Producer &to() { return to_; }
    shmq::Consumer &from() { return from_; }
    shmq::Ring *in_ring() const { return in_ring_; }

    // Whether u must wait before it pushes: a conn-restart record is owed first, or others
    // are ahead of it. If so it is queued (once) and true is returned.
    bool must_wait(PortUser *u);
    // u's push found the ring full: it waits, first in line if nobody was; `need` is the
    // payload of the push that did not fit (what the wake-up waits for).
    void wait_for_room(PortUser *u, size_t need);
    bool is_first(const PortUser *u) const { return !waiting_.empty() && waiting_.front() == u; }
    bool has_waiters() const { return !waiting_.empty() || reset_pending_; }
    // Gives the waiters their turn, in order, while there is room.
    void serve_waiting();

    // A new conn process owes every worker a conn-reset record before anything else.
    void owe_reset() { reset_pending_ = true; }

    // The message being streamed into the ring (larger than a record), and its progress. A
    // user that goes away mid-stream gives it up: the ring takes other records again.
    size_t &stream_done() { return stream_done_; }
    void abort_stream_of(const PortUser *u);

    // Something was pushed: flush() publishes it at the end of the turn.
    void mark_pushed() { dirty_ = true; }
    // Publishes this turn's records, wakes the worker if it sleeps, and keeps the ring's
    // high-water mark.
    void flush();
    size_t high_water() const { return high_water_; }

    // Takes up to `budget` records from the worker, each handed to `handle`, and returns
    // true when more are left. A record that fails validation is an ALERT: the ring's
    // contents are dropped (the worker's restart resets it).
    bool drain(int budget, const std::function<void(const shmq::Message &)> &handle);

    // The sleep protocol around conn's wait: announces the sleep on the reply ring and, when
    // waiters are blocked (and input is taken), the wait for room. False when what conn
    // would wait for is there already. after_wake() withdraws both.
    bool prepare_sleep(bool input_taken);
    void after_wake();
    // Whether a reply waits, or the blocked waiters have room now.
    bool ready(bool input_taken);

    // Connections bound to this worker until reaped, for retirement.
    size_t conns = 0;
    bool retire_noted = false;

  private:
    int index_;
    shmq::Ring *in_ring_;
    shmq::Producer to_;
    shmq::Consumer from_;
    std::deque<PortUser *> waiting_;
    size_t stream_done_ = 0;
    size_t need_ = 0;
    size_t high_water_ = 0;
    bool reset_pending_ = false;
    bool dirty_ = false;
    ConnStats *st_;
    WorkerStats *ws_;
    Log *log_;
    LogLimit full_log_{1};
};

}  // namespace asyncd::conn
