// One link to another node: its state (CLUSTER.md's table), the handshake, heartbeats and
// the frames both ways. The link owns its socket; its owner (conn's cluster table) feeds
// it readiness and time, and hears of what happens through LinkHost. Apart from the socket
// calls it is pure: tests drive it over a socketpair with their own clock.
//
// States and their timers: Connecting (connect_timeout), Handshaking (handshake_timeout),
// Up (a PING after hb_interval without sending; dead after hb_timeout without hearing
// anything), Draining (a grace of two hb_timeouts), Backoff (100 ms doubling to 10 s, with
// jitter; back to 100 ms after a link was up for a minute). Idle and Down have none.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "cluster/cluster_config.h"
#include "cluster/frames.h"
#include "cluster/wire.h"
#include "core/backoff.h"

namespace asyncd::cluster {

enum class LinkState { kIdle, kConnecting, kHandshaking, kUp, kDraining, kBackoff, kDown };
const char *link_state_name(LinkState s);

class Link;

class LinkHost {
  public:
    virtual ~LinkHost() = default;
    virtual uint64_t now_ms() = 0;
    virtual uint64_t now_us() { return now_ms() * 1000; }
    virtual void random_bytes(void *p, size_t n) = 0;
    // Up: the handshake passed (peer's HELLO in link.peer()).
    virtual void link_up(Link &link) = 0;
    // A whole CALL, SEND or REPLY from the peer.
    virtual void link_message(Link &link, const Message &m) = 0;
    // The link failed or closed: what was written and not answered is lost (LINK_LOST);
    // `why` is the one line the owner logs.
    virtual void link_lost(Link &link, const std::string &why) = 0;
    // The peer sent GOAWAY: no new calls on this link.
    virtual void link_goaway(Link &link) = 0;
    // Responder: the peer's HELLO passed the rules; "" lets it link, else why not (the
    // owner's own reasons: a simultaneous connect that this node's link wins).
    virtual std::string admit(Link &, const Hello &) { return std::string(); }
};

struct LinkSelf {
    std::string name;
    uint16_t workers = 1;
    uint64_t incarnation = 0;
};

class Link {
  public:
    // `node` is the peer's name for an outgoing link, empty for an accepted one until its
    // HELLO names it.
    Link(LinkHost *host, const ClusterConfig *cfg, const LinkSelf *self, std::string node);
    ~Link();
    Link(const Link &) = delete;
    Link &operator=(const Link &) = delete;

    // Starts a non-blocking connect to the node's address (Connecting), or takes an accepted
    // socket (Handshaking, as the responder).
    void connect();
    void accept(int fd) { adopt(fd, false); }
    // A socket already connected to the node, as the initiator (Handshaking).
    void connected(int fd) { adopt(fd, true); }
    // The owner's calls: readiness of fd(), and time (at least by deadline_ms()).
    void on_readable();
    void on_writable();
    void tick();

    // Queues one encoded frame (or several) and writes. Only while Up or Draining; false
    // otherwise.
    bool send(const std::string &frames);
    // The same without writing: the owner gathers a turn's frames and calls flush() once,
    // one write for many calls.
    bool queue(std::string_view frames);
    // The same, written by write(std::string *out) straight into the output buffer.
    template <class Write>
    bool queue_with(Write &&write) {
        if (state_ != LinkState::kUp && state_ != LinkState::kDraining) return false;
        write(&out_);
        return true;
    }
    void flush() { write_some(); }
    // A graceful stop: GOAWAY, then Draining until nothing is pending or the grace ends.
    // grace_ms: how long what is in flight may take (at least two heartbeat timeouts); the
    // peer is told, and waits as long.
    void goaway(uint64_t grace_ms = 0);
    // The owner's count of calls on this link still waiting for replies (Draining ends at 0).
    void set_pending(size_t n) { pending_ = n; }
    // The owner stops reading the socket for a while (its workers are behind): silence
    // then is ours, not the peer's, and does not count toward hb_timeout.
    void pause_reading(bool paused) {
        if (!paused) last_heard_ms_ = std::max(last_heard_ms_, host_->now_ms());
        paused_ = paused;
    }
    // The owner found the peer breaking a rule above the frames (a reply to a call it never
    // got): closed as a failure, with link_lost and the back-off, like one the link found.
    void reject(const std::string &why) { fail(why); }
    // Closes now (a removed node, a lost simultaneous connect); no link_lost.
    void close_quietly();
    // The file marks the node down / lifts that.
    void mark_down();
    void lift();

    LinkState state() const { return state_; }
    const ClusterConfig *config() const { return cfg_; }  // the table it was made with
    const std::string &node() const { return node_; }
    const Hello &peer() const { return peer_; }
    bool initiator() const { return initiator_; }
    int fd() const { return fd_; }
    bool wants_write() const { return out_off_ < out_.size() || state_ == LinkState::kConnecting; }
    uint64_t deadline_ms() const { return deadline_ms_; }  // 0: none
    uint64_t since_ms() const { return since_ms_; }        // in this state since
    int64_t rtt_us() const { return rtt_us_; }             // -1 until a PONG came
    size_t queued_bytes() const { return out_.size() - out_off_; }
    // After a failure: the circuit is open until a reconnect completes its handshake.
    bool failed_since_up() const { return failed_; }

  private:
    void adopt(int fd, bool initiator);
    void set_state(LinkState s, uint64_t timer_ms);
    void fail(const std::string &why);
    void close_fd();
    void start_handshake();
    void read_some();
    void write_some();
    void on_frame(const Message &m);
    void on_hello(FrameType type, const Message &m);
    void became_up();
    void send_control(FrameType type, uint64_t session, const std::string &body);
    std::string hello_frame(FrameType type, bool with_mac);

    LinkHost *host_;
    const ClusterConfig *cfg_;
    const LinkSelf *self_;
    std::string node_;
    LinkState state_ = LinkState::kIdle;
    int fd_ = -1;
    bool initiator_ = false;
    bool failed_ = false;
    uint64_t deadline_ms_ = 0, since_ms_ = 0, up_since_ms_ = 0, grace_ms_ = 0;
    uint64_t last_sent_ms_ = 0, last_heard_ms_ = 0;
    uint64_t ping_seq_ = 0;
    uint64_t ping_sent_us_ = 0;
    int64_t rtt_us_ = -1;
    size_t pending_ = 0;
    bool paused_ = false;
    Backoff backoff_{10000};
    Hello mine_, peer_;
    bool peer_hello_seen_ = false;
    bool await_proof_ = false;  // responder: the initiator's HELLO_ACK with its proof is due
    std::string out_;
    size_t out_off_ = 0;
    FrameReader in_;
};

}  // namespace asyncd::cluster
