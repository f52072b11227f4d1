// What asyncd promises about delivery when workers die, hang, restart or refuse to start,
// tested on the real binary with a plugin that dies on cue (test/plugins/dies.c):
//  - a reply a worker wrote before it died reaches its client whole and once, never as a
//    corrupt ring record, and a packet two workers died on is quarantined with nothing of
//    what they wrote for it sent;
//  - a stop answers the packets in a dead worker's ring (one waiting out its restart
//    back-off, or one restarting for a reload) before it lets the workers go;
//  - idle_timeout counts only a client's silence, not the time conn itself stopped reading
//    it because its worker's ring was full;
//  - new connections go only to workers that serve: not to one whose init_service refused,
//    and not to a slot whose new plugin cannot start (the reload is sent back instead).
#include <errno.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"
#include "test/reliability/seqload.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string replaced(std::string text, const std::string &from, const std::string &to) {
    size_t at = text.find(from);
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
}

// Bytes as C-escaped text, so that a failure shows exactly what came.
std::string printable(const std::string &bytes) {
    std::string out = "\"";
    for (unsigned char ch : bytes) {
        if (ch >= 32 && ch < 127 && ch != '"' && ch != '\\') {
            out += char(ch);
        } else {
            char esc[8];
            snprintf(esc, sizeof esc, "\\x%02x", ch);
            out += esc;
        }
    }
    return out + "\" (" + std::to_string(bytes.size()) + " bytes)";
}

// Reads until `want` bytes have come, the server closes, or the deadline passes; returns
// what came (possibly more than `want`, if it came in the same read).
std::string read_up_to(const Client &c, size_t want, milliseconds deadline) {
    auto end = Clock::now() + deadline;
    std::string got;
    char buf[4096];
    while (got.size() < want) {
        struct pollfd p = {c.fd(), POLLIN, 0};
        int r = poll(&p, 1, ms_left(end));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        ssize_t n = recv(c.fd(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got.append(buf, size_t(n));
    }
    return got;
}

// A loopback port that was free a moment ago, for a server that may never log the one it
// got (it logs its port only in its "asyncd ready" line).
uint16_t free_port() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) close(fd);
    return port;
}

// Sends one payload on each client, then collects every answer against one deadline, so
// that clients left unanswered cost the test one deadline, not one each.
std::vector<std::string> ask_all(std::vector<Client> &clients, const std::string &payload,
                                 milliseconds deadline) {
    std::vector<std::string> answers(clients.size(), "<no answer>");
    for (auto &c : clients)
        EXPECT_TRUE(c.send_frame(payload));
    auto end = Clock::now() + deadline;
    for (size_t i = 0; i < clients.size(); i++) {
        std::string got;
        if (clients[i].recv_frame(&got, milliseconds(ms_left(end)))) answers[i] = got;
    }
    return answers;
}

class Delivery : public ServerTest {
  protected:
    // frame("A") and then `magic` in one write, so that the worker takes both in one batch
    // and the reply to the second is written right behind the first's. Returns everything
    // the client gets until the server closes the connection.
    std::string after_reply_then(const std::string &magic) {
        Client c;
        EXPECT_TRUE(c.connect(server_->port()));
        std::string both = frame("A") + frame(magic);
        EXPECT_TRUE(c.send_all(both.data(), both.size()));
        std::string got;
        EXPECT_TRUE(c.read_to_close(&got, seconds(8))) << "not closed; so far " << printable(got);
        return got;
    }

    // A reload to a new plugin (another copy, so that it counts as changed) whose
    // init_service never succeeds (`setting`): the reload is sent back, and every client,
    // old and new, is served by the old plugin.
    void reload_is_sent_back(const std::string &setting) {
        Server scratch("");  // lends its folder to the two copies of the plugin
        std::string a = scratch.dir() + "/a.so", b = scratch.dir() + "/b.so";
        copy_file(plugin_path("dies.so"), a);
        copy_file(plugin_path("dies.so"), b);
        start("workers 2\nplugin " + a + "\n");
        Client old;
        ASSERT_TRUE(old.connect(server_->port()));
        ASSERT_TRUE(ends_with(old.call("WHERE"), "/a.so"));
        spit(server_->config_path(), replaced(read_text(server_->config_path()), a, b) + setting);
        ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
        ASSERT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
            << server_->log();
        std::vector<Client> clients(8);
        for (auto &c : clients)
            ASSERT_TRUE(c.connect(server_->port()));
        std::vector<std::string> where = ask_all(clients, "WHERE", seconds(5));
        for (size_t i = 0; i < where.size(); i++)
            EXPECT_TRUE(ends_with(where[i], "/a.so")) << "client " << i << ": " << where[i];
        EXPECT_TRUE(ends_with(old.call("WHERE"), "/a.so"));
        EXPECT_EQ(server_->stop(), 0);
    }
};

// A worker that dies after appending a reply to the one before it in the same batch: its
// replacement publishes the reply its predecessor had finished ("A") and answers the packet
// it died on again, once; the client sees exactly those two answers and the connection goes
// on. Never the header of a ring record as data, never an ALERT.
TEST_F(Delivery, ReplyAppendedBeforeACrashIsNotCorrupted) {
    Server scratch("");
    std::string marker = scratch.dir() + "/crashed-once";
    start(base("dies.so", 1, "plugin.marker " + marker + "\n"));
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string both = frame("A") + frame("REPLY+CRASHONCE");
    ASSERT_TRUE(c.send_all(both.data(), both.size()));
    std::string got = read_up_to(c, both.size(), seconds(10));
    EXPECT_EQ(printable(got), printable(both));
    EXPECT_EQ(access(marker.c_str(), F_OK), 0) << "the worker did crash on it";
    EXPECT_EQ(server_->count_log("killed by signal 6"), 1) << server_->log();
    EXPECT_EQ(c.call("B"), "B") << "the connection serves on, nothing stray before B's answer";
}

// The same with a packet that kills every worker that takes it: after two deaths it is
// quarantined and its connection closed. What the dead workers wrote for it is not sent;
// the answer to "A", finished before, is, exactly.
TEST_F(Delivery, ReplyAppendedBeforeRepeatedCrashesIsNotCorrupted) {
    start(base("dies.so", 1));
    std::string got = after_reply_then("REPLY+CRASH");
    EXPECT_EQ(printable(got), printable(frame("A")));
    EXPECT_TRUE(server_->wait_log("quarantined", 1, seconds(5))) << server_->log();
    Client next;
    ASSERT_TRUE(next.connect(server_->port()));
    EXPECT_EQ(next.call("B"), "B");
}

// And with a packet that hangs every worker that takes it until handler_timeout kills it.
TEST_F(Delivery, ReplyAppendedBeforeRepeatedHangsIsNotCorrupted) {
    start(base("dies.so", 1, "handler_timeout 0.5\n"));
    std::string got = after_reply_then("REPLY+HANG");
    EXPECT_EQ(printable(got), printable(frame("A")));
    EXPECT_TRUE(server_->wait_log("quarantined", 1, seconds(5))) << server_->log();
    EXPECT_EQ(server_->count_log("stuck in proc_pkg_cli"), 2) << server_->log();
    Client next;
    ASSERT_TRUE(next.connect(server_->port()));
    EXPECT_EQ(next.call("B"), "B");
}

// A stop while a dead worker waits out its restart back-off: the packets conn had already
// put into its ring are accepted, so the stop answers them (it does not let the slot stay
// dead and drop them) before it closes the connection.
TEST_F(Delivery, StopAnswersPacketsInADeadWorkersRing) {
    start(base("dies.so", 1, "listen 127.0.0.1:0\nadmin_listen 127.0.0.1:0\n"));
    uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_EQ(c.call("hello"), "hello");
    // Each death soon after a start doubles the back-off: 100, 200, 400, 800, 1600 ms.
    for (int k = 1;; k++) {
        ASSERT_LE(k, 8) << "the back-off does not grow: " << server_->log();
        pid_t pid = 0;
        ASSERT_TRUE(eventually([&] { return (pid = server_->child("asyncd-work0")) != 0; }))
            << server_->log();
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        std::string line = "restart #" + std::to_string(k) + " in ";
        ASSERT_TRUE(server_->wait_log(line)) << server_->log();
        std::vector<uint64_t> delay = numbers_after(server_->log(), line);
        ASSERT_EQ(delay.size(), 1u);
        if (delay[0] >= 1600) break;
        ASSERT_TRUE(eventually([&] {
            pid_t now = server_->child("asyncd-work0");
            return now != 0 && now != pid;
        })) << server_->log();
    }
    // During the back-off: conn takes the packets into the dead worker's ring.
    long long before = metric(admin, "asyncd_packets_in_total");
    ASSERT_GE(before, 0);
    std::string sent;
    for (int i = 0; i < 10; i++)
        sent += frame("p" + std::to_string(i));
    ASSERT_TRUE(c.send_all(sent.data(), sent.size()));
    ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_packets_in_total") >= before + 10; },
                           seconds(5)))
        << "conn did not take the packets";
    EXPECT_EQ(server_->stop(seconds(15)), 0) << server_->log();
    std::string got;
    EXPECT_TRUE(c.read_to_close(&got, seconds(5)));
    std::vector<std::string> answers = frames_in(got);
    EXPECT_EQ(answers.size(), 10u) << "answered before the close: " << printable(got) << "\n"
                                   << server_->log();
    for (size_t i = 0; i < answers.size(); i++)
        EXPECT_EQ(answers[i], "p" + std::to_string(i));
}

// A reload with a changed plugin and a stop right behind it, under load: a worker that was
// restarting for the reload when the stop came still has packets in its ring, and they were
// accepted. Every packet conn put into a ring reaches the plugin: the plugin's event log
// has at least as many distinct packets as conn's exit line counts. Whether a packet falls
// into the window depends on how the signals meet the batches, so the cycle (about 60 ms)
// runs many times.
TEST_F(Delivery, ReloadThenStopDeliversEveryAcceptedPacket) {
    Server scratch("");  // the plugin copies and the plugin's event logs
    std::string original = read_text(plugin_path("testplug.so"));
    ASSERT_FALSE(original.empty());
    const int cycles = long_run() ? 200 : 20;  // make reliability runs the long version
    for (int k = 0; k < cycles; k++) {
        std::string plugin = scratch.dir() + "/plug" + std::to_string(k) + ".so";
        std::string events = scratch.dir() + "/events" + std::to_string(k) + ".log";
        spit(plugin, original);
        Server s("workers 2\nplugin " + plugin + "\nplugin.event_log " + events + "\n");
        std::string why;
        ASSERT_TRUE(s.start(&why)) << why;
        SeqLoad load(s.port(), 50, 4);
        ASSERT_TRUE(load.connect_all());
        load.start();
        ASSERT_TRUE(eventually([&] { return load.answered() > 1000; })) << s.log();
        // Rebuilt in place: a new inode, size and mtime (trailing bytes do not matter to
        // the loader).
        spit(plugin, original + std::string(size_t(k + 1) * 64, '\0'));
        ASSERT_EQ(kill(s.pid(), SIGHUP), 0);
        ASSERT_EQ(kill(s.pid(), SIGTERM), 0);
        EXPECT_EQ(s.wait_exit(seconds(15)), 0) << s.log();
        load.stop();
        std::vector<uint64_t> in = numbers_after(s.log(), "packets_in=");
        ASSERT_EQ(in.size(), 1u) << s.log();
        std::set<std::string> delivered;  // "CONN PAYLOAD-PREFIX": one per distinct packet
        std::istringstream lines(read_text(events));
        for (std::string line; std::getline(lines, line);) {
            if (line.rfind("pkg ", 0) == 0) delivered.insert(line.substr(4));
        }
        EXPECT_GE(delivered.size(), in[0])
            << "cycle " << k << ": " << in[0] - std::min<uint64_t>(in[0], delivered.size())
            << " packets accepted into a ring never reached the plugin\n"
            << s.log();
        for (const auto &line : s.unexpected_lines())
            ADD_FAILURE() << line;
        if (HasFailure()) break;
    }
}

// idle_timeout is for clients that send nothing. A client whose packets wait in conn because
// its worker's ring is full is not idle, however long conn leaves its socket unread: every
// packet it sends is answered and its connection stays open.
TEST_F(Delivery, IdleTimeoutSparesAConnectionConnStoppedReading) {
    // conn reads at most 64 KiB at a time and reads again only once all of it is in the
    // ring. At 50 ms a packet, the second 64 KiB of 1 KiB packets (the first fills the ring)
    // leaves the socket unread for about 3 s, past idle_timeout; the 140 take 7 s to answer.
    start(base("dies.so", 1, "ring_size 64K\nidle_timeout 2\nplugin.delay_us 50000\n"));
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    const int burst = 140, trickle = 14;
    auto packet = [](int i) {
        std::string p = "seq " + std::to_string(i) + " ";
        return p + std::string(1024 - p.size(), 'x');
    };
    std::atomic<int> sent{0};
    std::thread sender([&] {
        std::string first;
        for (int i = 0; i < burst; i++)
            first += frame(packet(i));
        if (!c.send_all(first.data(), first.size())) return;
        sent = burst;
        // Then one packet every 500 ms for as long as the burst takes: this client is never
        // silent for long.
        for (int i = burst; i < burst + trickle; i++) {
            std::this_thread::sleep_for(milliseconds(500));
            if (!c.send_frame(packet(i))) return;
            sent = i + 1;
        }
    });
    int answered = 0;
    std::string got;
    while (answered < burst + trickle && c.recv_frame(&got, seconds(5))) {
        if (got != packet(answered)) {
            ADD_FAILURE() << "answer " << answered << " is " << got.substr(0, 16);
            break;
        }
        answered++;
    }
    sender.join();
    EXPECT_EQ(sent.load(), burst + trickle);
    EXPECT_EQ(answered, sent.load()) << server_->log();
    EXPECT_EQ(server_->count_log("idle for"), 0) << server_->log();
    EXPECT_EQ(c.call("still"), "still") << "the connection stays open";
}

// A worker whose init_service refused is fatal and never serves: new connections go to the
// workers that do, and asyncd says it is ready once they are up.
TEST_F(Delivery, ConnectionsAvoidAWorkerThatRefusedToStart) {
    uint16_t port = free_port();
    ASSERT_NE(port, 0);
    Server s(base("dies.so", 2,
                  "listen 127.0.0.1:" + std::to_string(port) + "\nplugin.fail_init_worker 1\n"));
    s.spawn();  // worker 1 never becomes ready
    ASSERT_TRUE(s.wait_log("(fatal): not restarted")) << s.log();
    std::vector<Client> clients(8);
    for (auto &c : clients)
        ASSERT_TRUE(c.connect(port));
    std::vector<std::string> who = ask_all(clients, "WHO", seconds(5));
    for (size_t i = 0; i < who.size(); i++)
        EXPECT_EQ(who[i], "w0") << "client " << i;
    EXPECT_TRUE(s.wait_log("asyncd ready", 1, seconds(5))) << s.log();
    EXPECT_EQ(s.stop(), 0) << s.log();
    for (const auto &line : s.unexpected_lines())
        ADD_FAILURE() << line;
}

// A reload to a plugin whose init_service crashes: the slot it was tried on does not crash
// for ever with it; the reload goes back to the old config, and the slot serves again.
TEST_F(Delivery, ReloadToAPluginWhoseInitCrashesIsSentBack) {
    reload_is_sent_back("plugin.crash_init yes\n");
}

// The same with an init_service that exits (code 0) before the worker is ready.
TEST_F(Delivery, ReloadToAPluginWhoseInitExitsIsSentBack) {
    reload_is_sent_back("plugin.exit_init yes\n");
}

}  // namespace
}  // namespace asyncd::test
