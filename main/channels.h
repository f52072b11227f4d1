// Everything the supervisor creates before it forks, so that a child and its replacement
// after a crash inherit the same: the two rings of every worker, the wakers, a small block
// of shared state, the table of peers, and the pipes between the supervisor and children.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "main/config.h"
#include "plugin_api/asyncd_plugin.h"
#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd {

// Record types from conn to a worker.
enum : uint16_t {
    kRecPacket = 1,     // a whole packet of conn_id; seq counts the connection's packets
    kRecLinkUp = 2,     // payload: asyncd_peer_t
    kRecLinkDown = 3,   // seq: the asyncd_down_reason
    kRecConnReset = 4,  // a new conn process: every connection before it is gone
};

// Record types from a worker to conn.
enum : uint16_t {
    kRecReply = 1,  // bytes for conn_id
    kRecClose = 2,  // close conn_id after its pending replies
};

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

struct SharedState {
    std::atomic<uint64_t> conn_serial;  // conn: fetch_add per accepted connection
    std::atomic<uint32_t> phase;        // supervisor: a Phase
    std::atomic<uint32_t> conn_epoch;   // supervisor: bumped before each conn start
};

// Written by conn at accept and cleared at close; read by a worker that meets a connection
// it never saw linked up (its predecessor did). conn_id is stored last with release, read
// first and again after copying the peer: a changed id means the copy is stale.
struct PeerSlot {
    std::atomic<uint64_t> conn_id;
    asyncd_peer_t peer;
};

// What one child tells the supervisor on the event pipe; one write, shorter than PIPE_BUF.
struct ChildNote {
    char kind;  // 'C' conn ready, 'W' worker ready, 'I' conn input stopped
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

    SharedState *state = nullptr;
    PeerSlot *peers = nullptr;
    size_t npeers = 0;
    std::vector<std::unique_ptr<WorkerLink>> workers;
    shmq::Waker conn_wake;             // conn sleeps on it; workers and the supervisor signal it
    int event_rd = -1, event_wr = -1;  // children -> supervisor notes
    int death_rd = -1, death_wr = -1;  // EOF on death_rd: the supervisor is gone

  private:
    size_t shared_size_ = 0;
    void *shared_ = nullptr;
};

// Fills peer_out from the table if conn_id still owns its slot.
bool read_peer(const Channels &ch, uint64_t conn_id, asyncd_peer_t *peer_out);

}  // namespace asyncd
