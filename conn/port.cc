#include "conn/port.h"

#include <string>

#include "core/clock.h"
#include "core/records.h"

namespace asyncd::conn {

Port::Port(int index, shmq::Ring *in, shmq::Ring *out, const shmq::Waker *worker_wake,
           const shmq::Waker *conn_wake, ConnStats *st, WorkerStats *ws, Log *log)
    : index_(index),
      in_ring_(in),
      to_(in, worker_wake),
      from_(out, conn_wake, worker_wake),
      st_(st),
      ws_(ws),
      log_(log) {}

bool Port::must_wait(PortUser *u) {
    if (!reset_pending_ && (waiting_.empty() || waiting_.front() == u)) return false;
    wait_for_room(u, need_);
    return true;
}

void Port::wait_for_room(PortUser *u, size_t need) {
    if (waiting_.empty() || waiting_.front() == u) need_ = need;  // what the first one needs
    if (u->queued_) return;  // queued already; its place stands
    u->queued_ = true;
    if (waiting_.empty()) {
        if (!reset_pending_) {
            bump(st_->ring_full_pauses);
            log_->write_limited(&full_log_, monotonic_ms(), LogLevel::kInfo,
                                "worker %d's ring is full: reading paused for its connections",
                                index_);
        }
    }
    waiting_.push_back(u);
}

void Port::serve_waiting() {
    if (reset_pending_) {
        shmq::RecordMeta meta;
        meta.type = type_of(ToWorker::kConnReset);
        if (to_.try_push(meta, nullptr, 0) != shmq::PushStatus::kOk) return;
        reset_pending_ = false;
        dirty_ = true;
    }
    while (!waiting_.empty()) {
        PortUser *u = waiting_.front();
        if (!u->on_room(*this)) return;
        waiting_.pop_front();
        u->queued_ = false;
        u->on_dequeued(*this);
    }
}

void Port::abort_stream_of(const PortUser *u) {
    if (stream_done_ && is_first(u)) {
        to_.abort_stream();
        stream_done_ = 0;
    }
}

void Port::flush() {
    if (!dirty_) return;  // every turn, for every port: nothing to read when nothing changed
    dirty_ = false;
    to_.flush();
    size_t used = in_ring_->capacity() - to_.free_bytes();
    if (used > high_water_) {  // rarely: the line is the worker's to write
        high_water_ = used;
        set(ws_->ring_high_water, used);
    }
}

bool Port::drain(int budget, const std::function<void(const shmq::Message &)> &handle) {
    int count = 0;
    for (; count < budget; count++) {
        shmq::Message m;
        shmq::PopStatus s = from_.peek(&m);
        if (s == shmq::PopStatus::kEmpty) break;
        if (s == shmq::PopStatus::kCorrupt) {
            // The reason first: discard_all() starts clean and forgets it.
            std::string why = from_.error();
            uint64_t dropped = from_.discard_all();
            log_->write(LogLevel::kAlert, "reply ring corrupt: %s; dropped %llu bytes", why.c_str(),
                        (unsigned long long)dropped);
            break;
        }
        handle(m);
        from_.commit();
    }
    if (count) from_.notify_room();
    return count == budget;
}

bool Port::prepare_sleep(bool input_taken) {
    bool ready_now = !from_.prepare_sleep();
    if (input_taken && has_waiters() && !to_.prepare_wait_room(need_)) ready_now = true;
    return !ready_now;
}

void Port::after_wake() {
    from_.withdraw_sleep();
    to_.finish_wait_room();
}

bool Port::ready(bool input_taken) {
    if (!from_.empty()) return true;
    return input_taken && has_waiters() && to_.can_push(need_);
}

}  // namespace asyncd::conn
