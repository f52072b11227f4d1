// Everything the supervisor creates before it forks, so that a child and its replacement
// after a crash inherit the same: the two rings of every worker, the wakers, a small block
// of shared state, the table of peers, and the pipes between the supervisor and children.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/records.h"
#include "core/stats.h"
#include "plugin_api/asyncd_plugin.h"
#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd {

// Where the supervisor has the whole system in a stop.
enum class Phase : uint32_t {
    kRunning = 0,
    kStopInput = 1,    // conn: stop accepting and reading, then say so on the event pipe
    kDrainOutput = 2,  // conn: the workers are done; write what is left and exit
};

// A connection id keeps its conn slot in the low 24 bits and a serial that never repeats
// above them (the serial lives in shared memory, so it survives a conn restart too).
inline constexpr int kConnSlotBits = 24;
inline constexpr uint64_t kConnSlotMask = (uint64_t(1) << kConnSlotBits) - 1;
inline uint32_t conn_slot(uint64_t id) {
    return uint32_t(id & kConnSlotMask);
}

// Exit codes of children beyond 0 and 1.
inline constexpr int kExitFatal = 2;    // never restart (plugin will not load, init refused)
inline constexpr int kExitRecycle = 3;  // a worker over worker_max_rss: restart at once

// Which plugin callback a worker is in, for the hang detector's log line.
enum class Callback : uint32_t {
    kNone = 0,
    kInit,
    kPacket,
    kLinkUp,
    kLinkDown,
    kEvents,
    kTimer,
    kFini,
    kNode,      // proc_pkg_node
    kNodeLink,  // link_up_node, link_down_node
    kCallDone,  // a node_call's callback
};
const char *callback_name(Callback cb);

// One per worker slot. busy_since_ms: the worker stores the time before each plugin
// callback and 0 after it (relaxed: the supervisor only needs it within a tick); the
// supervisor kills a worker whose callback has run longer than handler_timeout.
//
// progress: where the worker has got to, for its replacement. After each record it has
// handed to the plugin it writes the request-ring index just past that record and the
// reply-ring index just past the replies the plugin sent for it, into the slot that is not
// current, then makes that slot current (release). A worker publishes replies and commits
// requests once per batch; one that dies in mid-batch leaves whole replies unpublished and
// answered requests uncommitted, and its replacement publishes the first and skips the
// second, so that only the record in flight comes again.
//
// out_last and out_last_len: the reply record written last and its length at the note. The
// worker may still append to that record (replies to one connection coalesce) after the
// note; its replacement writes the header back to this length before it publishes.
struct WorkerProgress {
    std::atomic<uint64_t> in_next;
    std::atomic<uint64_t> out_written;
    std::atomic<uint64_t> out_last;
    std::atomic<uint64_t> out_last_len;
};

struct WorkerState {
    std::atomic<uint64_t> busy_since_ms;
    std::atomic<uint32_t> callback;
    std::atomic<uint32_t> progress_slot;
    WorkerProgress progress[2];
};

// The settings a reload applies to running children, as the supervisor validated them: conn's
// client limits and the log level. The supervisor is the only writer; conn and the workers
// read it when told (SIGUSR2) or when `seq` moved, and never re-read the config file, so that
// a reload sent back puts every process back on the old values and a second edit of the file
// cannot race the first. A seqlock: seq is odd while the supervisor writes.
struct LiveLimits {
    int max_conns;
    int idle_timeout;
    int pkg_timeout_ms;
    int out_buf_soft_ms;
    int busy_poll_us;
    int busy_poll_contended_us;
    int log_level;
    uint64_t out_buf_soft;
    uint64_t out_buf_hard;
    uint64_t input_budget;
    uint64_t call_timeout_ms;  // the cluster's: node_call's default deadline
    uint64_t pending_max;      // the cluster's: calls a worker may have waiting
};

class LiveLimitsSlot {
  public:
    // The supervisor.
    void publish(const Config &cfg);
    // Readers: the values now, and the sequence they carry (even).
    uint32_t read(LiveLimits *out) const;
    uint32_t seq() const { return seq_.load(std::memory_order_acquire); }
    // Applies v to cfg (the fields a reload changes live).
    static void apply(const LiveLimits &v, Config *cfg);

  private:
    static constexpr int kWords = sizeof(LiveLimits) / sizeof(uint64_t);
    std::atomic<uint32_t> seq_;
    std::atomic<uint64_t> words_[kWords];
};
static_assert(sizeof(LiveLimits) % sizeof(uint64_t) == 0, "copied as whole words");

struct SharedState {
    std::atomic<uint64_t> conn_serial;        // conn: fetch_add per accepted connection
    std::atomic<uint32_t> phase;              // supervisor: a Phase
    std::atomic<uint32_t> conn_epoch;         // supervisor: bumped before each conn start
    std::atomic<uint32_t> quiesce;            // supervisor: 1 after SIGQUIT; conn stops accepting
    std::atomic<uint32_t> active_workers;     // supervisor: new connections go to 0..N-1
    std::atomic<uint32_t> plugin_generation;  // supervisor: bumped when a reload changes it
    std::atomic<uint32_t> slots_used;         // conn: the peer table's slots ever used (release)
    std::atomic<uint32_t> workers_stop;       // supervisor: 1 once a stop tells workers to drain
    std::atomic<uint64_t> stop_deadline_ms;   // supervisor: when a stop kills what is left
    LiveLimitsSlot limits;                    // supervisor: what a reload applies live
    std::atomic<uint32_t> fatal_generation;   // supervisor: bumped when a slot turns fatal
    std::atomic<uint64_t> poll_ns;            // conn, workers: time spent busy polling (relaxed)
    // supervisor (release), one bit per worker slot: serving: ready, not dead or in back-off,
    // so conn may bind new connections to it; fatal: it will never serve.
    std::atomic<uint64_t> serving[kMaxWorkers / 64];
    std::atomic<uint64_t> fatal[kMaxWorkers / 64];
    char plugin_path[4096];  // supervisor: the plugin of that generation, written before it
    // supervisor: the validated cluster table (cluster::encode_cluster) conn applies, written
    // before cluster_generation is bumped (release); conn copies it and checks the
    // generation again.
    std::atomic<uint32_t> cluster_generation;
    std::atomic<uint32_t> cluster_len;
    char cluster_table[1 << 16];
    WorkerState workers[kMaxWorkers];
};

// One per conn slot, written by conn. conn_id and peer at accept (conn_id stored last with
// release, read first and again after copying the peer: a changed id means the copy is
// stale); they stay until the slot is used again, so that a worker that meets a connection
// it never saw linked up (its predecessor did) finds its peer even after it closed. bound:
// 1 + the worker the connection is bound to while it is open, 0 before it is bound and after
// it closed; a worker that starts links up every open connection bound to it (release
// store, acquire load). Zero is "nothing", so the untouched pages of the table cost nothing.
struct PeerSlot {
    std::atomic<uint64_t> conn_id;
    std::atomic<uint32_t> bound;
    asyncd_peer_t peer;
};

// conn's connection table (and the peer table beside it) holds this many slots: the room
// for max_conns and for a reload that raises it, and for closed connections that keep their
// slot while their LINK_DOWN waits for room in a ring. Its pages cost memory only once used.
inline size_t conn_table_slots(int max_conns) {
    size_t want = std::max<size_t>(size_t(max_conns) * 4, 65536);
    return std::min<size_t>(want, kConnSlotMask);
}

// What one child tells the supervisor on the event pipe; one write, shorter than PIPE_BUF.
struct ChildNote {
    char kind;  // 'C' conn ready, 'W' worker ready, 'I' conn input stopped, 'Q' conn has
                // no client left after a SIGQUIT, 'R' a retiring worker has no client left
    char pad;
    uint16_t index;
    int32_t pid;
};

struct WorkerLink {
    shmq::Ring in;     // conn -> work
    shmq::Ring out;    // work -> conn
    shmq::Waker wake;  // the worker sleeps on it; conn signals it
};

class Channels {
  public:
    Channels() = default;
    ~Channels();
    Channels(const Channels &) = delete;
    Channels &operator=(const Channels &) = delete;

    [[nodiscard]] bool create(const Config &cfg, std::string *err);

    // In a child after fork: close the supervisor's ends it must not hold (the write end of
    // the death pipe, the read end of the event pipe).
    void enter_child();

    // Children: one note to the supervisor.
    void note(char kind, int index) const;

    // Workers new connections may go to, 0..N-1 (a reload may change it; at least 1, at most
    // the rings made at start).
    uint32_t active_workers() const {
        uint32_t n = state->active_workers.load(std::memory_order_acquire);
        return n < 1 ? 1 : (n > workers.size() ? uint32_t(workers.size()) : n);
    }

    SharedState *state = nullptr;
    PeerSlot *peers = nullptr;
    size_t npeers = 0;
    std::vector<std::unique_ptr<WorkerLink>> workers;
    shmq::Waker conn_wake;             // conn sleeps on it; workers and the supervisor signal it
    int event_rd = -1, event_wr = -1;  // children -> supervisor notes
    int death_rd = -1, death_wr = -1;  // EOF on death_rd: the supervisor is gone
    Stats *stats = nullptr;            // counters for status and metrics (main/stats.h)
    int stats_fd = -1;                 // the supervisor's: `asyncd -s status` maps it

  private:
    size_t shared_size_ = 0;
    void *shared_ = nullptr;
};

// Fills peer_out from the table if conn_id still owns its slot.
bool read_peer(const Channels &ch, uint64_t conn_id, asyncd_peer_t *peer_out);

}  // namespace asyncd
