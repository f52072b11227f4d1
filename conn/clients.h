// The client side of conn: accept, connection slots and ids, read -> frame -> push into the
// worker's port, the workers' replies -> output limits -> writes, timeouts, close and reap.
// It uses the ports as any producer of records would; the rest of conn (phase, signals,
// reload) drives it through a few calls.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "conn/buffer.h"
#include "conn/frame.h"
#include "conn/port.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/latency.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/plugin.h"

namespace asyncd::conn {

class Clients;

// A connection's stage. Reading may pause besides (waiting for room in its worker's ring,
// or at input_budget): those are flags, not stages.
enum class Stage : uint8_t {
    kAccepted,  // no LINK_UP in a ring yet (waiting for its worker, or for room)
    kLinked,    // its LINK_UP is in the ring: a LINK_DOWN must follow
    kClosed,    // the socket is closed; its LINK_DOWN is owed (waiting for room)
    kDone,      // nothing more is owed: reaped at the end of the turn
};
const char *stage_name(Stage s);

struct Connection final : FdHandler, PortUser {
    void on_events(uint32_t events) override;
    bool on_room(Port &port) override;
    void on_dequeued(Port &port) override;

    Clients *clients = nullptr;
    int fd = -1;
    uint64_t id = 0;
    int worker = -1;  // bound for life; -1 until select_worker has seen a packet
    Stage stage = Stage::kAccepted;
    Buffer in;   // bytes read and not yet pushed (a partial or a blocked packet)
    Buffer out;  // replies not yet written
    uint64_t packets = 0;
    uint64_t last_active_ms = 0;
    uint64_t pkg_start_ms = 0;   // when the first byte of a partial packet came; 0: none
    uint64_t soft_since_ms = 0;  // when out went over out_buf_soft; 0: it is not
    uint32_t events = 0;         // what epoll watches now
    bool bound = false;          // a worker is chosen; the LINK_UP follows
    bool starved = false;        // not read while conn is at its input_budget
    bool dirty = false;          // in the dirty list: has output to write this turn
    bool close_after_flush = false;
    bool closed() const { return stage >= Stage::kClosed; }
    size_t in_counted = 0;  // in.size() as the input budget counts it
    size_t stream_len = 0;  // the length of its packet half streamed into the ring
    int down_reason = 0;
    asyncd_peer_t peer{};  // what its LINK_UP carries
    char peer_text[64] = "";
};

class Clients {
  public:
    Clients(Config *cfg, Channels *ch, Log *log, Loop *loop,
            std::vector<std::unique_ptr<Port>> *ports, int listen_fd);
    ~Clients();
    Clients(const Clients &) = delete;
    Clients &operator=(const Clients &) = delete;

    // At start: the reserve fd, the listen watch, the fd limit. False with *err.
    [[nodiscard]] bool open(std::string *err);
    // The plugin's framing and routing (at start, and after a reload changed the plugin).
    void set_plugin(const PluginExports &fns);
    // The limits of cfg changed (a reload): max_conns, timeouts.
    void limits_changed();

    // conn's phase, as it moves on.
    void stop_accepting();  // SIGQUIT: newcomers are refused at once
    void stop_input();      // a stop: nothing more is read
    bool input_stopped() const { return input_stopped_; }

    // One turn's work after the events: the ports' waiters, the replies, the writes.
    // Returns true when replies are left for the next turn.
    bool serve();
    // End of the turn: free what closed, read again what input_budget stopped.
    void end_turn();
    // A slot turned fatal: close the connections bound to it.
    void close_bound_to(int worker);
    // The end of a stop: close the connections that still have answers they did not read.
    void abandon_unwritten();

    size_t live() const { return live_; }
    // Every open connection has written everything it was given.
    bool all_written() const;
    int max_conns() const { return max_conns_; }

    // Called by Connection.
    void on_events(Connection *c, uint32_t events);
    bool drive(Connection *c);
    void dequeued(Connection *c);

  private:
    void on_accept();
    void accept_one(int fd);
    void clamp_max_conns();
    void shed_connection(int err);
    void resume_accepting();
    void on_readable(Connection *c);
    void write_out(Connection *c);
    void update_events(Connection *c);
    int next_worker();
    bool is_serving(int w) const;
    bool is_fatal(int w) const;
    int bind_worker(Connection *c, const uint8_t *pkg, size_t len);
    void note_bound(Connection *c);

    uint64_t timing_stamp();
    bool feed(Connection *c, const uint8_t *data, size_t len, size_t *used);
    bool push_up(Connection *c);
    bool push_down(Connection *c);
    bool must_wait(Port &p, Connection *c);
    void wait_for_room(Port &p, Connection *c, size_t need);
    void test_hook_after_push(Port &p, const uint8_t *pkg, size_t len);

    void close_conn(Connection *c, int reason);
    void set_stage(Connection *c, Stage s);
    void reap();

    void handle_reply(const shmq::Message &m);

  public:
    // Where a worker's cluster records go (conn/nodes); unset without a cluster.
    void set_node_handler(std::function<void(int, const shmq::Message &)> fn) {
        node_fn_ = std::move(fn);
    }

  private:
    std::function<void(int, const shmq::Message &)> node_fn_;
    bool output_fits(Connection *c, size_t len);
    void mark_dirty(Connection *c);
    void flush_writes();
    void note_partial(Connection *c, bool fresh);
    void track_input(Connection *c);
    bool budget_allows_read(Connection *c, size_t *max_read);
    void resume_starved();

    void arm_check();
    void check_timeouts();

    Config *cfg_;
    Channels *ch_;
    Log *log_;
    Loop *loop_;
    std::vector<std::unique_ptr<Port>> *ports_;
    ConnStats *st_;
    int listen_fd_;
    FnHandler listen_handler_;
    FrameDecoder decoder_;
    int (*select_worker_)(asyncd_conn_t, const void *, size_t, int) = nullptr;

    std::vector<Connection *> slots_;
    std::deque<uint32_t> free_slots_;  // oldest first: a slot's peer stays findable longest
    std::vector<Connection *> dirty_;
    std::vector<Connection *> reap_;
    std::unique_ptr<uint8_t[]> scratch_;
    Sampler timing_sampler_;  // which packets' callbacks the workers time
    size_t live_ = 0;
    uint32_t next_worker_ = 0;
    int max_conns_ = 0;    // cfg_->max_conns, or less if the fd limit says so
    int own_fds_ = 0;      // fds conn needs besides its clients
    int reserve_fd_ = -1;  // given up to accept-and-close when fds run out
    bool accept_paused_ = false;
    bool accepting_ = true;  // the listen socket is watched
    bool quiescing_ = false;
    bool input_stopped_ = false;

    // Timeouts (idle_timeout, pkg_timeout, out_buf_soft_seconds) are looked at by a
    // periodic timer, only while some connection could trip one.
    uint64_t check_every_ms_ = 0;  // 0: no timeout is on
    uint64_t check_timer_ = 0;     // 0: not running

    // input_budget: bytes read and not yet handed to a worker, over all connections, and how
    // many connections hold some; the ids of the connections not read meanwhile.
    size_t input_pending_ = 0;
    size_t input_holders_ = 0;
    std::vector<uint64_t> starved_;

    // At most this many lines a second of each kind.
    LogLimit refuse_log_{1};
    LogLimit fd_log_{1};
    LogLimit close_log_{10};
    LogLimit out_log_{10};
    LogLimit budget_log_{1};
};

}  // namespace asyncd::conn
