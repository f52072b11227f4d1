// cluster/link: the link state machine over a socketpair with a fake clock: the handshake
// with and without a shared secret, refusals, the handshake timeout, heartbeats that keep a
// link and a silence that kills it, GOAWAY's drain, a refused connect and the back-off's
// reconnect.
#include "cluster/link.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace asyncd::cluster {
namespace {

struct FakeHost : LinkHost {
    uint64_t *clock;
    uint8_t seed;
    std::vector<std::string> events;
    std::vector<std::string> messages;
    FakeHost(uint64_t *c, uint8_t s) : clock(c), seed(s) {}
    uint64_t now_ms() override { return *clock; }
    uint64_t now_us() override { return *clock * 1000 + 250; }
    void random_bytes(void *p, size_t n) override {
        auto *b = static_cast<uint8_t *>(p);
        for (size_t i = 0; i < n; i++)
            b[i] = uint8_t(seed++ * 37 + 11);
    }
    void link_up(Link &l) override { events.push_back("up " + l.peer().node); }
    void link_message(Link &, const Message &m) override {
        messages.push_back(std::string(m.service) + ":" + std::string(m.payload));
    }
    void link_lost(Link &, const std::string &why) override { events.push_back("lost " + why); }
    void link_goaway(Link &) override { events.push_back("goaway"); }
};

ClusterConfig config(const std::string &self, const std::string &secret = "") {
    ClusterConfig c;
    std::string err;
    EXPECT_TRUE(
        parse_cluster("node game1 127.0.0.1:7101\nnode game2 127.0.0.1:7102\n"
                      "hb_interval 1s\nhb_timeout 3s\nhandshake_timeout 2s\n",
                      "cluster.conf", self, &c, &err))
        << err;
    c.secret = secret;
    return c;
}

struct Pair {
    uint64_t clock = 1000000;
    ClusterConfig ca, cb;
    LinkSelf sa{"game1", 2, 111}, sb{"game2", 3, 222};
    FakeHost ha{&clock, 1}, hb{&clock, 100};
    Link a, b;  // a connects to b
    Pair(const std::string &secret_a = "", const std::string &secret_b = "")
        : ca(config("game1", secret_a)),
          cb(config("game2", secret_b)),
          a(&ha, &ca, &sa, "game2"),
          b(&hb, &cb, &sb, "") {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        b.accept(sv[1]);
        a.connected(sv[0]);
    }
    // Lets both sides read until neither has anything more.
    void pump() {
        for (int i = 0; i < 20; i++) {
            if (a.fd() >= 0) a.on_readable();
            if (b.fd() >= 0) b.on_readable();
        }
    }
    void advance(uint64_t ms) {
        clock += ms;
        a.tick();
        b.tick();
    }
};

TEST(Link, HandshakeWithoutASecret) {
    Pair p;
    EXPECT_EQ(p.a.state(), LinkState::kHandshaking);
    p.pump();
    ASSERT_EQ(p.a.state(), LinkState::kUp);
    ASSERT_EQ(p.b.state(), LinkState::kUp);
    EXPECT_EQ(p.ha.events, std::vector<std::string>{"up game2"});
    EXPECT_EQ(p.hb.events, std::vector<std::string>{"up game1"});
    EXPECT_EQ(p.b.node(), "game1") << "an accepted link learns its node from the HELLO";
    EXPECT_EQ(p.a.peer().workers, 3);
    EXPECT_EQ(p.a.peer().incarnation, 222u);
    EXPECT_EQ(p.b.peer().incarnation, 111u);
    EXPECT_TRUE(p.a.initiator());
    EXPECT_FALSE(p.b.initiator());
}

TEST(Link, HandshakeWithTheSameSecret) {
    Pair p("a shared secret 123", "a shared secret 123");
    p.pump();
    EXPECT_EQ(p.a.state(), LinkState::kUp);
    EXPECT_EQ(p.b.state(), LinkState::kUp);
}

TEST(Link, AWrongOrMissingSecretIsRefused) {
    {
        Pair p("a shared secret 123", "another secret 456");
        p.pump();
        EXPECT_EQ(p.a.state(), LinkState::kBackoff);
        ASSERT_FALSE(p.ha.events.empty());
        EXPECT_EQ(p.ha.events[0], "lost node game2 failed to prove the shared secret");
        EXPECT_NE(p.b.state(), LinkState::kUp);
    }
    {
        Pair p("a shared secret 123", "");
        p.pump();
        ASSERT_FALSE(p.ha.events.empty());
        EXPECT_EQ(p.ha.events[0], "lost node game2 has no secret and this node requires one");
    }
    {
        Pair p("", "a shared secret 123");
        p.pump();
        ASSERT_FALSE(p.ha.events.empty());
        EXPECT_EQ(p.ha.events[0], "lost node game2 proves a secret this node does not have");
        EXPECT_NE(p.b.state(), LinkState::kUp) << "the responder never saw a proof";
    }
}

// A link this node accepted, with the other end of its socket in the test's hands.
struct Accepted {
    uint64_t clock = 5000;
    ClusterConfig c = config("game2");
    LinkSelf self{"game2", 1, 9};
    FakeHost h{&clock, 3};
    Link b{&h, &c, &self, ""};
    int peer = -1;
    Accepted() {
        int sv[2];
        EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        b.accept(sv[1]);
        peer = sv[0];
    }
    ~Accepted() { close(peer); }
    // The peer sends one raw frame.
    void say(FrameType type, uint8_t flags, uint64_t session, const std::string &service,
             const std::string &body) {
        FrameHeader fh;
        fh.type = type;
        fh.flags = flags;
        fh.session = session;
        std::string f = encode_frame(fh, service, body);
        EXPECT_EQ(write(peer, f.data(), f.size()), ssize_t(f.size()));
    }
};

TEST(Link, AHandshakeThatNeverCompletesTimesOut) {
    Accepted x;  // the other end says nothing
    EXPECT_EQ(x.b.deadline_ms(), 7000u);
    x.clock = 6999;
    x.b.tick();
    EXPECT_EQ(x.b.state(), LinkState::kHandshaking);
    x.clock = 7000;
    x.b.tick();
    EXPECT_EQ(x.b.state(), LinkState::kBackoff);
    EXPECT_EQ(x.h.events, std::vector<std::string>{"lost handshake timed out after 2000 ms"});
}

TEST(Link, FramesBeforeTheHandshakeAreRefused) {
    Accepted x;
    x.say(FrameType::kCall, 0, 1, "s", "x");
    x.b.on_readable();
    EXPECT_EQ(x.b.state(), LinkState::kBackoff);
    EXPECT_EQ(x.h.events,
              std::vector<std::string>{"lost protocol error from the peer: a CALL before the "
                                       "handshake"});
    // And garbage is a protocol error, never trusted.
    Accepted y;
    std::string junk(64, '\xff');
    ASSERT_EQ(write(y.peer, junk.data(), junk.size()), ssize_t(junk.size()));
    y.b.on_readable();
    EXPECT_EQ(y.b.state(), LinkState::kBackoff);
    EXPECT_EQ(y.h.events.back(), "lost protocol error from the peer: unknown frame type");
}

// A peer that has not proved who it is cannot make the link gather anything: a first part
// claiming megabytes is refused at once, not buffered.
TEST(Link, NoPartsAreGatheredBeforeTheHandshake) {
    Accepted x;
    x.say(FrameType::kSend, kFlagMore, 0, "s",
          std::string{char(0), char(0xf0), char(0), char(0)} + "abc");
    x.b.on_readable();
    EXPECT_EQ(x.b.state(), LinkState::kBackoff);
    EXPECT_EQ(x.h.events, std::vector<std::string>{
                              "lost protocol error from the peer: a SEND before the handshake"});
}

// An accepted link has no address of its own: when it fails, its back-off ends in Idle (its
// owner drops it), not in a connect to nowhere.
TEST(Link, AnAcceptedLinkThatFailedDoesNotReconnect) {
    Accepted x;
    x.clock += 2000;
    x.b.tick();
    ASSERT_EQ(x.b.state(), LinkState::kBackoff);
    x.clock = x.b.deadline_ms();
    x.b.tick();
    EXPECT_EQ(x.b.state(), LinkState::kIdle);
    EXPECT_EQ(x.h.events.size(), 1u) << x.h.events.back();
}

struct ClosingHost : FakeHost {
    Link *link = nullptr;
    std::string seen;
    using FakeHost::FakeHost;
    void link_message(Link &, const Message &m) override {
        link->close_quietly();  // the owner drops the link from inside the callback
        seen = std::string(m.service) + ":" + std::string(m.payload);
    }
};

TEST(Link, AMessageStaysReadableWhileItsCallbackClosesTheLink) {
    uint64_t clock = 1000;
    ClusterConfig ca = config("game1"), cb = config("game2");
    LinkSelf sa{"game1", 1, 1}, sb{"game2", 1, 2};
    FakeHost ha(&clock, 1);
    ClosingHost hb(&clock, 50);
    Link a(&ha, &ca, &sa, "game2"), b(&hb, &cb, &sb, "");
    hb.link = &b;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    b.accept(sv[1]);
    a.connected(sv[0]);
    for (int i = 0; i < 5; i++) {
        a.on_readable();
        b.on_readable();
    }
    ASSERT_EQ(b.state(), LinkState::kUp);
    FrameHeader h;
    h.type = FrameType::kSend;
    std::string frames;
    MessageWriter w(h, "svc", std::string(5000, 'p'), 1024);
    while (!w.done())
        w.next(&frames);
    ASSERT_TRUE(a.send(frames));
    b.on_readable();
    EXPECT_EQ(hb.seen, "svc:" + std::string(5000, 'p'));
    EXPECT_EQ(b.state(), LinkState::kIdle);
}

TEST(Link, HeartbeatsKeepALinkAndMeasureItsRtt) {
    Pair p;
    p.pump();
    ASSERT_EQ(p.a.state(), LinkState::kUp);
    for (int i = 0; i < 10; i++) {  // ten seconds, both sides answering
        p.advance(1000);
        p.pump();
    }
    EXPECT_EQ(p.a.state(), LinkState::kUp);
    EXPECT_EQ(p.b.state(), LinkState::kUp);
    EXPECT_GE(p.a.rtt_us(), 0) << "a PONG came back";
}

TEST(Link, ASilentPeerIsDeclaredDead) {
    Pair p;
    p.pump();
    ASSERT_EQ(p.a.state(), LinkState::kUp);
    // b stops reading (a hung peer): a pings and hears nothing.
    p.clock += 1000;
    p.a.tick();
    p.clock += 1999;
    p.a.tick();
    EXPECT_EQ(p.a.state(), LinkState::kUp);
    p.clock += 1;
    p.a.tick();
    EXPECT_EQ(p.a.state(), LinkState::kBackoff);
    ASSERT_EQ(p.ha.events.size(), 2u);
    EXPECT_EQ(p.ha.events[1], "lost no word from the peer for 3000 ms (hb_timeout 3000 ms)");
    EXPECT_TRUE(p.a.failed_since_up()) << "the circuit is open";
}

TEST(Link, MessagesFlowWhileUp) {
    Pair p;
    p.pump();
    FrameHeader h;
    h.type = FrameType::kSend;
    h.stream = 1;
    std::string frames;
    MessageWriter w(h, "svc", "hello there", 1024);
    while (!w.done())
        w.next(&frames);
    ASSERT_TRUE(p.a.send(frames));
    p.pump();
    EXPECT_EQ(p.hb.messages, std::vector<std::string>{"svc:hello there"});
}

TEST(Link, GoawayDrainsThenCloses) {
    Pair p;
    p.pump();
    p.a.set_pending(2);
    p.a.goaway();
    EXPECT_EQ(p.a.state(), LinkState::kDraining);
    p.pump();
    EXPECT_EQ(p.b.state(), LinkState::kDraining);
    EXPECT_EQ(p.hb.events.back(), "goaway");
    p.advance(10);
    EXPECT_EQ(p.a.state(), LinkState::kDraining) << "two calls still pending";
    p.a.set_pending(0);
    p.advance(10);
    EXPECT_EQ(p.a.state(), LinkState::kIdle);
    EXPECT_EQ(p.ha.events.back(), "lost drained");
    EXPECT_FALSE(p.a.failed_since_up()) << "a drain is not a failure";
}

TEST(Link, TheDrainGraceEnds) {
    Pair p;
    p.pump();
    p.a.set_pending(1);
    p.b.set_pending(1);  // each side waits for an answer
    p.a.goaway();
    for (int i = 0; i < 6; i++) {  // 2 x hb_timeout; the peer keeps answering pings
        p.advance(1000);
        p.pump();
    }
    EXPECT_EQ(p.a.state(), LinkState::kBackoff);
    EXPECT_EQ(p.ha.events.back(), "lost drain grace ended with 1 calls pending");
}

// A stopping node says how long it will answer: its peer waits that long, past two
// heartbeat timeouts, and a draining link is ticked like an up one (its deadline is the
// next heartbeat, not the end of the grace).
TEST(Link, AGoawayCarriesItsGraceAndTheDrainIsTicked) {
    Pair p;
    p.pump();
    p.a.set_pending(1);
    p.b.set_pending(1);
    p.a.goaway(20000);  // 20 s, against 2 x hb_timeout = 6 s
    p.pump();
    ASSERT_EQ(p.b.state(), LinkState::kDraining);
    EXPECT_LE(p.b.deadline_ms(), p.clock + 1000) << "ticked at the next heartbeat";
    for (int i = 0; i < 10; i++) {  // 10 s: past 6 s, within 20 s
        p.advance(1000);
        p.pump();
    }
    EXPECT_EQ(p.a.state(), LinkState::kDraining);
    EXPECT_EQ(p.b.state(), LinkState::kDraining) << "the peer waits the grace it was told";
    p.a.set_pending(0);
    p.b.set_pending(0);
    p.advance(1000);
    p.pump();
    EXPECT_EQ(p.a.state(), LinkState::kIdle) << "nothing pending: closed at the next tick";
    EXPECT_EQ(p.ha.events.back(), "lost drained");
}

TEST(Link, ARefusedConnectBacksOffAndTheTimerReconnects) {
    // A port with nothing listening: bind one, note it, close it.
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(s, reinterpret_cast<sockaddr *>(&sin), sizeof sin), 0);
    socklen_t len = sizeof sin;
    getsockname(s, reinterpret_cast<sockaddr *>(&sin), &len);
    int port = ntohs(sin.sin_port);
    close(s);
    ClusterConfig c;
    std::string err;
    ASSERT_TRUE(parse_cluster(
        "node game1 127.0.0.1:7101\nnode game2 127.0.0.1:" + std::to_string(port) + "\n",
        "cluster.conf", "game1", &c, &err))
        << err;
    uint64_t clock = 1000;
    FakeHost h(&clock, 5);
    LinkSelf self{"game1", 1, 1};
    Link a(&h, &c, &self, "game2");
    a.connect();
    // Loopback refuses at once or on the first readiness.
    for (int i = 0; i < 1000 && a.state() == LinkState::kConnecting; i++) {
        usleep(1000);
        a.on_writable();
    }
    ASSERT_EQ(a.state(), LinkState::kBackoff);
    ASSERT_EQ(h.events.size(), 1u);
    EXPECT_NE(h.events[0].find("Connection refused"), std::string::npos) << h.events[0];
    uint64_t first = a.deadline_ms() - clock;
    EXPECT_GE(first, 50u);
    EXPECT_LE(first, 100u) << "100 ms, jittered to half..all of it";
    clock = a.deadline_ms();
    a.tick();  // the back-off timer, not a call, reconnects
    for (int i = 0; i < 1000 && a.state() == LinkState::kConnecting; i++) {
        usleep(1000);
        a.on_writable();
    }
    ASSERT_EQ(a.state(), LinkState::kBackoff);
    EXPECT_EQ(h.events.size(), 2u);
    uint64_t second = a.deadline_ms() - clock;
    EXPECT_GE(second, 100u);
    EXPECT_LE(second, 200u) << "doubled";
}

TEST(Link, DownAndLifted) {
    Pair p;
    p.pump();
    p.a.mark_down();
    EXPECT_EQ(p.a.state(), LinkState::kDown);
    p.advance(100000);
    EXPECT_EQ(p.a.state(), LinkState::kDown) << "no timer while down";
    p.a.lift();
    EXPECT_EQ(p.a.state(), LinkState::kIdle);
}

}  // namespace
}  // namespace asyncd::cluster
