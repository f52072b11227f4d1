// The failure scenarios of RELIABILITY.md against the real binary. Short versions run in
// `make test`; `make reliability` runs them longer (ASYNCD_TEST_SCALE) and tabulates the
// FIGURE lines each one prints.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"
#include "test/reliability/seqload.h"
#include "test/shmq/test_util.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
class Reliability : public ServerTest {
  protected:
    // Stops sending, waits for every answer still due, stops the load.
    static SeqStats drain_and_stop(SeqLoad &load) {
        load.stop_sending();
        EXPECT_TRUE(load.wait_answered(seconds(30)));
        load.stop();
        return load.stats();
    }
    // Sequence-tagged traffic until `answers` have come back, then every one sent answered.
    SeqStats burst(int conns, int window, uint64_t answers) {
        SeqLoad load(server_->port(), conns, window);
        EXPECT_TRUE(load.connect_all());
        load.start();
        EXPECT_TRUE(eventually([&] { return load.answered() > answers; }));
        return drain_and_stop(load);
    }
    // Waits for worker `w` to be replaced after pid died; returns the new pid or 0.
    pid_t wait_replaced(int w, pid_t old, milliseconds deadline = seconds(20)) {
        std::string comm = "asyncd-work" + std::to_string(w);
        pid_t now = 0;
        eventually([&] { return (now = server_->child(comm)) != 0 && now != old; }, deadline);
        return now != old ? now : 0;
    }
};

// R1: kill -9 workers again and again under load: nothing lost, at most one duplicate per
// kill, every kill logged once.
TEST_F(Reliability, R1_KilledWorkersLoseNothing) {
    const int workers = 3, kills = long_run() ? 20 : 3, conns = long_run() ? 300 : 60;
    start(base("testplug.so", workers));
    SeqLoad load(server_->port(), conns, 4);
    ASSERT_TRUE(load.connect_all());
    load.start();
    ASSERT_TRUE(eventually([&] { return load.answered() > 2000; }));
    std::vector<double> restart_ms;
    std::vector<uint64_t> samples;
    for (int k = 0; k < kills; k++) {
        int w = k % workers;
        pid_t pid = server_->child("asyncd-work" + std::to_string(w));
        ASSERT_GT(pid, 0);
        uint64_t before = load.answered();
        auto t0 = Clock::now();
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        ASSERT_GT(wait_replaced(w, pid), 0) << "worker " << w << " not replaced";
        ASSERT_TRUE(server_->wait_log("serving again", k + 1));
        restart_ms.push_back(ms_since(t0));
        // Traffic goes on through the new worker before the next kill.
        ASSERT_TRUE(eventually([&] { return load.answered() > before + 500; }));
        samples.push_back(load.answered() - before);
    }
    SeqStats st = drain_and_stop(load);
    EXPECT_EQ(st.lost, 0u);
    EXPECT_EQ(st.unanswered, 0u);
    EXPECT_EQ(st.wrong, 0u);
    EXPECT_EQ(st.closed, 0u);
    EXPECT_LE(st.duplicates, uint64_t(kills));
    EXPECT_EQ(server_->count_log("killed by signal 9"), kills) << server_->log();
    EXPECT_EQ(server_->stop(), 0);
    std::sort(restart_ms.begin(), restart_ms.end());
    char buf[256];
    snprintf(buf, sizeof buf,
             "kills=%d packets=%llu lost=%llu duplicates=%llu restart_ms_median=%.0f max=%.0f",
             kills, (unsigned long long)st.answered, (unsigned long long)st.lost,
             (unsigned long long)st.duplicates, restart_ms[restart_ms.size() / 2],
             restart_ms.back());
    figure("R1", buf);
}

// R2: a poison packet kills its worker twice, then is quarantined; everyone else goes on.
TEST_F(Reliability, R2_PoisonPacketIsQuarantined) {
    start(base("testplug.so", 2));
    SeqLoad load(server_->port(), 20, 4);
    ASSERT_TRUE(load.connect_all());
    load.start();
    Client poison;
    ASSERT_TRUE(poison.connect(server_->port()));
    ASSERT_TRUE(poison.send_frame("CRASH"));
    EXPECT_TRUE(server_->wait_log("quarantined record", 1, seconds(20))) << server_->log();
    EXPECT_TRUE(poison.wait_closed(seconds(10))) << "its connection is closed";
    int crashes = server_->count_log("killed by signal 6");
    EXPECT_EQ(crashes, 2) << server_->log();
    std::string log = server_->log();
    size_t q = log.find("quarantined record type 1 seq 0 of connection ");
    ASSERT_NE(q, std::string::npos) << "names the connection and the sequence";
    EXPECT_TRUE(isxdigit(log[q + strlen("quarantined record type 1 seq 0 of connection ")]));
    uint64_t before = load.answered();
    EXPECT_TRUE(eventually([&] { return load.answered() > before + 1000; }));
    SeqStats st = drain_and_stop(load);
    EXPECT_EQ(st.lost + st.unanswered + st.wrong + st.closed, 0u);
    EXPECT_EQ(server_->stop(), 0);
    figure("R2", "crashes_before_quarantine=" + std::to_string(crashes) +
                     " lost=" + std::to_string(st.lost));
}

// R3: init_service crashes every time: restarts back off 100 ms doubling, one line each,
// and the supervisor stays idle.
TEST_F(Reliability, R3_CrashLoopBacksOff) {
    // Restart #5 comes after 100+200+400+800 ms; #10 after 51 s (the long run: a minute).
    const int restarts = long_run() ? 10 : 5;
    Server s(base("testplug.so", 1, "plugin.crash_init yes\n"));
    s.spawn();  // it never becomes ready
    auto t0 = Clock::now();
    ASSERT_TRUE(eventually([&] { return s.pid() > 0 && cpu_seconds(s.pid()) >= 0; }));
    double cpu0 = cpu_seconds(s.pid());
    ASSERT_TRUE(s.wait_log("restart #" + std::to_string(restarts) + " ", 1, seconds(120)))
        << s.log();
    double cpu = cpu_seconds(s.pid()) - cpu0;
    double elapsed = ms_since(t0) / 1000;
    std::string log = s.log();
    EXPECT_EQ(s.stop(), 0) << log;
    // The line of restart #k comes after the delays of the k-1 before it.
    EXPECT_GE(elapsed, 0.1 * ((1 << (restarts - 1)) - 1) * 0.9) << "backed off";
    std::vector<uint64_t> delays = numbers_after(log, " in ");
    EXPECT_GE(delays.size(), size_t(restarts));
    for (size_t k = 0; k < delays.size(); k++) {
        EXPECT_EQ(delays[k], std::min<uint64_t>(100ull << k, 30000)) << "restart #" << k + 1;
    }
    EXPECT_LT(cpu, 0.05 * elapsed) << "supervisor CPU in a crash loop";
    char buf[160];
    snprintf(buf, sizeof buf, "restarts=%d in %.1f s, supervisor_cpu=%.2f%% of one CPU", restarts,
             elapsed, 100 * cpu / elapsed);
    figure("R3", buf);
}

// R5: kill -9 conn under load: the listen socket stays, new connections are served within
// a second, the workers hear link_down for the old ones, nothing stale reaches a new one.
TEST_F(Reliability, R5_KilledConnComesBack) {
    std::string events = "/tmp/asyncd-r5-" + std::to_string(getpid()) + ".log";
    unlink(events.c_str());
    start(base("testplug.so", 2, "plugin.event_log " + events + "\n"));
    const int conns = 20;
    SeqLoad old_load(server_->port(), conns, 4);
    ASSERT_TRUE(old_load.connect_all());
    old_load.start();
    ASSERT_TRUE(eventually([&] { return old_load.answered() > 1000; }));
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    auto t0 = Clock::now();
    ASSERT_EQ(kill(conn, SIGKILL), 0);
    double gap = -1;
    ASSERT_TRUE(eventually(
        [&] {
            Client c;
            if (!c.connect(server_->port())) return false;
            std::string got;
            if (!c.send_frame("ping") || !c.recv_frame(&got, milliseconds(200))) return false;
            gap = ms_since(t0);
            return got == "ping";
        },
        seconds(10)));
    EXPECT_LT(gap, 1000) << "served again within a second";
    ASSERT_TRUE(eventually([&] { return old_load.stats().closed == uint64_t(conns); }));
    old_load.stop();
    // Every old connection got its link_down with reason 7 (conn restart).
    auto downs = [&] {
        std::ifstream in(events);
        std::string line;
        int n = 0;
        while (std::getline(in, line))
            n += line.find(" 7") != std::string::npos && line[0] == 'd';
        return n;
    };
    EXPECT_TRUE(eventually([&] { return downs() >= conns; })) << downs();
    SeqStats st = burst(20, 4, 2000);
    EXPECT_EQ(st.wrong + st.lost + st.duplicates + st.unanswered, 0u) << "no stale replies";
    int link_downs = downs();
    EXPECT_EQ(server_->stop(), 0);
    unlink(events.c_str());
    char buf[160];
    snprintf(buf, sizeof buf, "reconnect_gap_ms=%.0f link_downs=%d stale_replies_delivered=%llu",
             gap, link_downs, (unsigned long long)st.wrong);
    figure("R5", buf);
}

// R12: a callback that never returns is killed after handler_timeout; the packet gets a
// strike (twice, then quarantine); other traffic is not lost.
TEST_F(Reliability, R12_HungPluginIsKilled) {
    start(base("testplug.so", 2, "handler_timeout 1\n"));
    SeqLoad load(server_->port(), 10, 2);
    ASSERT_TRUE(load.connect_all());
    load.start();
    Client hang;
    ASSERT_TRUE(hang.connect(server_->port()));
    auto t0 = Clock::now();
    ASSERT_TRUE(hang.send_frame("HANG"));
    ASSERT_TRUE(server_->wait_log("stuck in proc_pkg_cli", 1, seconds(10)));
    double detect = ms_since(t0);
    EXPECT_LT(detect, 1000 + 1000) << "within handler_timeout plus a second";
    EXPECT_TRUE(server_->wait_log("quarantined record", 1, seconds(20))) << server_->log();
    EXPECT_TRUE(hang.wait_closed());
    EXPECT_EQ(server_->count_log("stuck in proc_pkg_cli"), 2);
    SeqStats st = drain_and_stop(load);
    EXPECT_EQ(st.lost + st.unanswered + st.wrong + st.closed, 0u);
    EXPECT_EQ(server_->stop(), 0);
    char buf[120];
    snprintf(buf, sizeof buf, "detection_ms=%.0f (handler_timeout 1000) lost=%llu", detect,
             (unsigned long long)st.lost);
    figure("R12", buf);
}

// R13: a leaking plugin is recycled at worker_max_rss, between packets: nothing lost.
TEST_F(Reliability, R13_LeakingPluginIsRecycled) {
    // The cap sits above what an idle worker of this build uses (the sanitizer build's
    // shadow memory is large), measured first.
    start(base("testplug.so", 1));
    long idle = rss_kib(server_->child("asyncd-work0"));
    ASSERT_GT(idle, 0);
    EXPECT_EQ(server_->stop(), 0);
    long cap_kib = idle + 32 * 1024;
    start(base("testplug.so", 1,
               "plugin.leak_kib 256\nworker_max_rss " + std::to_string(cap_kib) + "K\n"));
    const int recycles = long_run() ? 10 : 2;
    SeqLoad load(server_->port(), 10, 2);
    ASSERT_TRUE(load.connect_all());
    load.start();
    EXPECT_TRUE(server_->wait_log("recycled at worker_max_rss", recycles, seconds(60)))
        << server_->log();
    SeqStats st = drain_and_stop(load);
    EXPECT_EQ(st.lost + st.unanswered + st.wrong + st.closed + st.duplicates, 0u);
    EXPECT_EQ(server_->count_log("restart #"), 0) << "a recycle is not a crash";
    std::string log = server_->log();
    long peak = 0;
    for (uint64_t v : numbers_after(log, ": RSS "))
        peak = std::max(peak, long(v));
    EXPECT_EQ(server_->stop(), 0);
    char buf[160];
    snprintf(buf, sizeof buf, "recycles=%d cap_kib=%ld rss_peak_kib=%ld packets=%llu lost=%llu",
             server_->count_log("recycled at worker_max_rss"), cap_kib, peak,
             (unsigned long long)st.answered, (unsigned long long)st.lost);
    figure("R13", buf);
}

// R14: SIGTERM under load: everything accepted into a ring is answered, all processes gone
// within shutdown_timeout.
TEST_F(Reliability, R14_GracefulStopAnswersEverythingAccepted) {
    start(base("testplug.so", 2, "shutdown_timeout 10\n"));
    SeqLoad load(server_->port(), long_run() ? 200 : 50, 8);
    ASSERT_TRUE(load.connect_all());
    load.start();
    ASSERT_TRUE(eventually([&] { return load.answered() > 5000; }));
    std::vector<pid_t> kids = server_->children();
    auto t0 = Clock::now();
    EXPECT_EQ(server_->stop(seconds(15)), 0);
    double drain = ms_since(t0);
    for (pid_t p : kids)
        EXPECT_TRUE(eventually([&] { return dead(p); }));
    // Read until every connection has seen its EOF.
    EXPECT_TRUE(eventually([&] { return load.stats().closed == uint64_t(long_run() ? 200 : 50); }));
    load.stop();
    SeqStats st = load.stats();
    std::vector<uint64_t> in = numbers_after(server_->log(), "packets_in=");
    ASSERT_EQ(in.size(), 1u);
    uint64_t accepted = in[0];
    EXPECT_EQ(st.answered, accepted) << "every packet accepted into a ring was answered";
    EXPECT_EQ(st.lost + st.wrong + st.duplicates, 0u);
    EXPECT_LT(drain, 10000);
    char buf[160];
    snprintf(buf, sizeof buf, "drain_ms=%.0f accepted=%llu answered=%llu unanswered_accepted=%lld",
             drain, (unsigned long long)accepted, (unsigned long long)st.answered,
             (long long)accepted - (long long)st.answered);
    figure("R14", buf);
}

// R17: many worker restarts and connect/close cycles leave no fd or memory behind, and
// every fd is close-on-exec.
TEST_F(Reliability, R17_NoDriftOverRestartsAndReconnects) {
    start(base("testplug.so", 1));
    long idle = rss_kib(server_->child("asyncd-work0"));
    EXPECT_EQ(server_->stop(), 0);
    // Restarts by recycling (no back-off): a leak that crosses the cap every few packets.
    long cap_kib = idle + 8 * 1024;
    start(base("testplug.so", 2,
               "plugin.leak_kib 1024\nworker_max_rss " + std::to_string(cap_kib) + "K\n"));
    pid_t sup = server_->pid();
    pid_t conn = server_->child("asyncd-conn");
    int sup_fds = fd_count(sup), conn_fds = fd_count(conn);
    long conn_rss = status_kib(conn, "RssAnon");
    const int restarts = long_run() ? 1000 : 20;
    const int cycles = long_run() ? 1000000 : 5000;
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; server_->count_log("recycled at worker_max_rss") < restarts; i++) {
        ASSERT_EQ(c.call("r" + std::to_string(i)), "r" + std::to_string(i));
        ASSERT_LT(i, restarts * 200) << "not recycling";
    }
    c.close();
    for (int i = 0; i < cycles; i++) {
        Client k;
        ASSERT_TRUE(k.connect(server_->port())) << "cycle " << i;
        if (i % 1000 == 0) {
            ASSERT_EQ(k.call("x"), "x");
        }
    }
    // Back to the baseline once conn has seen every close.
    EXPECT_TRUE(eventually([&] { return fd_count(conn) == conn_fds; }))
        << fd_count(conn) << " vs " << conn_fds;
    int conn_drift = fd_count(conn) - conn_fds;
    int sup_drift = fd_count(sup) - sup_fds;
    EXPECT_EQ(sup_drift, 0);
    long conn_rss_after = status_kib(conn, "RssAnon");
    // The sanitizer build keeps freed memory in its quarantine for a while: more slack.
    long slack_kib = kSanitized ? 32 * 1024 : 1024;
    EXPECT_LT(conn_rss_after, conn_rss + slack_kib) << "conn private RSS KiB before " << conn_rss;
    std::vector<std::string> leaky;
    for (pid_t p : server_->children()) {
        for (auto &s : inheritable_fds(p))
            leaky.push_back(s);
    }
    for (auto &s : inheritable_fds(sup))
        leaky.push_back(s);
    EXPECT_TRUE(leaky.empty()) << leaky.front();
    int recycled = server_->count_log("recycled at worker_max_rss");
    EXPECT_EQ(server_->stop(), 0);
    char buf[200];
    snprintf(buf, sizeof buf,
             "worker_restarts=%d connect_close=%d sup_fd_drift=%d conn_fd_drift=%d "
             "conn_private_rss_drift_kib=%ld",
             recycled, cycles, sup_drift, conn_drift, conn_rss_after - conn_rss);
    figure("R17", buf);
}

// R18: kill -9 the supervisor: every child gone within a second, the port free at once.
TEST_F(Reliability, R18_KilledSupervisorTakesEveryChild) {
    start(base("testplug.so", 2));
    std::vector<pid_t> kids = server_->children();
    ASSERT_EQ(kids.size(), 3u);
    uint16_t port = server_->port();
    auto t0 = Clock::now();
    ASSERT_EQ(kill(server_->pid(), SIGKILL), 0);
    double last = 0;
    for (pid_t p : kids) {
        EXPECT_TRUE(eventually([&] { return dead(p); }, seconds(1))) << "pid " << p;
        last = std::max(last, ms_since(t0));
    }
    EXPECT_LT(last, 1000);
    Server again(base("testplug.so", 1, "listen 127.0.0.1:" + std::to_string(port) + "\n"));
    std::string why;
    EXPECT_TRUE(again.start(&why)) << why;
    EXPECT_EQ(again.stop(), 0);
    char buf[80];
    snprintf(buf, sizeof buf, "time_to_last_exit_ms=%.0f port_reused=yes", last);
    figure("R18", buf);
}

// R19: a corrupt ring record (test hook) is caught before anything reads past it: one
// ALERT, the ring reset, the worker restarted, the others serving on.
TEST_F(Reliability, R19_CorruptRecordIsCaught) {
    const char *hooks = getenv("ASYNCD_HOOKS_BIN");
    if (!hooks || !*hooks) GTEST_SKIP() << "ASYNCD_HOOKS_BIN not set (make test sets it)";
    binary_ = hooks;
    allowed_.push_back("request ring corrupt");
    start(base("testplug.so", 2));
    const int corruptions = long_run() ? 10 : 1;
    for (int k = 0; k < corruptions; k++) {
        Client c;
        ASSERT_TRUE(c.connect(server_->port()));
        ASSERT_TRUE(c.send_frame("!CORRUPT!"));
        ASSERT_TRUE(server_->wait_log("request ring corrupt", k + 1)) << server_->log();
        ASSERT_TRUE(server_->wait_log("serving again", k + 1)) << server_->log();
    }
    int detected = server_->count_log("request ring corrupt");
    // The line names the check that failed: the hook flips a bit of the header's len field.
    EXPECT_EQ(server_->count_log("request ring corrupt (record header check failed)"), corruptions)
        << server_->log();
    EXPECT_EQ(server_->count_log("request ring corrupt ()"), 0) << "the reason is never empty";
    SeqStats st = burst(20, 4, 2000);
    EXPECT_EQ(st.lost + st.unanswered + st.wrong, 0u) << "both workers serve afterwards";
    EXPECT_EQ(detected, corruptions);
    EXPECT_EQ(server_->stop(), 0);
    figure("R19",
           "corruptions=" + std::to_string(corruptions) + " detected=" + std::to_string(detected));
}

}  // namespace
}  // namespace asyncd::test
