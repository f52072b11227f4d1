// The producer side of the ring: writes records, publishes them with one release store of
// the head, and wakes a sleeping consumer.
#include <string.h>

#include <algorithm>

#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd::shmq {

namespace {

// A part is not started in the last few bytes before the end of the mapping: a tiny part
// costs a header for little payload. Below this the space is padded instead.
constexpr size_t kMinPart = 256;

// A single-writer counter: a plain load and store, no locked instruction on the hot path.
inline void bump(std::atomic<uint64_t> &counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

Producer::Producer(Ring *ring, const Waker *waker)
    : control_(ring->control()),
      data_(ring->data()),
      waker_(waker),
      capacity_(ring->capacity()),
      max_record_(ring->max_record()),
      max_msg_(ring->max_msg()),
      head_(control_->head.load(std::memory_order_relaxed)),
      published_(head_),
      cached_tail_(control_->tail.load(std::memory_order_acquire)),
      publish_batch_(std::min(ring->capacity() / 8, size_t(64) << 10)) {}

// When the ring looks full, the consumer may be waiting for what this side has not yet
// published: publish it and wake the consumer before reporting kFull.
bool Producer::has_room(size_t need) {
    if (head_ + need - cached_tail_ <= capacity_) return true;
    cached_tail_ = control_->tail.load(std::memory_order_acquire);
    if (head_ + need - cached_tail_ <= capacity_) return true;
    flush();
    return false;
}

bool Producer::adopt(uint64_t index, uint64_t last_record, uint32_t last_len) {
    cached_tail_ = control_->tail.load(std::memory_order_acquire);
    if (index <= head_ || index - cached_tail_ > capacity_ || stream_open_) return false;
    // The record noted last ends exactly at index unless it was parted or padded: only then
    // is it the one a later try_append may have grown. Its type, flags and ids did not change
    // (an append writes only len and check), so only those two are rewritten.
    if (last_record != UINT64_MAX && last_record >= head_ && last_record < index &&
        last_len <= max_record_ && last_record + record_footprint(last_len) == index) {
        size_t pos = size_t(last_record & (capacity_ - 1));
        if (pos + record_footprint(last_len) <= capacity_) {
            RecordHeader h;
            memcpy(&h, data_ + pos, sizeof h);
            if (h.type != kTypePad && h.len != last_len) {
                h.len = last_len;
                h.check = record_check(h, last_record);
                memcpy(data_ + pos, &h, sizeof h);
            }
        }
    }
    head_ = index;
    last_index_ = UINT64_MAX;
    publish();
    return true;
}

void Producer::publish() {
    if (head_ == published_) return;
    published_ = head_;
    control_->head.store(head_, std::memory_order_release);
}

size_t Producer::room_for(size_t len) const {
    if (len > max_record_) {
        Plan p = plan_part(head_, len);
        return p.pad + record_footprint(p.part);
    }
    size_t footprint = record_footprint(len);
    size_t to_end = capacity_ - (head_ & (capacity_ - 1));
    return footprint <= to_end ? footprint : to_end + footprint;
}

bool Producer::prepare_wait_room(size_t len) {
    size_t need = room_for(len);
    flush();  // the consumer must see everything before this side waits on it
    control_->producer_waiting.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (free_bytes() >= need) {
        control_->producer_waiting.store(0, std::memory_order_relaxed);
        return false;
    }
    return true;
}

void Producer::finish_wait_room() {
    control_->producer_waiting.store(0, std::memory_order_relaxed);
}

size_t Producer::free_bytes() {
    cached_tail_ = control_->tail.load(std::memory_order_acquire);
    uint64_t used = head_ - cached_tail_;
    return used >= capacity_ ? 0 : capacity_ - used;
}

void Producer::write_pad(uint64_t index, size_t bytes) {
    if (bytes < kHeaderSize) return;  // an implicit gap: both sides skip it by rule
    RecordHeader h{};
    h.type = kTypePad;
    h.len = uint32_t(bytes - kHeaderSize);
    h.check = record_check(h, index);
    memcpy(data_ + (index & (capacity_ - 1)), &h, sizeof h);
}

void Producer::write_record(uint64_t index, const RecordMeta &meta, uint16_t ring_flags,
                            const void *data, size_t len, size_t offset) {
    RecordHeader &h = last_;
    h.type = meta.type;
    h.flags = uint16_t((meta.flags & kFlagsUser) | ring_flags);
    h.len = uint32_t(len);
    h.offset = uint32_t(offset);
    h.conn_id = meta.conn_id;
    h.seq = meta.seq;
    h.check = record_check(h, index);
    uint8_t *at = data_ + (index & (capacity_ - 1));
    memcpy(at, &h, sizeof h);
    if (len) memcpy(at + sizeof h, data, len);  // data may be null when len is 0
}

// Where the next part of a parted message goes: as much of the remaining payload as fits
// in a record (max_record) and before the end of the mapping, or a pad and a fresh start at
// the front when too little is left before the end.
Producer::Plan Producer::plan_part(uint64_t index, size_t remaining) const {
    size_t to_end = capacity_ - (index & (capacity_ - 1));
    size_t want = std::min(remaining, max_record_);
    if (to_end >= kHeaderSize + std::min(want, kMinPart)) {
        return Plan{0, std::min(want, to_end - kHeaderSize)};
    }
    return Plan{to_end, want};
}

PushStatus Producer::try_push(const RecordMeta &meta, const void *data, size_t len) {
    if (meta.type >= kTypeReserved) return PushStatus::kBadType;
    if (len > max_msg_) return PushStatus::kTooBig;
    if (stream_open_) return PushStatus::kBusy;
    if (len <= max_record_) {
        size_t footprint = record_footprint(len);
        size_t to_end = capacity_ - (head_ & (capacity_ - 1));
        size_t pad = footprint <= to_end ? 0 : to_end;
        if (!has_room(pad + footprint)) return PushStatus::kFull;
        if (pad) {
            write_pad(head_, pad);
            head_ += pad;
        }
        write_record(head_, meta, kFlagWhole, data, len, 0);
        last_index_ = head_;
        head_ += footprint;
        if (head_ - published_ >= publish_batch_) publish();
        return PushStatus::kOk;
    }
    // Parts: plan them all first so that either all go in or none does.
    uint64_t index = head_;
    for (size_t done = 0; done < len;) {
        Plan p = plan_part(index, len - done);
        index += p.pad + record_footprint(p.part);
        done += p.part;
    }
    size_t need = index - head_;
    if (need > capacity_) return PushStatus::kTooBig;
    if (!has_room(need)) return PushStatus::kFull;
    const uint8_t *bytes = static_cast<const uint8_t *>(data);
    last_index_ = UINT64_MAX;  // parts are never appended to
    for (size_t done = 0; done < len;) {
        Plan p = plan_part(head_, len - done);
        if (p.pad) {
            write_pad(head_, p.pad);
            head_ += p.pad;
        }
        uint16_t flags =
            uint16_t((done == 0 ? kFlagFirst : 0) | (done + p.part == len ? kFlagLast : 0));
        write_record(head_, meta, flags, bytes + done, p.part, done);
        head_ += record_footprint(p.part);
        done += p.part;
    }
    if (head_ - published_ >= publish_batch_) publish();
    return PushStatus::kOk;
}

bool Producer::try_append(const RecordMeta &meta, const void *data, size_t len) {
    if (last_index_ == UINT64_MAX || last_index_ < published_ || stream_open_) return false;
    RecordHeader &h = last_;
    if (h.type != meta.type || h.conn_id != meta.conn_id ||
        h.flags != uint16_t((meta.flags & kFlagsUser) | kFlagWhole)) {
        return false;
    }
    size_t new_len = size_t(h.len) + len;
    if (new_len > max_record_) return false;
    size_t pos = size_t(last_index_ & (capacity_ - 1));
    size_t old_end = last_index_ + record_footprint(h.len);
    size_t new_end = last_index_ + record_footprint(new_len);
    if (pos + record_footprint(new_len) > capacity_) return false;
    if (old_end != head_ || !has_room(new_end - old_end)) return false;
    uint8_t *at = data_ + pos;
    if (len) memcpy(at + kHeaderSize + h.len, data, len);
    h.len = uint32_t(new_len);
    h.check = record_check(h, last_index_);
    memcpy(at, &h, sizeof h);
    head_ = new_end;
    if (head_ - published_ >= publish_batch_) publish();
    return true;
}

PushStatus Producer::try_push_stream(const RecordMeta &meta, const void *data, size_t len,
                                     size_t *done) {
    if (meta.type >= kTypeReserved) return PushStatus::kBadType;
    if (len > max_msg_) return PushStatus::kTooBig;
    if (stream_open_ ? *done != stream_done_ : *done != 0) return PushStatus::kBusy;
    if (len <= max_record_) {
        PushStatus s = try_push(meta, data, len);
        if (s == PushStatus::kOk) *done = len;
        return s;
    }
    const uint8_t *bytes = static_cast<const uint8_t *>(data);
    last_index_ = UINT64_MAX;  // parts are never appended to
    while (*done < len) {
        Plan p = plan_part(head_, len - *done);
        if (!has_room(p.pad + record_footprint(p.part))) break;
        if (p.pad) {
            write_pad(head_, p.pad);
            head_ += p.pad;
        }
        uint16_t flags =
            uint16_t((*done == 0 ? kFlagFirst : 0) | (*done + p.part == len ? kFlagLast : 0));
        write_record(head_, meta, flags, bytes + *done, p.part, *done);
        head_ += record_footprint(p.part);
        *done += p.part;
    }
    // The consumer must see the parts to make room for the rest.
    publish();
    stream_open_ = *done<len && * done> 0;
    stream_done_ = *done;
    return *done == len ? PushStatus::kOk : PushStatus::kFull;
}

// Pairs with Consumer::prepare_sleep: the producer stores the head and then loads the flag,
// the consumer stores the flag and then loads the head, each with a seq_cst fence between,
// so at least one of them sees the other's store and no wakeup is lost.
bool Producer::flush() {
    publish();
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!control_->sleeping.load(std::memory_order_relaxed)) return false;
    if (!control_->sleeping.exchange(0, std::memory_order_acq_rel)) return false;
    waker_->signal();
    bump(control_->wakeups);
    return true;
}

}  // namespace asyncd::shmq
