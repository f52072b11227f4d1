#include "cluster/link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/handshake.h"

namespace asyncd::cluster {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

uint64_t be64(const std::string &s) {
    uint64_t v = 0;
    for (size_t i = 0; i < 8 && i < s.size(); i++)
        v = v << 8 | uint8_t(s[i]);
    return v;
}

std::string be64_text(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 7; i >= 0; i--, v >>= 8)
        s[size_t(i)] = char(v & 0xff);
    return s;
}

}  // namespace

const char *link_state_name(LinkState s) {
    switch (s) {
        case LinkState::kIdle:
            return "idle";
        case LinkState::kConnecting:
            return "connecting";
        case LinkState::kHandshaking:
            return "handshaking";
        case LinkState::kUp:
            return "up";
        case LinkState::kDraining:
            return "draining";
        case LinkState::kBackoff:
            return "backoff";
        case LinkState::kDown:
            return "down";
    }
    return "?";
}

Link::Link(LinkHost *host, const ClusterConfig *cfg, const LinkSelf *self, std::string node)
    : host_(host),
      cfg_(cfg),
      self_(self),
      node_(std::move(node)),
      in_(cfg->max_frame, cfg->max_message, 2 * cfg->max_message) {
    since_ms_ = host_->now_ms();
}

Link::~Link() {
    close_fd();
}

void Link::set_state(LinkState s, uint64_t timer_ms) {
    state_ = s;
    since_ms_ = host_->now_ms();
    deadline_ms_ = timer_ms;
}

void Link::close_fd() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    out_.clear();
    out_off_ = 0;
    // in_ is reset when the next connection starts: a message handed to the host may still
    // point into it while the host's callback closes the link.
    peer_hello_seen_ = false;
    await_proof_ = false;
}

void Link::fail(const std::string &why) {
    if (state_ == LinkState::kDown) return;
    bool was_up = state_ == LinkState::kUp || state_ == LinkState::kDraining;
    close_fd();
    failed_ = true;
    uint64_t now = host_->now_ms();
    uint64_t delay = backoff_.next_delay(was_up ? up_since_ms_ : now, now);
    uint16_t r = 0;
    host_->random_bytes(&r, sizeof r);
    delay = delay / 2 + (delay / 2) * r / 65535;  // jitter: half to all of the step
    set_state(LinkState::kBackoff, now + (delay ? delay : 1));
    host_->link_lost(*this, why);
}

void Link::connect() {
    if (state_ != LinkState::kIdle && state_ != LinkState::kBackoff) return;
    initiator_ = true;  // before any fail(): what fails here is our own connect
    const NodeEntry *n = cfg_->find(node_);
    if (!n || n->down || n->host.empty()) {
        fail("no address for node " + node_);
        return;
    }
    sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    auto *v4 = reinterpret_cast<sockaddr_in *>(&ss);
    auto *v6 = reinterpret_cast<sockaddr_in6 *>(&ss);
    if (inet_pton(AF_INET, n->host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(n->port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, n->host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(n->port);
        len = sizeof *v6;
    } else {
        fail("bad address " + n->host);
        return;
    }
    fd_ = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        fail(std::string("socket: ") + strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<sockaddr *>(&ss), len) == 0) {
        start_handshake();
        return;
    }
    if (errno != EINPROGRESS) {
        fail("connect to " + n->host + ":" + std::to_string(n->port) + ": " + strerror(errno));
        return;
    }
    set_state(LinkState::kConnecting, host_->now_ms() + cfg_->connect_timeout_ms);
}

// A connected socket, ours (initiator) or accepted: the handshake starts on it.
void Link::adopt(int fd, bool initiator) {
    close_fd();
    fd_ = fd;
    initiator_ = initiator;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    start_handshake();
}

std::string Link::hello_frame(FrameType type, bool with_mac) {
    Hello h = mine_;
    h.has_mac = with_mac;
    if (with_mac) {
        if (initiator_) {
            hello_proof(cfg_->secret, 'I', mine_, peer_, h.mac);
        } else {
            hello_proof(cfg_->secret, 'R', peer_, mine_, h.mac);
        }
    }
    return encode_hello(type, h);
}

void Link::start_handshake() {
    in_ = FrameReader(cfg_->max_frame, cfg_->max_message, 2 * cfg_->max_message);
    in_.set_control_only(true);
    mine_ = Hello();
    mine_.workers = self_->workers;
    mine_.max_frame = uint32_t(cfg_->max_frame);
    mine_.max_message = uint32_t(cfg_->max_message);
    mine_.incarnation = self_->incarnation;
    mine_.node = self_->name;
    host_->random_bytes(mine_.nonce, sizeof mine_.nonce);
    uint64_t now = host_->now_ms();
    last_heard_ms_ = last_sent_ms_ = now;
    set_state(LinkState::kHandshaking, now + cfg_->handshake_timeout_ms);
    if (initiator_) {
        out_ += hello_frame(FrameType::kHello, false);
        write_some();
    }
}

bool Link::queue(std::string_view frames) {
    if (state_ != LinkState::kUp && state_ != LinkState::kDraining) return false;
    out_.append(frames);
    return true;
}

bool Link::send(const std::string &frames) {
    if (state_ != LinkState::kUp && state_ != LinkState::kDraining) return false;
    out_ += frames;
    write_some();
    return true;
}

void Link::send_control(FrameType type, uint64_t session, const std::string &body) {
    FrameHeader h;
    h.type = type;
    h.stream = kStreamConn;
    h.session = session;
    out_ += encode_frame(h, {}, body);
    write_some();
}

void Link::write_some() {
    while (fd_ >= 0 && out_off_ < out_.size()) {
        ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            out_off_ += size_t(n);
            last_sent_ms_ = host_->now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        fail(std::string("write: ") + strerror(errno));
        return;
    }
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    } else if (out_off_ >= (size_t(1) << 20) && out_off_ >= out_.size() / 2) {
        out_.erase(0, out_off_);  // a peer that reads slowly: what it took goes back
        out_off_ = 0;
    }
}

void Link::on_writable() {
    if (state_ == LinkState::kConnecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err == EINPROGRESS || err == EALREADY) return;
        if (err) {
            fail(std::string("connect: ") + strerror(err));
            return;
        }
        start_handshake();
        return;
    }
    write_some();
}

void Link::on_readable() {
    if (state_ == LinkState::kConnecting) {
        on_writable();
        return;
    }
    read_some();
}

void Link::read_some() {
    for (int rounds = 0; fd_ >= 0 && rounds < 16; rounds++) {
        char *p = in_.room(kReadChunk);
        ssize_t n = recv(fd_, p, kReadChunk, MSG_DONTWAIT);
        if (n == 0) {
            fail("closed by the peer");
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            fail(std::string("read: ") + strerror(errno));
            return;
        }
        in_.wrote(size_t(n));
        last_heard_ms_ = host_->now_ms();
        Message m;
        const char *why = "";
        for (;;) {
            FrameReader::Next x = in_.next(&m, &why);
            if (x == FrameReader::Next::kNeedMore) break;
            if (x == FrameReader::Next::kBad) {
                fail(std::string("protocol error from the peer: ") + why);
                return;
            }
            if (x == FrameReader::Next::kControl) {
                on_frame(m);
            } else if (state_ == LinkState::kUp || state_ == LinkState::kDraining) {
                host_->link_message(*this, m);
            } else {
                fail(std::string("a ") + frame_type_name(m.h.type) + " before the handshake");
            }
            if (fd_ < 0) return;
        }
        if (size_t(n) < kReadChunk) break;
    }
}

void Link::on_hello(FrameType type, const Message &m) {
    Hello h;
    const char *why = "";
    if (!decode_hello(reinterpret_cast<const uint8_t *>(m.payload.data()), m.payload.size(), &h,
                      &why)) {
        fail(why);
        return;
    }
    bool secret = !cfg_->secret.empty();
    if (await_proof_) {  // responder: the initiator's proof
        if (type != FrameType::kHelloAck || !proof_ok(cfg_->secret, 'I', peer_, mine_, h)) {
            fail("node " + peer_.node + " failed to prove the shared secret");
            return;
        }
        await_proof_ = false;
        became_up();
        return;
    }
    if (peer_hello_seen_) {
        fail("a second hello");
        return;
    }
    if (initiator_ != (type == FrameType::kHelloAck)) {
        fail(initiator_ ? "a HELLO where a HELLO_ACK was due" : "a HELLO_ACK before any HELLO");
        return;
    }
    std::string refuse = check_hello(h, *cfg_, self_->name, initiator_ ? node_ : "");
    if (!refuse.empty()) {
        fail(refuse);
        return;
    }
    peer_ = h;
    peer_hello_seen_ = true;
    if (!initiator_) {
        std::string no = host_->admit(*this, h);
        if (!no.empty()) {
            fail(no);
            return;
        }
        node_ = h.node;
        out_ += hello_frame(FrameType::kHelloAck, secret);
        write_some();
        if (fd_ < 0) return;
        if (secret) {
            await_proof_ = true;
            return;
        }
        became_up();
        return;
    }
    if (secret && !proof_ok(cfg_->secret, 'R', mine_, peer_, h)) {
        fail(h.has_mac ? "node " + h.node + " failed to prove the shared secret"
                       : "node " + h.node + " has no secret and this node requires one");
        return;
    }
    if (!secret && h.has_mac) {
        fail("node " + h.node + " proves a secret this node does not have");
        return;
    }
    if (secret) {
        out_ += hello_frame(FrameType::kHelloAck, true);
        write_some();
        if (fd_ < 0) return;
    }
    became_up();
}

void Link::on_frame(const Message &m) {
    FrameType t = m.h.type;
    if (t == FrameType::kHello || t == FrameType::kHelloAck) {
        if (state_ != LinkState::kHandshaking) {
            fail("a hello on a link that is up");
            return;
        }
        on_hello(t, m);
        return;
    }
    if (state_ != LinkState::kUp && state_ != LinkState::kDraining) {
        fail(std::string("a ") + frame_type_name(t) + " before the handshake");
        return;
    }
    switch (t) {
        case FrameType::kPing:
            send_control(FrameType::kPong, m.h.session, std::string(m.payload));
            break;
        case FrameType::kPong:
            if (m.h.session == ping_seq_ && ping_sent_us_) {
                uint64_t sent = be64(std::string(m.payload));
                if (sent == ping_sent_us_) {
                    rtt_us_ = int64_t(host_->now_us() - sent);
                    if (rtt_us_ < 0) rtt_us_ = 0;
                }
                ping_sent_us_ = 0;
            }
            break;
        case FrameType::kGoaway:
            if (state_ == LinkState::kUp) {
                // The peer says how long it will answer what is in flight (its session
                // field; at most ten minutes): at least two heartbeat timeouts.
                uint64_t grace = std::max<uint64_t>(2 * cfg_->hb_timeout_ms,
                                                    std::min<uint64_t>(m.h.session, 600000));
                grace_ms_ = host_->now_ms() + grace;
                // Ticked as when up (heartbeats, and the end once nothing is pending).
                set_state(LinkState::kDraining,
                          std::min(grace_ms_, host_->now_ms() + cfg_->hb_interval_ms));
            }
            host_->link_goaway(*this);
            break;
        default:
            fail(std::string("unexpected ") + frame_type_name(t));
    }
}

void Link::became_up() {
    in_.set_control_only(false);
    uint64_t now = host_->now_ms();
    failed_ = false;
    up_since_ms_ = now;
    last_heard_ms_ = now;
    set_state(LinkState::kUp, now + cfg_->hb_interval_ms);
    host_->link_up(*this);
}

void Link::goaway(uint64_t grace_ms) {
    if (state_ != LinkState::kUp) return;
    uint64_t grace = std::max<uint64_t>(grace_ms, 2 * cfg_->hb_timeout_ms);
    send_control(FrameType::kGoaway, grace, "");
    if (fd_ < 0) return;
    grace_ms_ = host_->now_ms() + grace;
    set_state(LinkState::kDraining, std::min(grace_ms_, host_->now_ms() + cfg_->hb_interval_ms));
}

void Link::close_quietly() {
    close_fd();
    set_state(state_ == LinkState::kDown ? LinkState::kDown : LinkState::kIdle, 0);
}

void Link::mark_down() {
    close_fd();
    set_state(LinkState::kDown, 0);
}

void Link::lift() {
    if (state_ != LinkState::kDown) return;
    failed_ = false;
    set_state(LinkState::kIdle, 0);
}

void Link::tick() {
    uint64_t now = host_->now_ms();
    switch (state_) {
        case LinkState::kIdle:
        case LinkState::kDown:
            return;
        case LinkState::kConnecting:
            if (now >= deadline_ms_) {
                fail("connect timed out after " + std::to_string(cfg_->connect_timeout_ms) + " ms");
            }
            return;
        case LinkState::kHandshaking:
            if (now >= deadline_ms_) {
                fail("handshake timed out after " + std::to_string(cfg_->handshake_timeout_ms) +
                     " ms");
            }
            return;
        case LinkState::kBackoff:
            if (now >= deadline_ms_) {
                set_state(LinkState::kIdle, 0);
                // The circuit closes only by a reconnect, never by a call. An accepted link
                // has no address of its own: its owner drops it.
                if (initiator_) connect();
            }
            return;
        case LinkState::kDraining:
            if (pending_ == 0 && queued_bytes() == 0) {
                close_fd();
                set_state(LinkState::kIdle, 0);
                host_->link_lost(*this, "drained");
                return;
            }
            if (now >= grace_ms_) {
                fail("drain grace ended with " + std::to_string(pending_) + " calls pending");
                return;
            }
            break;
        case LinkState::kUp:
            break;
    }
    // Up or Draining: heartbeats.
    if (paused_) last_heard_ms_ = now;
    if (now - last_heard_ms_ >= cfg_->hb_timeout_ms) {
        fail("no word from the peer for " + std::to_string(now - last_heard_ms_) +
             " ms (hb_timeout " + std::to_string(cfg_->hb_timeout_ms) + " ms)");
        return;
    }
    // Frames still waiting for the socket are sending already: a PING would only queue
    // behind them.
    bool writing = queued_bytes() > 0;
    if (!writing && now - last_sent_ms_ >= cfg_->hb_interval_ms) {
        ping_seq_++;
        ping_sent_us_ = host_->now_us();
        send_control(FrameType::kPing, ping_seq_, be64_text(ping_sent_us_));
        if (fd_ < 0) return;
    }
    uint64_t next = last_heard_ms_ + cfg_->hb_timeout_ms;
    if (!writing) next = std::min(next, last_sent_ms_ + cfg_->hb_interval_ms);
    if (state_ == LinkState::kDraining) next = std::min(next, grace_ms_);
    deadline_ms_ = std::max(next, now + 1);
}

}  // namespace asyncd::cluster
