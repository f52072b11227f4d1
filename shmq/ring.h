// A single-producer single-consumer ring of variable-length records in a shared anonymous
// mapping. The mapping is created before fork; the producer and the consumer, and their
// replacements after a crash, each build a handle (Producer, Consumer) over it.
//
// Indices are byte counts that only grow; a record's place in the mapping is its index
// modulo the capacity. A record never crosses the end of the mapping: one that does not fit
// leaves a padding record (or, when fewer than a header's bytes are left, an implicit gap)
// and starts again at the front. A message larger than max_record travels as parts and is
// reassembled on the consumer side, in a buffer that also lives in the mapping so that a
// replacement consumer finds the parts its predecessor had already taken.
//
// Delivery: the consumer peeks, may mark the message in flight, lets the caller process it
// and only then commits. A replacement consumer starts at the last commit, so a message is
// delivered at least once and only the one in flight can come twice; mark_in_flight() tells
// how many consumers have started on it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "shmq/record.h"

namespace asyncd::shmq {

class Waker;

inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kMinCapacity = 4096;
inline constexpr size_t kMaxCapacity = size_t(1) << 36;
inline constexpr size_t kMaxMessage = size_t(1) << 30;  // part offsets are 32-bit

struct RingParams {
    size_t capacity = size_t(1) << 20;  // data bytes; a power of two
    size_t max_record = 0;              // payload bytes per record; 0: min(capacity/4, 64 KiB)
    size_t max_msg = size_t(1) << 20;   // whole message; independent of the capacity
};

// The control block at the start of the mapping. Each line says who writes it.
struct RingControl {
    // Written once by Ring::create before fork; read-only afterwards. The handles use their
    // own copies of these values, so a corrupted control block cannot widen their bounds.
    uint64_t magic;
    uint64_t capacity;
    uint64_t max_record;
    uint64_t max_msg;

    // The producer's line. head: release store after the record bytes are written; the
    // consumer reads it with an acquire load. wakeups: the producer's count of signals.
    alignas(kCacheLine) std::atomic<uint64_t> head;
    std::atomic<uint64_t> wakeups;

    // The consumer's line. tail: release store once the consumer is done with the bytes; the
    // producer reads it with an acquire load. in_flight and in_flight_attempts: which message
    // a consumer is processing and how many consumers started on it; read by a replacement.
    // sleeps and abandoned: the consumer's counts of blocking waits and of partial messages
    // dropped because their producer died part-way through.
    alignas(kCacheLine) std::atomic<uint64_t> tail;
    std::atomic<uint64_t> in_flight;
    std::atomic<uint64_t> in_flight_attempts;
    std::atomic<uint64_t> sleeps;
    std::atomic<uint64_t> abandoned;

    // Written by both: the consumer sets it before it re-checks and blocks; the producer
    // clears it with an exchange when it decides to signal. Ordered by seq_cst fences.
    alignas(kCacheLine) std::atomic<uint32_t> sleeping;

    // The same protocol the other way round, for a producer that waits for room: it sets
    // the flag and re-checks the tail; the consumer, after a batch of commits, clears it
    // with an exchange and signals the producer's waker.
    alignas(kCacheLine) std::atomic<uint32_t> producer_waiting;
    std::atomic<uint64_t> room_wakeups;  // the consumer's count of those signals
};

static_assert(std::is_standard_layout_v<RingControl>, "the control block has a fixed layout");
static_assert(std::is_trivially_destructible_v<RingControl>, "no destructor runs in shared memory");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "32-bit atomics must be lock-free");
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t), "atomics are plain words");
static_assert(offsetof(RingControl, tail) - offsetof(RingControl, head) >= kCacheLine,
              "producer and consumer indices live on separate cache lines");
static_assert(offsetof(RingControl, sleeping) - offsetof(RingControl, tail) >= kCacheLine,
              "the sleep flag does not share the consumer's line");
static_assert(offsetof(RingControl, producer_waiting) - offsetof(RingControl, sleeping) >=
                  kCacheLine,
              "the two wait flags live on separate lines");

// Owns the shared mapping. Create it in the parent before fork; children use the inherited
// object (the mapping sits at the same address in every child).
class Ring {
  public:
    Ring() = default;
    ~Ring();
    Ring(const Ring &) = delete;
    Ring &operator=(const Ring &) = delete;

    // Maps and initialises the ring. On bad parameters or a failed mmap returns false with
    // the reason in *err.
    [[nodiscard]] bool create(const RingParams &params, std::string *err);
    void destroy();

    bool is_open() const { return control_ != nullptr; }
    size_t capacity() const { return capacity_; }
    size_t max_record() const { return max_record_; }
    size_t max_msg() const { return max_msg_; }
    size_t mapping_size() const { return mapping_size_; }

    // Bytes published and not yet committed: the ring's depth.
    uint64_t used_bytes() const;
    // The messages in those bytes (whole records and first parts), for a report when nobody
    // will consume them; stops counting at the first header that fails its check. Reads
    // only: call it while the consumer is not running.
    uint64_t count_messages() const;
    uint64_t wakeups() const;
    uint64_t sleeps() const;
    uint64_t abandoned() const;

    RingControl *control() const { return control_; }
    // The record area and the reassembly buffer. Tests use them to corrupt records on purpose.
    uint8_t *data() const { return data_; }
    uint8_t *assembly() const { return assembly_; }

  private:
    RingControl *control_ = nullptr;
    uint8_t *data_ = nullptr;
    uint8_t *assembly_ = nullptr;
    size_t capacity_ = 0;
    size_t max_record_ = 0;
    size_t max_msg_ = 0;
    size_t mapping_size_ = 0;
};

// What the caller puts beside the payload; it comes out of the consumer unchanged.
struct RecordMeta {
    uint16_t type = 0;   // below kTypeReserved
    uint16_t flags = 0;  // the caller's bits (kFlagsUser); the rest is ignored
    uint64_t conn_id = 0;
    uint64_t seq = 0;
};

enum class [[nodiscard]] PushStatus{
    kOk,
    kFull,    // not enough room now; nothing (or, for a stream, only part) was written
    kTooBig,  // above max_msg, or (try_push only) larger than the ring can ever hold at once
    kBusy,    // a stream is half written; finish it first
    kBadType  // type in the ring's reserved range
};

class Producer {
  public:
    // Resumes at the published head: whatever a dead predecessor wrote and did not publish
    // is simply overwritten.
    Producer(Ring *ring, const Waker *waker);

    // All or nothing: the whole message (as one record, or as parts when it is longer than
    // max_record) is written, or nothing is. Never blocks, never allocates. The consumer
    // sees it at the next flush() (or sooner, once a batch grows past an eighth of the ring);
    // only from then on does it survive the death of this process.
    PushStatus try_push(const RecordMeta &meta, const void *data, size_t len);

    // For messages of any size up to max_msg, also larger than the ring: writes as many
    // parts as there is room for, publishes them and adds their bytes to *done. Call again
    // with the same arguments once there is room; kOk when *done == len. Until then any
    // other push returns kBusy.
    PushStatus try_push_stream(const RecordMeta &meta, const void *data, size_t len, size_t *done);
    // Gives up the message being streamed (its sender went away): other pushes work again,
    // and the consumer drops the parts it has, counted as abandoned, at the next record.
    void abort_stream() {
        stream_open_ = false;
        stream_done_ = 0;
    }
    bool stream_open() const { return stream_open_; }

    // Appends len bytes to the payload of the record written last, if that record is not
    // yet published, is a whole (unparted) record with the same type, flags and conn_id, and
    // the longer record still fits max_record, the room in the ring and the space before
    // the end of the mapping. Returns false (and writes nothing) otherwise; the caller then
    // pushes a record of its own. The consumer sees one record carrying both payloads:
    // for byte streams such as replies to one connection, that is one record instead of many.
    bool try_append(const RecordMeta &meta, const void *data, size_t len);

    // Publishes everything written so far (one release store of the head) and signals the
    // consumer if it announced that it sleeps. Call it at the end of every batch of pushes,
    // at the latest before this process waits for anything; a push that finds the ring full
    // flushes by itself. Returns true when it wrote a wakeup.
    bool flush();
    // Publishes everything written so far (one release store of the head) without the
    // wakeup check: the consumer sees it if it looks, and is woken at the next flush().
    void publish();

    size_t free_bytes();
    // The index of the record written last (UINT64_MAX after parts or before any record).
    uint64_t last_record_index() const { return last_index_; }
    // The index just past everything written, published or not.
    uint64_t written() const { return head_; }
    // The payload length of the record written last (meaningful while last_record_index()
    // is not UINT64_MAX). A producer that notes how far it got notes this beside written():
    // try_append may still grow that record afterwards, and a replacement must publish it
    // with the length it had at the note.
    uint32_t last_record_len() const { return last_.len; }
    // A replacement producer adopts what its dead predecessor wrote completely but did not
    // publish, up to index (which the predecessor recorded once those bytes were whole),
    // and publishes it. last_record and last_len are what last_record_index() and
    // last_record_len() said at that note: if the predecessor appended to that record after
    // the note, its header claims bytes beyond index, and adopt writes it back to last_len
    // before it publishes, so that no header is published that does not match its bytes.
    // False, and nothing changes, unless index lies beyond the published head and within
    // the ring's capacity from the tail.
    bool adopt(uint64_t index, uint64_t last_record = UINT64_MAX, uint32_t last_len = 0);
    // Whether a push of len payload bytes (for a stream: its next part) would fit now.
    bool can_push(size_t len) { return free_bytes() >= room_for(len); }

    // Waiting for room, the mirror of Consumer::prepare_sleep: flushes, announces the wait
    // and re-checks. len is the payload of the push that said kFull (for a stream, the bytes
    // still to go). True means that push still cannot go in (all at once; a stream's next
    // part) and the caller may block on its own waker, which the consumer signals once it
    // has made room (Consumer::notify_room); false means room appeared and the announcement
    // is withdrawn. Call finish_wait_room() after waking.
    bool prepare_wait_room(size_t len);
    void finish_wait_room();

  private:
    struct Plan {
        size_t pad;   // bytes skipped before the record
        size_t part;  // payload bytes in the record
    };
    Plan plan_part(uint64_t index, size_t remaining) const;
    size_t room_for(size_t len) const;
    bool has_room(size_t need);
    void write_pad(uint64_t index, size_t bytes);
    void write_record(uint64_t index, const RecordMeta &meta, uint16_t ring_flags, const void *data,
                      size_t len, size_t offset);

    RingControl *control_;
    uint8_t *data_;
    const Waker *waker_;
    size_t capacity_;
    size_t max_record_;
    size_t max_msg_;
    uint64_t head_;         // next index to write
    uint64_t published_;    // head as the consumer sees it: the last release store
    uint64_t cached_tail_;  // last tail seen; reloaded only when the ring looks full
    size_t publish_batch_;  // unpublished bytes that trigger a publication without flush()
    bool stream_open_ = false;
    size_t stream_done_ = 0;
    // The record written last, for try_append; valid while last_index_ >= published_.
    uint64_t last_index_ = UINT64_MAX;
    RecordHeader last_{};
};

// A message as the consumer hands it over. data stays valid until commit().
struct Message {
    uint16_t type;
    uint16_t flags;  // the caller's bits
    uint64_t conn_id;
    uint64_t seq;
    const uint8_t *data;
    size_t len;
    uint64_t index;  // ring index of its last record: what mark_in_flight records
};

enum class [[nodiscard]] PopStatus{
    kOk, kEmpty,
    kCorrupt  // a header failed validation; error() says which check. Nothing was read past it.
};

class Consumer {
  public:
    // Resumes at the last commit. If a dead predecessor was in the middle of a parted
    // message, the parts it took are in the shared reassembly buffer and are not asked for.
    // waker: the one this side sleeps on. room_waker: the producer's, signalled by
    // notify_room() when the producer waits for room (may be null if it never does).
    Consumer(Ring *ring, const Waker *waker, const Waker *room_waker = nullptr);

    // Hands over the next whole message without consuming it; the same message again until
    // commit(). Validates each header (check value, type, lengths against max_record, the
    // end of the mapping and the published head) before it touches a payload byte.
    PopStatus peek(Message *out);

    // Records that the peeked message is being processed. Returns how many consumers have
    // started on it: 1 normally, more when a predecessor died while processing it.
    uint64_t mark_in_flight();

    // Consumes the peeked message: the producer may reuse its bytes.
    void commit();
    // commit() in two steps, for a consumer that commits a batch at once: advance() moves
    // past the peeked message (the next peek hands over the one after it) without giving
    // its bytes back; commit_advanced() gives back everything advanced over.
    void advance();
    void commit_advanced();
    // The index just past the messages advanced over.
    uint64_t position() const { return tail_; }
    // Bytes published and not yet taken: how far behind this consumer is.
    uint64_t backlog() const { return control_->head.load(std::memory_order_acquire) - tail_; }
    // A replacement consumer that knows where its predecessor had got to (a record
    // boundary between the committed tail and the head) starts there. False, and nothing
    // changes, if index is out of that range.
    bool skip_to(uint64_t index);

    // Why the last peek returned kCorrupt.
    const char *error() const { return error_; }

    // After kCorrupt: drops everything published so far and starts clean. Returns the bytes
    // dropped.
    uint64_t discard_all();

    // The sleep protocol. prepare_sleep() announces the sleep and re-checks the ring: true
    // means it is still empty and the caller may block on the waker's fd (it is woken if the
    // producer publishes after the announcement); false means data arrived and the
    // announcement is withdrawn. After waking call finish_sleep().
    bool prepare_sleep();
    void finish_sleep();
    // finish_sleep without draining the waker, for a process whose waker is shared by
    // several rings and drained once by its event loop.
    void withdraw_sleep();
    // prepare_sleep, a wait on the waker of at most timeout_ms, finish_sleep. Returns true
    // when a message may be waiting.
    bool wait(int timeout_ms);

    bool empty();

    // Call after a batch of commits: signals the producer if it waits for room. Returns true
    // when it wrote a wakeup.
    bool notify_room();

  private:
    PopStatus corrupt(const char *why);
    PopStatus take_part(const RecordHeader &h, uint64_t index, bool *done);

    RingControl *control_;
    uint8_t *data_;
    uint8_t *assembly_;
    const Waker *waker_;
    const Waker *room_waker_;
    size_t capacity_;
    size_t max_record_;
    size_t max_msg_;
    uint64_t tail_;         // committed: everything before it is consumed
    uint64_t cached_head_;  // last head seen; reloaded only when the ring looks empty
    uint64_t next_ = 0;     // index past the peeked message
    bool peeked_ = false;
    Message message_{};
    // Reassembly: whether a parted message is in progress, and the next offset expected.
    // A fresh consumer does not know; the first part it sees tells it.
    enum class Assembly { kUnknown, kIdle, kInProgress } assembly_state_ = Assembly::kUnknown;
    size_t assembly_len_ = 0;
    const char *error_ = "";
};

}  // namespace asyncd::shmq
