// What asyncd promises about a plugin's callbacks, held against the real binary with the
// lifecycle plugin (test/plugins/lifecycle.c), which logs every callback with the pid of
// the process that ran it:
//  - the hang detector times each callback on its own: a stop or a conn restart that calls
//    link_down_cli for hundreds of connections, or hundreds of timers due at once, is many
//    short callbacks and not a hang; neither is a worker waiting inside net_send_cli for
//    room in its reply ring while conn cannot drain it;
//  - link_up_cli always gets the client's address: after a reload raised max_conns, and
//    while closed connections still wait their turn for a full ring;
//  - every link_up_cli has its link_down_cli in the process that saw it, when a reload
//    brings a new plugin and when a worker is recycled at worker_max_rss; the process that
//    takes the connections over gets link_up_cli for them before their next packet;
//  - clients of the admin listener that never send do not stall the supervisor: a worker
//    restart, a metrics request and a stop are as prompt as without them;
//  - asyncd_worker_count() follows a `workers` reload in the workers it did not restart.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const char kStuck[] = "stuck in";  // the hang detector's WARN line

// ---- small helpers --------------------------------------------------------------------

// A scratch folder for the event log and plugin copies, removed when the test ends.
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/asyncd-lifecycle-XXXXXX";
        path_ = mkdtemp(tmpl) ? tmpl : "";
    }
    ~TempDir() {
        if (path_.empty() || getenv("ASYNCD_KEEP_TEST_DIRS")) return;
        std::string out;
        run_shell("rm -rf " + shell_quote(path_), &out);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const { return path_; }

  private:
    std::string path_;
};

// One line of the plugin's event log: "up PID CONN PEER", "down PID CONN REASON",
// "init PID INDEX", "fini PID INDEX", "timer PID", "flood start PID CONN N",
// "flood end PID CONN".
struct Event {
    std::string kind;
    long pid = 0;
    std::string conn;  // up, down, flood: the connection id in hex
    std::string arg;   // up: ADDR:PORT; down: the reason; init, fini: the worker index
};

class EventLog {
  public:
    explicit EventLog(std::string path) : path_(std::move(path)) {}
    const std::string &path() const { return path_; }

    std::vector<Event> read() const {
        std::vector<Event> out;
        std::istringstream in(read_text(path_));
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream words(line);
            Event e;
            words >> e.kind;
            if (e.kind == "flood") {
                std::string which;
                words >> which;
                e.kind += " " + which;
            }
            words >> e.pid;
            if (e.kind == "up" || e.kind == "down" || e.kind.rfind("flood", 0) == 0)
                words >> e.conn;
            words >> e.arg;
            out.push_back(e);
        }
        return out;
    }
    // Events of this kind (of this process, when pid is not 0).
    int count(const std::string &kind, long pid = 0) const {
        int n = 0;
        for (const Event &e : read())
            n += e.kind == kind && (!pid || e.pid == pid);
        return n;
    }
    // link_down_cli calls with this reason.
    int count_down_reason(int reason) const {
        int n = 0;
        for (const Event &e : read())
            n += e.kind == "down" && e.arg == std::to_string(reason);
        return n;
    }
    // The connections a process logged this kind of event for.
    std::set<std::string> conns(const std::string &kind, long pid) const {
        std::set<std::string> out;
        for (const Event &e : read()) {
            if (e.kind == kind && e.pid == pid) out.insert(e.conn);
        }
        return out;
    }
    // Every process that logged an event.
    std::set<long> pids() const {
        std::set<long> out;
        for (const Event &e : read())
            out.insert(e.pid);
        return out;
    }
    // The id of the connection whose link_up_cli (in any process) named this peer, or "".
    std::string conn_of(const std::string &peer) const {
        for (const Event &e : read()) {
            if (e.kind == "up" && e.arg == peer) return e.conn;
        }
        return "";
    }

  private:
    std::string path_;
};

uint16_t local_port(int fd) {
    struct sockaddr_in a = {};
    socklen_t len = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) < 0) return 0;
    return ntohs(a.sin_port);
}

// What link_up_cli must be told about this client.
std::string peer_text(const Client &c) {
    return "127.0.0.1:" + std::to_string(local_port(c.fd()));
}

bool connect_many(uint16_t port, int n, std::vector<Client> *out) {
    for (int i = 0; i < n; i++) {
        out->emplace_back();
        if (!out->back().connect(port)) return false;
    }
    return true;
}

// Replaces the first `from` in the config file with `to`, atomically: a reload never reads
// half a file. False if the file has no `from`.
bool rewrite(const std::string &path, const std::string &from, const std::string &to) {
    std::string text = read_text(path);
    size_t at = text.find(from);
    if (at == std::string::npos) return false;
    text.replace(at, from.size(), to);
    {
        std::ofstream out(path + ".tmp");
        out << text;
    }
    return rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

// Raises RLIMIT_NOFILE's soft limit to the hard one for the test's life, then puts it back.
class NofileRaise {
  public:
    NofileRaise() {
        ok_ = getrlimit(RLIMIT_NOFILE, &old_) == 0;
        if (!ok_) return;
        struct rlimit rl = old_;
        rl.rlim_cur = rl.rlim_max;
        ok_ = setrlimit(RLIMIT_NOFILE, &rl) == 0;
    }
    ~NofileRaise() {
        if (ok_) setrlimit(RLIMIT_NOFILE, &old_);
    }
    NofileRaise(const NofileRaise &) = delete;
    NofileRaise &operator=(const NofileRaise &) = delete;
    bool ok() const { return ok_; }
    rlim_t soft() const {
        struct rlimit rl = {};
        getrlimit(RLIMIT_NOFILE, &rl);
        return rl.rlim_cur;
    }

  private:
    struct rlimit old_ = {};
    bool ok_ = false;
};

// A process stopped with SIGSTOP runs again when this goes, however the test ends.
class Resume {
  public:
    explicit Resume(pid_t pid) : pid_(pid) {}
    ~Resume() { now(); }
    Resume(const Resume &) = delete;
    Resume &operator=(const Resume &) = delete;
    void now() {
        if (pid_ > 0) kill(pid_, SIGCONT);
        pid_ = 0;
    }

  private:
    pid_t pid_;
};

// GET path from the admin listener within the deadline: the whole response, or "".
std::string http_get(uint16_t port, const std::string &path, milliseconds deadline) {
    Client c;
    if (!c.connect(port)) return "";
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    if (!c.send_all(req.data(), req.size())) return "";
    std::string resp;
    if (!c.read_to_close(&resp, deadline)) return "";
    return resp;
}

// Connections to the admin listener that never send a byte.
std::vector<Client> silent_clients(uint16_t admin, int n) {
    std::vector<Client> out;
    EXPECT_TRUE(connect_many(admin, n, &out));
    return out;
}

// Sends `bytes` of 4 KiB frames within 5 s, without reading anything. Returns the bytes
// sent.
size_t flood_frames(int fd, size_t bytes) {
    const std::string f = frame(std::string(4092, 'x'));
    auto end = Clock::now() + seconds(5);
    size_t sent = 0;
    while (sent < bytes) {
        size_t off = sent % f.size(), len = std::min(f.size() - off, bytes - sent);
        ssize_t n = send(fd, f.data() + off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, ms_left(end)) <= 0) break;
    }
    return sent;
}

// Closes with a reset (SO_LINGER 0): the server sees the close at once, even for a
// connection it has stopped reading.
void reset_close(Client *c) {
    struct linger l = {1, 0};
    setsockopt(c->fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    c->close();
}

// The members of a that b lacks, at most ten of them.
std::string missing(const std::set<std::string> &a, const std::set<std::string> &b) {
    std::string out;
    int n = 0;
    for (const auto &x : a) {
        if (b.count(x)) continue;
        if (++n <= 10) out += (out.empty() ? "" : " ") + x;
    }
    if (n > 10) out += " and " + std::to_string(n - 10) + " more";
    return "{" + out + "}";
}

// ---- the fixture ----------------------------------------------------------------------

class Lifecycle : public ServerTest {
  protected:
    // The lifecycle plugin in `workers` workers, logging its events, then `extra`.
    std::string config(int workers, const std::string &extra = "", const std::string &plugin = "") {
        std::string p = plugin.empty() ? plugin_path("lifecycle.so") : plugin;
        // listen is given: the harness adds it only to a config without "listen "
        // (admin_listen counts).
        return "listen 127.0.0.1:0\nworkers " + std::to_string(workers) + "\nplugin " + p +
               "\nplugin.event_log " + events_.path() + "\n" + extra;
    }
    // Every process that ran the plugin has, for the connections it logged link_up_cli
    // for, link_down_cli, and no other; and each init_service its fini_service.
    void expect_every_up_has_its_down() {
        for (long pid : events_.pids()) {
            std::set<std::string> up = events_.conns("up", pid), down = events_.conns("down", pid);
            EXPECT_EQ(up.size(), down.size()) << "pid " << pid;
            EXPECT_TRUE(up == down) << "pid " << pid << ": up without down " << missing(up, down)
                                    << ", down without up " << missing(down, up);
            EXPECT_EQ(events_.count("init", pid), events_.count("fini", pid)) << "pid " << pid;
        }
    }
    pid_t worker(int index) const { return server_->child("asyncd-work" + std::to_string(index)); }

    TempDir dir_;
    EventLog events_{dir_.path() + "/events.log"};
};

// ---- the hang detector times each callback ------------------------------------------

// A stop calls link_down_cli for each connection still open: 600 of them at 3 ms each are
// 1.8 s of callbacks, each far below handler_timeout 1 s, so a slow stop and not a hang.
// The worker goes through all of them, calls fini_service, and asyncd exits 0.
TEST_F(Lifecycle, LinkDownsAtAStopAreTimedOneByOne) {
    const int conns = 600;
    NofileRaise nofile;
    ASSERT_TRUE(nofile.ok()) << strerror(errno);
    if (nofile.soft() < rlim_t(conns) + 200) GTEST_SKIP() << "needs " << conns + 200 << " fds";
    start(config(1, "handler_timeout 1\nplugin.down_us 3000\n"));
    std::vector<Client> clients;
    ASSERT_TRUE(connect_many(server_->port(), conns, &clients));
    ASSERT_TRUE(eventually([&] { return events_.count("up") == conns; }))
        << events_.count("up") << " of " << conns << " linked up";
    const pid_t w = worker(0);
    ASSERT_GT(w, 0);

    EXPECT_EQ(server_->stop(seconds(15)), 0) << server_->log();
    EXPECT_EQ(server_->count_log(kStuck), 0) << server_->log();
    EXPECT_EQ(events_.count("fini", w), 1) << "the worker reached fini_service";
    EXPECT_EQ(events_.count("down", w), conns);
    EXPECT_EQ(events_.count("down"), events_.count_down_reason(8)) << "each ASYNCD_DOWN_SHUTDOWN";
    expect_every_up_has_its_down();
}

// A conn restart calls link_down_cli in every worker for each connection it knew: the
// same 1.8 s of short callbacks are no hang either. The worker keeps its pid.
TEST_F(Lifecycle, LinkDownsAfterAConnRestartAreTimedOneByOne) {
    const int conns = 600;
    NofileRaise nofile;
    ASSERT_TRUE(nofile.ok()) << strerror(errno);
    if (nofile.soft() < rlim_t(conns) + 200) GTEST_SKIP() << "needs " << conns + 200 << " fds";
    start(config(1, "handler_timeout 1\nplugin.down_us 3000\n"));
    std::vector<Client> clients;
    ASSERT_TRUE(connect_many(server_->port(), conns, &clients));
    ASSERT_TRUE(eventually([&] { return events_.count("up") == conns; }))
        << events_.count("up") << " of " << conns << " linked up";
    const pid_t w = worker(0), conn = server_->child("asyncd-conn");
    ASSERT_GT(w, 0);
    ASSERT_GT(conn, 0);

    ASSERT_EQ(kill(conn, SIGKILL), 0);
    // Either every connection is down in the worker, or the worker was killed as hung.
    eventually([&] { return events_.count("down", w) == conns || server_->count_log(kStuck); },
               seconds(15));
    EXPECT_EQ(server_->count_log(kStuck), 0) << server_->log();
    EXPECT_EQ(events_.count("down", w), conns);
    EXPECT_EQ(worker(0), w) << "the worker was not restarted\n" << server_->log();
    EXPECT_EQ(events_.count("down"), events_.count_down_reason(7))
        << "each ASYNCD_DOWN_CONN_RESTART";
    // The new conn serves.
    clients.clear();
    ASSERT_TRUE(eventually([&] {
        Client c;
        return c.connect(server_->port()) && c.call("again") == "again";
    })) << server_->log();
    EXPECT_EQ(server_->stop(), 0);
    expect_every_up_has_its_down();
}

// 4000 timers due at once, each callback 0.5 ms: 2 s of timer callbacks in one loop turn,
// each of them short. Every one runs, in the worker that added them.
TEST_F(Lifecycle, TimersDueTogetherAreTimedOneByOne) {
    const int timers = 4000;
    start(config(1, "handler_timeout 1\nplugin.timer_us 500\n"));
    const pid_t w = worker(0);
    ASSERT_GT(w, 0);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_EQ(c.call("TIMERS " + std::to_string(timers)), "timers " + std::to_string(timers));
    // Either every timer ran, or the worker was killed as hung.
    eventually([&] { return events_.count("timer") == timers || server_->count_log(kStuck); },
               seconds(15));
    EXPECT_EQ(server_->count_log(kStuck), 0) << server_->log();
    EXPECT_EQ(events_.count("timer", w), timers) << events_.count("timer") << " timers ran in all";
    EXPECT_EQ(worker(0), w) << server_->log();
    EXPECT_EQ(c.call("after"), "after");
    EXPECT_EQ(server_->stop(), 0);
}

// A worker inside net_send_cli waits for room in its reply ring while conn, stopped, cannot
// make any: for 2.5 s, past handler_timeout 1 s. That wait is not the plugin hanging; once
// conn runs again every reply arrives, in order, from the same worker.
TEST_F(Lifecycle, WaitingForRoomInTheReplyRingIsNotAHang) {
    const int replies = 40;
    const std::string gate = dir_.path() + "/gate";
    start(config(1, "handler_timeout 1\nring_size 64K\nplugin.flood_gate " + gate + "\n"));
    const pid_t w = worker(0), conn = server_->child("asyncd-conn");
    ASSERT_GT(w, 0);
    ASSERT_GT(conn, 0);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_TRUE(c.send_frame("FLOOD " + std::to_string(replies)));
    // The worker has the packet (it waits at the gate, before its first reply): stop conn,
    // then let the worker send. Its first 60 KiB reply fills the 64 KiB ring; the second
    // waits for room.
    ASSERT_TRUE(eventually([&] { return events_.count("flood start") == 1; })) << server_->log();
    ASSERT_EQ(kill(conn, SIGSTOP), 0);
    Resume resume(conn);
    { std::ofstream(gate) << "open\n"; }
    // Stopped past handler_timeout: that is the scenario, not a wait for something.
    std::this_thread::sleep_for(milliseconds(2500));
    EXPECT_EQ(events_.count("flood end"), 0) << "the worker could not have sent them all";
    resume.now();

    auto end = Clock::now() + seconds(10);
    int got = 0;
    std::string done;
    for (int i = 0; i < replies; i++) {
        std::string p;
        if (!c.recv_frame(&p, milliseconds(ms_left(end)))) break;
        if (p.size() != (60 << 10) - 4 || p.rfind("flood " + std::to_string(i) + " ", 0) != 0) {
            ADD_FAILURE() << "reply " << i << " is '" << p.substr(0, 20) << "' (" << p.size()
                          << " bytes)";
            break;
        }
        got++;
    }
    EXPECT_EQ(got, replies);
    if (got == replies) {
        EXPECT_TRUE(c.recv_frame(&done, milliseconds(ms_left(end))));
        EXPECT_EQ(done, "done");
    }
    EXPECT_EQ(server_->count_log(kStuck), 0) << server_->log();
    EXPECT_EQ(worker(0), w) << "the worker was not restarted\n" << server_->log();
    EXPECT_EQ(events_.count("flood start"), 1) << "the packet was handed over once";
    EXPECT_EQ(server_->stop(), 0);
}

// ---- link_up_cli always gets the peer -------------------------------------------------

// max_conns 4 at start, 16 after a reload: all twelve clients, most of them past what the
// start allowed, are named to link_up_cli by their address and port.
TEST_F(Lifecycle, LinkUpGetsThePeerAfterAReloadRaisesMaxConns) {
    const int conns = 12;
    start(config(1, "max_conns 4\n"));
    ASSERT_TRUE(rewrite(server_->config_path(), "max_conns 4\n", "max_conns 16\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: limits now max_conns 16")) << server_->log();
    std::vector<Client> clients;
    ASSERT_TRUE(connect_many(server_->port(), conns, &clients));
    int right = 0;
    for (int i = 0; i < conns; i++) {
        std::string got = clients[size_t(i)].call("PEER");
        EXPECT_EQ(got, peer_text(clients[size_t(i)])) << "client " << i;
        right += got == peer_text(clients[size_t(i)]);
    }
    EXPECT_EQ(right, conns);
    EXPECT_EQ(server_->stop(), 0);
}

// A slow worker's ring is full: the client that filled it is first in the queue for room
// and has more to send, and three clients that connected after it wait behind it for
// their link_up. Those three close (reset) while still waiting; the clients that connect
// next, up to max_conns with the first, are named to link_up_cli by their address and
// port. Several rounds, so that connection slots are reused.
TEST_F(Lifecycle, LinkUpGetsThePeerWhileClosedConnectionsWaitInTheQueue) {
    const int rounds = 3, waiting = 3, fresh = 3;
    start(
        config(1, "max_conns 4\nring_size 64K\nplugin.delay_us 40000\nadmin_listen 127.0.0.1:0\n"));
    const uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    int asked = 0, right = 0;
    for (int r = 0; r < rounds; r++) {
        SCOPED_TRACE("round " + std::to_string(r));
        const double pauses = metric(admin, "asyncd_ring_full_pauses_total");
        ASSERT_GE(pauses, 0);
        // 80 KiB of 4 KiB packets: the 64 KiB ring takes 15, at 40 ms each, and conn
        // holds the rest of what it read until the worker has got through them.
        Client filler;
        ASSERT_TRUE(filler.connect(server_->port()));
        ASSERT_EQ(flood_frames(filler.fd(), 80 << 10), size_t(80 << 10));
        ASSERT_TRUE(eventually([&] {
            return metric(admin, "asyncd_ring_full_pauses_total") > pauses;
        })) << server_->log();
        std::vector<Client> queued;
        ASSERT_TRUE(connect_many(server_->port(), waiting, &queued));
        ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_connections") == 1 + waiting; }))
            << server_->log();
        for (auto &q : queued)
            reset_close(&q);
        // conn has seen every close.
        ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_connections") == 1; }))
            << server_->log();

        std::vector<Client> next;
        ASSERT_TRUE(connect_many(server_->port(), fresh, &next));
        for (int i = 0; i < fresh; i++) {
            std::string got = next[size_t(i)].call("PEER");
            EXPECT_EQ(got, peer_text(next[size_t(i)])) << "client " << i;
            asked++;
            right += got == peer_text(next[size_t(i)]);
        }
        next.clear();
        reset_close(&filler);
        // Everyone of this round has gone from the worker before the next round.
        ASSERT_TRUE(eventually([&] { return metric(admin, "asyncd_connections") == 0; }))
            << server_->log();
        ASSERT_TRUE(
            eventually([&] { return events_.count("down") == events_.count("up"); }, seconds(10)))
            << events_.count("down") << " of " << events_.count("up") << " down";
    }
    EXPECT_EQ(right, asked);
    EXPECT_EQ(server_->stop(), 0);
}

// ---- every link_up_cli has its link_down_cli in the process that saw it ---------------

// A reload with a rebuilt plugin replaces the worker. Three quiet connections (they never
// send a byte) are handed over: the old process says link_down_cli for each, the new one
// link_up_cli for each before anything more comes from them, and the connections stay
// served.
TEST_F(Lifecycle, ANewPluginTakesOverQuietConnectionsWithLinkUp) {
    const int quiet = 3;
    const std::string so = dir_.path() + "/plugin.so";
    ASSERT_TRUE(copy_file(plugin_path("lifecycle.so"), so));
    start(config(1, "", so));
    std::vector<Client> clients;
    ASSERT_TRUE(connect_many(server_->port(), quiet, &clients));
    ASSERT_TRUE(eventually([&] { return events_.count("up") == quiet; })) << server_->log();
    std::vector<std::string> ids;
    for (auto &c : clients)
        ids.push_back(events_.conn_of(peer_text(c)));
    const pid_t old = worker(0);
    ASSERT_GT(old, 0);

    // The same file rebuilt in place: another inode, size and mtime.
    ASSERT_TRUE(copy_file(plugin_path("lifecycle.so"), so, std::string(64, '\0')));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: every worker runs plugin")) << server_->log();
    pid_t now = 0;
    ASSERT_TRUE(eventually([&] { return (now = worker(0)) != 0 && now != old; }));
    // Before any of them sends again.
    eventually(
        [&] {
            return events_.conns("down", old).size() == size_t(quiet) &&
                   events_.conns("up", now).size() == size_t(quiet);
        },
        seconds(5));
    for (int i = 0; i < quiet; i++) {
        SCOPED_TRACE("connection " + ids[size_t(i)]);
        EXPECT_EQ(events_.conns("down", old).count(ids[size_t(i)]), 1u)
            << "the old worker said link_down_cli";
        EXPECT_EQ(events_.conns("up", now).count(ids[size_t(i)]), 1u)
            << "the new worker said link_up_cli before the connection's next packet";
    }
    for (auto &c : clients)
        EXPECT_EQ(c.call("still here"), "still here");
    EXPECT_EQ(server_->stop(), 0) << server_->log();
    expect_every_up_has_its_down();
}

// The same for a worker recycled at worker_max_rss: one connection makes it leak past the
// cap, three quiet ones on the same worker are handed over with link_down_cli in the old
// process and link_up_cli in the new one before their next packet.
TEST_F(Lifecycle, ARecycledWorkerHandsQuietConnectionsOverWithLinkUp) {
    const int quiet = 3;
    // The cap sits above what an idle worker of this build uses (the sanitizer build's
    // shadow memory is large), measured first.
    start(config(1));
    long idle = rss_kib(worker(0));
    ASSERT_GT(idle, 0);
    EXPECT_EQ(server_->stop(), 0);
    ASSERT_EQ(unlink(events_.path().c_str()), 0);
    const long cap_mib = idle / 1024 + 64;
    start(config(1, "worker_max_rss " + std::to_string(cap_mib) + "M\n"));

    std::vector<Client> clients;
    ASSERT_TRUE(connect_many(server_->port(), quiet, &clients));
    Client leaker;
    ASSERT_TRUE(leaker.connect(server_->port()));
    ASSERT_TRUE(eventually([&] { return events_.count("up") == quiet + 1; })) << server_->log();
    std::vector<std::string> ids;
    for (auto &c : clients)
        ids.push_back(events_.conn_of(peer_text(c)));
    const pid_t old = worker(0);
    ASSERT_GT(old, 0);

    EXPECT_EQ(leaker.call("LEAK 100"), "leaked 100");
    ASSERT_TRUE(server_->wait_log("recycled at worker_max_rss")) << server_->log();
    pid_t now = 0;
    ASSERT_TRUE(eventually([&] { return (now = worker(0)) != 0 && now != old; }));
    eventually(
        [&] {
            return events_.conns("down", old).size() == size_t(quiet) + 1 &&
                   events_.conns("up", now).size() >= size_t(quiet);
        },
        seconds(5));
    for (int i = 0; i < quiet; i++) {
        SCOPED_TRACE("connection " + ids[size_t(i)]);
        EXPECT_EQ(events_.conns("down", old).count(ids[size_t(i)]), 1u)
            << "the old worker said link_down_cli";
        EXPECT_EQ(events_.conns("up", now).count(ids[size_t(i)]), 1u)
            << "the new worker said link_up_cli before the connection's next packet";
    }
    for (auto &c : clients)
        EXPECT_EQ(c.call("still here"), "still here");
    EXPECT_EQ(leaker.call("me too"), "me too");
    EXPECT_EQ(server_->count_log("recycled at worker_max_rss"), 1) << server_->log();
    EXPECT_EQ(server_->stop(), 0) << server_->log();
    expect_every_up_has_its_down();
}

// ---- silent admin clients do not stall the supervisor ---------------------------------

// 64 connections to the admin listener that never send: a killed worker is still replaced
// and serving at once.
TEST_F(Lifecycle, SilentAdminClientsDoNotDelayARestart) {
    start(config(1, "admin_listen 127.0.0.1:0\n"));
    const uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    const pid_t w = worker(0);
    ASSERT_GT(w, 0);
    std::vector<Client> silent = silent_clients(admin, 64);
    auto t0 = Clock::now();
    ASSERT_EQ(kill(w, SIGKILL), 0);
    EXPECT_TRUE(server_->wait_log("serving again", 1, seconds(2)))
        << "not serving again " << ms_since(t0) << " ms after the kill\n"
        << server_->log();
}

// With 64 silent admin clients (twice the clients the listener serves at once), GET
// /metrics on one more connection is answered at its first try, within 2 s: the silent ones
// that waited longest make room, they never keep a real request out.
TEST_F(Lifecycle, SilentAdminClientsDoNotDelayAnAnswer) {
    start(config(1, "admin_listen 127.0.0.1:0\n"));
    const uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    std::vector<Client> silent = silent_clients(admin, 64);
    auto t0 = Clock::now();
    std::string resp = http_get(admin, "/metrics", seconds(2));
    EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u)
        << "no answer within 2 s (" << ms_since(t0) << " ms): '" << resp.substr(0, 40) << "'";
    EXPECT_NE(resp.find("asyncd_packets_in_total"), std::string::npos);
}

// With 64 silent admin clients, SIGTERM stops asyncd at once.
TEST_F(Lifecycle, SilentAdminClientsDoNotDelayAStop) {
    start(config(1, "admin_listen 127.0.0.1:0\n"));
    const uint16_t admin = admin_port(*server_);
    ASSERT_NE(admin, 0) << server_->log();
    std::vector<Client> silent = silent_clients(admin, 64);
    auto t0 = Clock::now();
    EXPECT_EQ(server_->stop(seconds(3)), 0)
        << "not stopped within 3 s (" << ms_since(t0) << " ms)\n"
        << server_->log();
}

// ---- asyncd_worker_count() follows a reload -------------------------------------------

// workers 2 -> 4 -> 2 with max_workers 4: every worker, the ones started by the reload and
// the ones it left running, answers the count in force.
TEST_F(Lifecycle, WorkerCountFollowsAReloadInEveryWorker) {
    start(config(2, "max_workers 4\n"));
    ASSERT_TRUE(rewrite(server_->config_path(), "workers 2\n", "workers 4\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: workers 2 -> 4")) << server_->log();
    // A client on each worker. New connections go round robin to the workers that serve,
    // so a worker the reload started gets one once it is up.
    const std::set<std::string> all = {"w0", "w1", "w2", "w3"};
    std::map<std::string, Client> on;
    ASSERT_TRUE(eventually([&] {
        Client c;
        if (!c.connect(server_->port())) return false;
        std::string w = c.call("WHO");
        if (all.count(w) && !on.count(w)) on.emplace(w, std::move(c));
        return on.size() == all.size();
    })) << on.size()
        << " workers reached\n"
        << server_->log();
    // Each answers 4 (waited for: a worker may learn of the reload a moment after it).
    std::map<std::string, std::string> count;
    eventually(
        [&] {
            bool right = true;
            for (auto &[w, c] : on) {
                count[w] = c.call("COUNT");
                right = right && count[w] == "4";
            }
            return right;
        },
        seconds(3));
    for (const auto &[w, n] : count)
        EXPECT_EQ(n, "4") << w;

    // And back: the two that stay answer 2, and so does the worker a newcomer lands on.
    ASSERT_TRUE(rewrite(server_->config_path(), "workers 4\n", "workers 2\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: workers 4 -> 2")) << server_->log();
    count.clear();
    eventually(
        [&] {
            count["w0"] = on["w0"].call("COUNT");
            count["w1"] = on["w1"].call("COUNT");
            return count["w0"] == "2" && count["w1"] == "2";
        },
        seconds(3));
    for (const auto &[w, n] : count)
        EXPECT_EQ(n, "2") << w;
    Client fresh;
    ASSERT_TRUE(fresh.connect(server_->port()));
    EXPECT_EQ(fresh.call("COUNT"), "2");
    EXPECT_EQ(server_->stop(), 0);
}

}  // namespace
}  // namespace asyncd::test
