// The conn process: one epoll loop that owns every client socket. It accepts, frames what
// clients send, pushes whole packets into the ring of the worker each connection is bound
// to, and writes the workers' replies back, one write per connection per loop turn.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <sys/epoll.h>

#include "conn/buffer.h"
#include "conn/frame.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/cpu_contention.h"
#include "core/log.h"
#include "core/plugin.h"

namespace asyncd::conn {

class ConnServer {
  public:
    ConnServer(const Config &cfg, Channels *ch, int listen_fd, Log *log);
    ~ConnServer();
    ConnServer(const ConnServer &) = delete;
    ConnServer &operator=(const ConnServer &) = delete;

    // Runs until the supervisor's stop completes, SIGTERM, or the supervisor dies. Returns
    // the exit code: 0, or 2 when it cannot start at all (fatal, not restarted).
    int run();

  private:
    struct Connection {
        int fd = -1;
        uint64_t id = 0;
        int worker = -1;  // bound for life; -1 until select_worker has seen a packet
        Buffer in;        // bytes read and not yet pushed (a partial or a blocked packet)
        Buffer out;       // replies not yet written
        uint64_t packets = 0;
        uint64_t last_active_ms = 0;
        uint64_t pkg_start_ms = 0;   // when the first byte of a partial packet came; 0: none
        uint64_t soft_since_ms = 0;  // when out went over out_buf_soft; 0: it is not
        uint32_t events = 0;         // what epoll watches now
        bool up_pending = false;     // its LINK_UP is not in the ring yet
        bool linked = false;         // its LINK_UP is in the ring: a LINK_DOWN must follow
        bool queued = false;         // waiting for room in its worker's ring; not reading
        bool starved = false;        // not read while conn is at its input_budget
        size_t in_counted = 0;       // in.size() as input_pending_ counts it
        size_t stream_len = 0;       // the length of its packet half streamed into the ring
        bool dirty = false;          // in dirty_: has output to write this turn
        bool close_after_flush = false;
        bool closed = false;  // socket closed; the slot lives on until its LINK_DOWN is in
        bool reaped = false;
        int down_reason = 0;
        asyncd_peer_t peer{};  // what its LINK_UP carries
        char peer_text[64] = "";
    };

    // One worker as conn sees it: the ring to it, the ring from it, and the connections
    // waiting, in order, for room in the ring to it.
    struct Port {
        Port(shmq::Ring *in, shmq::Ring *out, const shmq::Waker *worker_wake,
             const shmq::Waker *conn_wake)
            : in_ring(in), to(in, worker_wake), from(out, conn_wake, worker_wake) {}
        shmq::Ring *in_ring;
        shmq::Producer to;
        shmq::Consumer from;
        std::deque<Connection *> waiting;
        size_t stream_done = 0;  // progress of the head's packet when it goes in parts
        size_t need = 0;         // payload of the push that found the ring full
        int index = 0;
        size_t high_water = 0;  // the most bytes this ring held at a flush
        size_t conns = 0;       // connections bound to this worker, until reaped
        bool retire_noted = false;
        bool reset_pending = false;
        bool dirty = false;  // pushed since the last flush
    };

    bool setup(std::string *err);
    void turn_events(int n);
    void on_accept();
    void clamp_max_conns();
    void set_check_interval();
    void reload_limits();
    void shed_connection(int err);
    void resume_accepting();
    void on_readable(Connection *c);
    void write_out(Connection *c);
    void update_events(Connection *c);

    // Pushes the packets at data into c's worker ring; *used says how many bytes went in.
    // False when c blocked on a full ring (it is queued) or was closed.
    bool feed(Connection *c, const uint8_t *data, size_t len, size_t *used);
    bool push_up(Connection *c);
    bool push_down(Connection *c);
    bool must_wait(Port &p, Connection *c);
    void test_hook_after_push(Port &p, const uint8_t *pkg, size_t len);
    void enqueue(Port &p, Connection *c);
    bool drive(Connection *c);
    void serve_waiting(Port &p);
    int bind_worker(Connection *c, const uint8_t *pkg, size_t len);
    void note_bound(Connection *c);

    void close_conn(Connection *c, int reason);
    void schedule_reap(Connection *c);
    void reap();

    bool drain_replies();
    void handle_reply(const shmq::Message &m);
    bool output_fits(Connection *c, size_t len);
    void mark_dirty(Connection *c);
    void flush_writes();
    void flush_ports();
    void note_partial(Connection *c, bool fresh);
    void track_input(Connection *c);
    bool budget_allows_read(Connection *c, size_t *max_read);
    void resume_starved();
    void arm_check();
    void check_timeouts();
    int next_timeout();
    void check_phase();
    // Workers new connections may go to (a reload may change it; at least 1).
    uint32_t active_workers() const {
        uint32_t n = ch_->state->active_workers.load(std::memory_order_acquire);
        return n < 1 ? 1 : (n > ports_.size() ? uint32_t(ports_.size()) : n);
    }
    bool drained();
    int next_worker();
    bool is_serving(int w) const;
    bool is_fatal(int w) const;
    void close_fatal_bound();
    int sleep_timeout(int wanted);
    int wait_events(int timeout);
    bool rings_ready();

    Config cfg_;  // a copy: a reload changes the client limits in it
    Channels *ch_;
    int listen_fd_;
    Log *log_;
    std::unique_ptr<Plugin> plugin_ = std::make_unique<Plugin>();
    uint32_t plugin_generation_ = 0;
    FrameDecoder decoder_;
    int ep_ = -1;
    int sig_fd_ = -1;
    uint64_t now_ms_ = 0;
    uint64_t check_every_ms_ = 0;    // how often check_timeouts() looks; 0: no timeout is on
    uint64_t next_check_ms_ = 0;     // when it looks next; 0: nothing to look for
    int max_conns_ = 0;              // cfg_.max_conns, or less if the fd limit says so
    int own_fds_ = 0;                // fds conn needs besides its clients
    int reserve_fd_ = -1;            // given up to accept-and-close when fds run out
    uint64_t accept_resume_ms_ = 0;  // accepting paused until then; 0: not paused
    std::vector<Connection *> slots_;
    std::deque<uint32_t> free_slots_;  // oldest first: a slot's peer stays findable longest
    std::vector<std::unique_ptr<Port>> ports_;
    std::vector<Connection *> dirty_;
    std::vector<Connection *> reap_;
    std::unique_ptr<uint8_t[]> scratch_;
    struct epoll_event events_[512];
    size_t live_ = 0;
    uint32_t next_worker_ = 0;
    uint32_t fatal_generation_ = 0;  // the supervisor's, when conn last looked
    bool more_ = false;              // a ring was left with work: do not sleep
    uint64_t last_activity_ns_ = 0;  // the last turn that moved a packet or a reply
    CpuContention cpu_;
    bool input_stopped_ = false;
    bool draining_ = false;
    bool quiescing_ = false;    // after SIGQUIT: no new connections
    bool quiet_noted_ = false;  // told the supervisor the last client left
    bool quit_ = false;

    // At most this many lines a second of each kind.
    LogLimit refuse_log_{1};
    LogLimit fd_log_{1};
    LogLimit ring_log_{1};
    LogLimit close_log_{10};
    LogLimit out_log_{10};

    // input_budget: bytes read and not yet handed to a worker, over all connections, and how
    // many connections hold some; the ids of the connections not read meanwhile.
    size_t input_pending_ = 0;
    size_t input_holders_ = 0;
    std::vector<uint64_t> starved_;
    LogLimit budget_log_{1};

    size_t ring_high_water_ = 0;  // the most bytes any ring to a worker held at a flush
    ConnStats *st_ = nullptr;     // conn's counters, in shared memory (main/stats.h)
};

}  // namespace asyncd::conn
