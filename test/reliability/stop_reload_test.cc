// What asyncd promises at a stop and at a reload when clients, signals and plugin files do
// not behave, held against the real binary with the test plugins (test/plugins/testplug.c,
// dies.c, lifecycle.c):
//  - idle_timeout never closes a connection during a stop (its answers would be dropped),
//    and an answer a client gets counts as activity: a client that sent a long pipeline in
//    one write and waits for the answers is not idle;
//  - a second stop signal kills every child and waits for them: it starts no worker to
//    answer what is left in a ring, and does not wait out shutdown_timeout;
//  - a client that never reads its answers does not turn a stop into an error: it is closed
//    a little before shutdown_timeout with one WARN line, and asyncd exits 0;
//  - conn runs a private copy of the plugin: a plugin file written over in place (as cp
//    does) and then reloaded does not crash conn when it lets the old plugin go;
//  - a reload is tried on a worker waiting out its restart back-off too, so a plugin that
//    cannot start on it sends the reload back instead of making that worker fatal later;
//  - a reload that changes only plugin.* values restarts the workers like a new plugin, and
//    is sent back when the first of them cannot start with them.
#include <errno.h>
#include <fcntl.h>
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

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Writes over an existing file in place, as `cp` does: the same inode, truncated and
// rewritten, so that every process that mapped it sees the new bytes.
bool overwrite_in_place(const std::string &path, const std::string &bytes) {
    int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return false;
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += size_t(n);
    }
    return close(fd) == 0 && done == bytes.size();
}

// Replaces the first `from` in the config file with `to`, then appends `tail`. False if the
// file has no `from`.
bool rewrite_config(const Server &s, const std::string &from, const std::string &to,
                    const std::string &tail = "") {
    std::string text = read_text(s.config_path());
    size_t at = text.find(from);
    if (at == std::string::npos) return false;
    text.replace(at, from.size(), to);
    return spit(s.config_path(), text + "\n" + tail);
}

// Config lines for an admin listener on a free port. They name `listen` too: the harness
// adds "listen 127.0.0.1:0" only to a config that does not have the word.
const char kAdmin[] = "listen 127.0.0.1:0\nadmin_listen 127.0.0.1:0\n";

// `n` packets "p0", "p1", ... as one buffer, to be sent in one write.
std::string pipeline(int n) {
    std::string out;
    for (int i = 0; i < n; i++)
        out += frame("p" + std::to_string(i));
    return out;
}

// A loopback client whose receive buffer is small, set before it connects (so that the
// window it offers is small from the start); it never reads.
class NonReader {
  public:
    ~NonReader() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool connect(uint16_t port, int rcvbuf) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) return false;
        if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) return false;
        struct sockaddr_in a = {};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return ::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    }
    bool send(const std::string &bytes) {
        return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == ssize_t(bytes.size());
    }

  private:
    int fd_ = -1;
};

class StopReload : public ServerTest {
  protected:
    // A folder for plugin copies, which lives as long as the test.
    std::string scratch_dir() { return scratch_.dir(); }

    // Connects clients (at most 8) until one is served by worker `index` ("w<index>" to
    // WHO), and returns it (null if none was).
    std::unique_ptr<Client> client_of_worker(int index) {
        for (int i = 0; i < 8; i++) {
            auto c = std::make_unique<Client>();
            if (!c->connect(server_->port())) return nullptr;
            if (c->call("WHO") == "w" + std::to_string(index)) return c;
        }
        return nullptr;
    }

    // Kills worker 0 with SIGKILL, again each time it is back, until its next restart is
    // at least `at_least_ms` away (each death soon after a start doubles the back-off: 100,
    // 200, 400, 800, 1600 ms). A fatal failure if that does not happen.
    void kill_into_backoff(uint64_t at_least_ms) {
        for (int k = 1;; k++) {
            ASSERT_LE(k, 8) << "the back-off does not grow: " << server_->log();
            pid_t pid = 0;
            ASSERT_TRUE(eventually([&] { return (pid = server_->child("asyncd-work0")) != 0; }))
                << server_->log();
            ASSERT_EQ(kill(pid, SIGKILL), 0);
            std::string line = "restart #" + std::to_string(k) + " in ";
            ASSERT_TRUE(server_->wait_log(line)) << server_->log();
            std::vector<uint64_t> delay = numbers_after(server_->log(), line);
            ASSERT_EQ(delay.size(), 1u) << server_->log();
            if (delay[0] >= at_least_ms) return;
            ASSERT_TRUE(eventually([&] {
                pid_t now = server_->child("asyncd-work0");
                return now != 0 && now != pid;
            })) << server_->log();
        }
    }

    Server scratch_{""};  // lends its folder to plugin copies
};

// A stop while a client's pipelined packets are still being answered: the client sent them
// all in one write more than idle_timeout before the last answer is ready, and sends
// nothing after; the last packet keeps its worker 2 s, during which no answer comes. The
// stop answers every one of them before it closes the connection: the connection is not
// closed as idle while conn takes no input.
TEST_F(StopReload, IdleTimeoutDoesNotCloseConnectionsDuringAStop) {
    const int n = 1000;  // at 2 ms each, 2 s of answers: past idle_timeout
    start(base("testplug.so", 1, "idle_timeout 1\nplugin.delay_us 2000\n" + std::string(kAdmin)));
    uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    long long before = metric(admin, "asyncd_packets_in_total");
    ASSERT_GE(before, 0);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string sent = pipeline(n - 1) + frame("SLOW 2000");
    ASSERT_TRUE(c.send_all(sent.data(), sent.size()));
    // conn has taken every packet into the ring: the stop must answer them all.
    ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_packets_in_total") >= before + n; },
                           seconds(5)))
        << "conn did not take the packets\n"
        << server_->log();
    ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
    std::string got;
    EXPECT_TRUE(c.read_to_close(&got, seconds(10)));
    std::vector<std::string> answers = frames_in(got);
    EXPECT_EQ(answers.size(), size_t(n)) << "answered before the close\n" << server_->log();
    for (size_t i = 0; i < answers.size(); i++) {
        std::string want = i + 1 < size_t(n) ? "p" + std::to_string(i) : "SLOW 2000";
        if (answers[i] != want) {
            ADD_FAILURE() << "answer " << i << " is " << answers[i];
            break;
        }
    }
    EXPECT_EQ(server_->wait_exit(seconds(10)), 0) << server_->log();
    EXPECT_EQ(server_->count_log("idle for"), 0) << server_->log();
}

// Without a stop: a client that sent a long pipeline in one write and reads its answers is
// not idle while they come, however long ago it last sent.
TEST_F(StopReload, AnswersCountAsActivityForIdleTimeout) {
    // At 2 ms each, 2 s of answers, twice idle_timeout. A worker publishes its answers a
    // batch (at most 256 packets, here about 0.5 s) at a time: the gaps between answers
    // stay well under idle_timeout.
    const int n = 1000;
    start(base("testplug.so", 1, "idle_timeout 1\nplugin.delay_us 2000\n"));
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string sent = pipeline(n);
    ASSERT_TRUE(c.send_all(sent.data(), sent.size()));
    auto end = Clock::now() + seconds(10);
    int answered = 0;
    std::string got;
    while (answered < n && c.recv_frame(&got, milliseconds(ms_left(end)))) {
        if (got != "p" + std::to_string(answered)) {
            ADD_FAILURE() << "answer " << answered << " is " << got;
            break;
        }
        answered++;
    }
    // The log is read the moment the last answer is in: a close for idleness that came
    // before it is the failure; one a second after it would be the setting doing its job.
    std::string log = server_->log();
    EXPECT_EQ(answered, n) << log;
    EXPECT_EQ(lines_with(log, "idle for").size(), 0u) << log;
    EXPECT_EQ(server_->stop(), 0) << server_->log();
}

// A second stop signal while the first stop waits for a worker with a long queue: asyncd
// kills every child and exits once they are gone, at once. It does not start a worker to
// answer what the killed one left in its ring, nor wait out shutdown_timeout.
TEST_F(StopReload, SecondStopSignalKillsAndStartsNoWorker) {
    const int n = 4000;  // at 3 ms each, 12 s of work for one worker: past shutdown_timeout
    start(
        base("testplug.so", 2, "shutdown_timeout 4\nplugin.delay_us 3000\n" + std::string(kAdmin)));
    uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    long long before = metric(admin, "asyncd_packets_in_total");
    ASSERT_GE(before, 0);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string sent = pipeline(n);
    ASSERT_TRUE(c.send_all(sent.data(), sent.size()));
    ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_packets_in_total") >= before + n; },
                           seconds(5)))
        << "conn did not take the packets\n"
        << server_->log();
    std::vector<pid_t> children = server_->children();
    ASSERT_GE(children.size(), 3u) << "conn and two workers";

    ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
    ASSERT_TRUE(server_->wait_log("signal 15: stopping", 1, seconds(5))) << server_->log();
    ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
    int code = server_->wait_exit(seconds(2));
    if (code < 0) server_->wait_exit(seconds(15));  // for the log of what it did instead
    std::string log = server_->log();
    EXPECT_GE(code, 0) << "still running 2 s after the second signal\n" << log;
    size_t second = log.find("second stop signal");
    ASSERT_NE(second, std::string::npos) << log;
    std::vector<std::string> started = lines_with(log.substr(second), "stop: starting worker");
    EXPECT_EQ(started.size(), 0u) << started.front() << "\n" << log;
    EXPECT_EQ(lines_with(log, "shutdown_timeout").size(), 0u) << log;
    for (pid_t p : children)
        EXPECT_TRUE(dead(p)) << "child " << p << " outlived asyncd";
    // The ALERT of a shutdown_timeout kill is one of the failures above, said once.
    server_->allow("shutdown_timeout");
}

// A client that asked for a flood of answers and reads none of them (a 4 KiB receive
// buffer) holds megabytes in conn's output at a stop. Near shutdown_timeout it is closed
// with one WARN, and the stop ends in order: exit 0 before the deadline, no ALERT, no
// shutdown_timeout kill.
TEST_F(StopReload, ClientThatDoesNotReadDoesNotFailTheStop) {
    start(base("lifecycle.so", 1, "shutdown_timeout 3\n" + std::string(kAdmin)));
    uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    NonReader c;
    ASSERT_TRUE(c.connect(server_->port(), 4096));
    ASSERT_TRUE(c.send(frame("FLOOD 600")));  // 600 answers of 60 KiB: 36 MB, under out_buf_hard
    ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_out_buf_peak_bytes") > (1 << 20); },
                           seconds(10)))
        << "conn holds no output for the client\n"
        << server_->log();
    EXPECT_EQ(server_->stop(seconds(4)), 0) << "exit 0 within 4 s\n" << server_->log();
    std::string log = server_->log();
    std::vector<std::string> warned = lines_with(log, "did not read");
    ASSERT_EQ(warned.size(), 1u) << log;
    EXPECT_NE(warned[0].find("[WARN]"), std::string::npos) << warned[0];
    EXPECT_EQ(lines_with(log, "shutdown_timeout (3 s) passed").size(), 0u) << log;
}

// A plugin file written over in place (the same inode: cp new.so plugin.so) and then
// reloaded: conn, which runs a private copy of the plugin, lets the old one go without
// crashing. (Workers that mapped the overwritten file may crash; that is documented, and
// not what this test holds asyncd to.)
TEST_F(StopReload, PluginWrittenOverInPlaceDoesNotCrashConnAtAReload) {
    std::string plugin = scratch_dir() + "/inplace.so";
    std::string dies = read_text(plugin_path("dies.so"));
    ASSERT_FALSE(dies.empty());
    ASSERT_TRUE(spit(plugin, read_text(plugin_path("testplug.so"))));
    // The worker running the overwritten file may die of it (the sanitizer build reports
    // that SEGV); conn is what this test is about, and its death is asserted below.
    allowed_.push_back("AddressSanitizer: SEGV");
    start("workers 1\nplugin " + plugin + "\n");
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_EQ(c.call("hello"), "hello");
    ASSERT_TRUE(overwrite_in_place(plugin, dies));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    // Either conn took the new plugin, or it died letting the old one go.
    auto conn_died = [&] { return lines_with(server_->log(), "conn (pid", "killed by signal"); };
    ASSERT_TRUE(eventually([&] {
        return server_->count_log("reload: conn frames with plugin") > 0 || !conn_died().empty();
    })) << server_->log();
    std::vector<std::string> died = conn_died();
    EXPECT_EQ(died.size(), 0u) << died.front() << "\n" << server_->log();
    EXPECT_EQ(server_->count_log("reload: conn frames with plugin"), 1) << server_->log();
    EXPECT_EQ(server_->child("asyncd-conn"), conn) << "conn was restarted\n" << server_->log();
}

// A reload to a plugin that cannot start on worker 0, while worker 0 waits out a long
// restart back-off: the reload is tried on it at once and sent back, and worker 0 comes
// back with the old plugin and serves the client it had. It does not wait out its back-off
// and then turn fatal on the new plugin.
TEST_F(StopReload, ReloadIsTriedOnAWorkerInBackoff) {
    std::string a = scratch_dir() + "/A.so", b = scratch_dir() + "/B.so";
    std::string bytes = read_text(plugin_path("dies.so"));
    ASSERT_TRUE(spit(a, bytes));
    ASSERT_TRUE(spit(b, bytes));
    start("workers 2\nplugin " + a + "\n");
    std::unique_ptr<Client> w0 = client_of_worker(0), w1 = client_of_worker(1);
    ASSERT_TRUE(w0 && w1) << server_->log();
    kill_into_backoff(1600);
    if (HasFatalFailure()) return;
    ASSERT_TRUE(rewrite_config(*server_, a, b, "plugin.fail_init_worker 0\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    EXPECT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
        << server_->log();
    // Worker 0 serves again, with copy A: the client bound to it is answered.
    ASSERT_TRUE(w0->send_frame("WHERE"));
    std::string where;
    EXPECT_TRUE(w0->recv_frame(&where, seconds(10))) << server_->log();
    EXPECT_TRUE(ends_with(where, "/A.so")) << where << "\n" << server_->log();
    EXPECT_EQ(w0->call("WHO"), "w0");
    EXPECT_TRUE(ends_with(w1->call("WHERE"), "/A.so"));
    EXPECT_EQ(server_->count_log("(fatal): not restarted"), 0) << server_->log();
    EXPECT_EQ(server_->stop(), 0) << server_->log();
}

// A reload that changes only a plugin.* value, with the same plugin file, restarts the
// workers with it like a new plugin; one that makes worker 0 refuse to start is sent back.
// So worker 0 keeps the old values, and a later death of it is an ordinary restart, not a
// fatal refusal.
TEST_F(StopReload, ReloadOfPluginValuesOnlyIsTriedAndSentBack) {
    start(base("dies.so", 2));
    std::unique_ptr<Client> w0 = client_of_worker(0);
    ASSERT_TRUE(w0) << server_->log();
    ASSERT_TRUE(rewrite_config(*server_, "workers 2", "workers 2", "plugin.fail_init_worker 0\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    EXPECT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
        << server_->log();
    // Back on the old values, worker 0 serves its client.
    ASSERT_TRUE(w0->send_frame("WHO"));
    std::string who;
    EXPECT_TRUE(w0->recv_frame(&who, seconds(10))) << server_->log();
    EXPECT_EQ(who, "w0");
    pid_t pid = 0;
    ASSERT_TRUE(eventually([&] { return (pid = server_->child("asyncd-work0")) != 0; }))
        << server_->log();
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    EXPECT_TRUE(eventually([&] {
        pid_t now = server_->child("asyncd-work0");
        return (now != 0 && now != pid) || server_->count_log("(fatal)") > 0;
    })) << server_->log();
    ASSERT_TRUE(w0->send_frame("WHO"));
    who.clear();
    EXPECT_TRUE(w0->recv_frame(&who, seconds(10))) << server_->log();
    EXPECT_EQ(who, "w0");
    EXPECT_EQ(server_->count_log("(fatal)"), 0) << server_->log();
    EXPECT_EQ(server_->stop(), 0) << server_->log();
}

}  // namespace
}  // namespace asyncd::test

namespace asyncd::test {
namespace {

// Two reloads of configs whose plugin will not start, close together: the second comes
// while the first is still being tried. Both are sent back to the config that worked (not
// to the first bad one, which never came up), and every worker serves again: no slot turns
// fatal, asyncd keeps running.
TEST_F(StopReload, QuickReloadsOfFailingConfigsGoBackToTheOneThatWorked) {
    std::string plugin = plugin_path("testplug.so");
    start("workers 2\nplugin " + plugin + "\n");
    std::string good = read_text(server_->config_path());
    for (int k = 1; k <= 2; k++) {
        ASSERT_TRUE(spit(server_->config_path(),
                         good + "plugin.fail_init yes\nplugin.x " + std::to_string(k) + "\n"));
        ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    }
    ASSERT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
        << server_->log();
    // Both workers come back on the good config and serve.
    std::set<std::string> who;
    ASSERT_TRUE(eventually(
        [&] {
            Client c;
            if (c.connect(server_->port())) who.insert(c.call("WHO"));
            return who.count("w0") && who.count("w1");
        },
        seconds(10)))
        << server_->log();
    EXPECT_EQ(server_->count_log("(fatal)"), 0) << server_->log();
    EXPECT_EQ(server_->count_log("nothing can serve"), 0) << server_->log();
    EXPECT_EQ(server_->stop(), 0);
}

// A reload that adds workers whose plugin will not start is sent back like a roll: the new
// slots are not fatal, and a later good reload to the same count starts them.
TEST_F(StopReload, ReloadAddingWorkersThatCannotStartIsSentBack) {
    std::string plugin = plugin_path("testplug.so");
    start("workers 1\nmax_workers 4\nplugin " + plugin + "\n");
    std::string good = read_text(server_->config_path());
    std::string three = good;
    three.replace(three.find("workers 1"), 9, "workers 3");
    ASSERT_TRUE(spit(server_->config_path(), three + "plugin.fail_init yes\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
        << server_->log();
    EXPECT_EQ(server_->count_log("(fatal)"), 0) << server_->log();
    ASSERT_TRUE(spit(server_->config_path(), three));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    std::set<std::string> who;
    EXPECT_TRUE(eventually(
        [&] {
            Client c;
            if (c.connect(server_->port())) who.insert(c.call("WHO"));
            return who.count("w2") > 0;
        },
        seconds(10)))
        << server_->log();
    EXPECT_EQ(server_->stop(), 0);
}

// pkg_timeout turned on by a reload also closes a packet begun while it was off.
TEST_F(StopReload, PkgTimeoutTurnedOnByAReloadReachesPacketsBegunBefore) {
    start("workers 1\npkg_timeout 0\nplugin " + plugin_path("testplug.so") + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_TRUE(
        c.send_all("\0\0\0\x20"
                   "abc",
                   7));  // 7 of a 32-byte packet, then nothing
    ASSERT_TRUE(eventually([&] { return server_->count_log("asyncd ready") > 0; }));
    std::string text = read_text(server_->config_path());
    text.replace(text.find("pkg_timeout 0"), 13, "pkg_timeout 1");
    ASSERT_TRUE(spit(server_->config_path(), text));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: limits now", 1, seconds(10))) << server_->log();
    EXPECT_TRUE(c.wait_closed(seconds(6))) << server_->log();
    EXPECT_EQ(server_->count_log("no whole packet within pkg_timeout"), 1) << server_->log();
}

}  // namespace
}  // namespace asyncd::test
