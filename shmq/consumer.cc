// The consumer side of the ring: validates, hands over, commits, and sleeps without losing
// a wakeup.
#include <string.h>

#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd::shmq {

namespace {

inline void bump(std::atomic<uint64_t> &counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

Consumer::Consumer(Ring *ring, const Waker *waker, const Waker *room_waker)
    : control_(ring->control()),
      data_(ring->data()),
      assembly_(ring->assembly()),
      waker_(waker),
      room_waker_(room_waker),
      capacity_(ring->capacity()),
      max_record_(ring->max_record()),
      max_msg_(ring->max_msg()),
      tail_(control_->tail.load(std::memory_order_relaxed)),
      cached_head_(tail_) {}

PopStatus Consumer::corrupt(const char *why) {
    error_ = why;
    return PopStatus::kCorrupt;
}

PopStatus Consumer::peek(Message *out) {
    if (peeked_) {
        *out = message_;
        return PopStatus::kOk;
    }
    uint64_t index = tail_;
    for (;;) {
        if (index == cached_head_) {
            cached_head_ = control_->head.load(std::memory_order_acquire);
            if (index == cached_head_) {
                if (index != tail_) {  // only padding was passed: give it back now
                    tail_ = index;
                    control_->tail.store(tail_, std::memory_order_release);
                    notify_room();
                }
                return PopStatus::kEmpty;
            }
        }
        uint64_t avail = cached_head_ - index;
        if (cached_head_ < index || avail > capacity_) return corrupt("head index out of range");
        size_t pos = size_t(index & (capacity_ - 1));
        size_t to_end = capacity_ - pos;
        if (to_end < kHeaderSize) {  // the implicit gap before the end of the mapping
            if (avail < to_end) return corrupt("published head inside the end gap");
            index += to_end;
            continue;
        }
        if (avail < kHeaderSize) return corrupt("published head inside a header");
        RecordHeader h;
        memcpy(&h, data_ + pos, sizeof h);
        if (h.check != record_check(h, index)) return corrupt("record header check failed");
        if (h.type == kTypePad) {
            if (h.len != to_end - kHeaderSize) return corrupt("pad record of the wrong length");
            if (avail < to_end) return corrupt("pad record past the published head");
            index += to_end;
            continue;
        }
        if (h.len > max_record_) return corrupt("record length above max_record");
        size_t footprint = record_footprint(h.len);
        if (footprint > to_end) return corrupt("record crosses the end of the mapping");
        if (footprint > avail) return corrupt("record past the published head");

        bool done = false;
        if ((h.flags & kFlagsRing) == kFlagWhole) {
            if (h.offset != 0) return corrupt("whole record with a part offset");
            if (assembly_state_ == Assembly::kInProgress) bump(control_->abandoned);
            assembly_state_ = Assembly::kIdle;
            message_.data = data_ + pos + kHeaderSize;
            message_.len = h.len;
            done = true;
        } else {
            PopStatus s = take_part(h, index, &done);
            if (s != PopStatus::kOk) return s;
        }
        index += footprint;
        if (!done) {
            // A part now copied into the shared assembly buffer: give its space back so a
            // message larger than the ring can keep coming, and wake a producer waiting for
            // it (no commit will: the message is not whole yet).
            tail_ = index;
            control_->tail.store(tail_, std::memory_order_release);
            notify_room();
            continue;
        }
        message_.type = h.type;
        message_.flags = uint16_t(h.flags & kFlagsUser);
        message_.conn_id = h.conn_id;
        message_.seq = h.seq;
        message_.index = index - footprint;
        next_ = index;
        peeked_ = true;
        *out = message_;
        return PopStatus::kOk;
    }
}

// Copies one part into the assembly buffer. *done is set when it was the last one and
// message_ then describes the whole message. A part is copied again after a crash of the
// consumer before its commit; the copy lands on the same bytes, so that is harmless.
PopStatus Consumer::take_part(const RecordHeader &h, uint64_t index, bool *done) {
    if (h.flags & kFlagFirst) {
        if (h.offset != 0) return corrupt("first part with a non-zero offset");
        if (assembly_state_ == Assembly::kInProgress) bump(control_->abandoned);
        assembly_len_ = 0;
    } else if (assembly_state_ == Assembly::kUnknown) {
        // A replacement consumer resuming in the middle of a message: its predecessor
        // committed the earlier parts only after copying them here.
        assembly_len_ = h.offset;
    } else if (assembly_state_ == Assembly::kIdle || h.offset != assembly_len_) {
        return corrupt("part out of sequence");
    }
    if (size_t(h.offset) + h.len > max_msg_) return corrupt("message longer than max_msg");
    memcpy(assembly_ + h.offset, data_ + (index & (capacity_ - 1)) + kHeaderSize, h.len);
    assembly_len_ = size_t(h.offset) + h.len;
    assembly_state_ = Assembly::kInProgress;
    if (h.flags & kFlagLast) {
        assembly_state_ = Assembly::kIdle;
        message_.data = assembly_;
        message_.len = assembly_len_;
        *done = true;
    }
    return PopStatus::kOk;
}

uint64_t Consumer::mark_in_flight() {
    uint64_t index = message_.index;
    if (control_->in_flight.load(std::memory_order_relaxed) == index) {
        uint64_t attempts = control_->in_flight_attempts.load(std::memory_order_relaxed) + 1;
        control_->in_flight_attempts.store(attempts, std::memory_order_release);
        return attempts;
    }
    // attempts first: if this process dies between the two stores, the index still names an
    // older, committed message and the count is reset again by the next consumer.
    control_->in_flight_attempts.store(1, std::memory_order_release);
    control_->in_flight.store(index, std::memory_order_release);
    return 1;
}

void Consumer::commit() {
    advance();
    commit_advanced();
}

void Consumer::advance() {
    if (!peeked_) return;
    peeked_ = false;
    tail_ = next_;
}

void Consumer::commit_advanced() {
    if (control_->tail.load(std::memory_order_relaxed) != tail_) {
        control_->tail.store(tail_, std::memory_order_release);
    }
}

bool Consumer::skip_to(uint64_t index) {
    uint64_t head = control_->head.load(std::memory_order_acquire);
    if (peeked_ || index < tail_ || index > head) return false;
    tail_ = index;
    cached_head_ = head;
    assembly_state_ = Assembly::kIdle;  // a dispatched message ended at a whole record
    control_->tail.store(tail_, std::memory_order_release);
    return true;
}

uint64_t Consumer::discard_all() {
    uint64_t head = control_->head.load(std::memory_order_acquire);
    uint64_t dropped = head - tail_;
    tail_ = cached_head_ = head;
    peeked_ = false;
    assembly_state_ = Assembly::kIdle;
    error_ = "";
    control_->tail.store(tail_, std::memory_order_release);
    return dropped;
}

bool Consumer::empty() {
    if (peeked_) return false;
    if (tail_ != cached_head_) return false;
    cached_head_ = control_->head.load(std::memory_order_acquire);
    return tail_ == cached_head_;
}

// Pairs with Producer::flush (see there).
bool Consumer::prepare_sleep() {
    control_->sleeping.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!empty()) {
        control_->sleeping.store(0, std::memory_order_relaxed);
        return false;
    }
    bump(control_->sleeps);
    return true;
}

void Consumer::finish_sleep() {
    control_->sleeping.store(0, std::memory_order_relaxed);
    waker_->drain();
}

void Consumer::withdraw_sleep() {
    control_->sleeping.store(0, std::memory_order_relaxed);
}

// Pairs with Producer::prepare_wait_room as flush() pairs with prepare_sleep: commit()
// stores the tail, then a fence, then the flag is read.
bool Consumer::notify_room() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!control_->producer_waiting.load(std::memory_order_relaxed)) return false;
    if (!control_->producer_waiting.exchange(0, std::memory_order_acq_rel)) return false;
    if (room_waker_) room_waker_->signal();
    bump(control_->room_wakeups);
    return true;
}

bool Consumer::wait(int timeout_ms) {
    if (!prepare_sleep()) return true;
    waker_->wait(timeout_ms);
    finish_sleep();
    return !empty();
}

}  // namespace asyncd::shmq
