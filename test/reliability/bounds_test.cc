// The bounds asyncd keeps on what a plugin or its clients can make it spend:
//   - worker_max_rss below what a plugin needs to start, or reached by its first packet,
//     does not turn into a restart loop;
//   - reloads do not leave conn with one more mapped plugin copy each;
//   - a get_pkg_len that answers differently for the same bytes is the plugin's fault, not
//     a broken invariant: its connection is closed with a WARN line, and others are served;
//   - input_budget bounds the bytes conn holds for packets not yet handed to a worker,
//     across every connection, while a well-behaved client is served throughout.
// The plugin is test/plugins/quirks.c (testplug.so for the reloads).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"
#include "test/shmq/test_util.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A log for a failure message: whole if short, else its head and tail (a server in a
// restart loop writes thousands of lines).
std::string excerpt(const std::string &log, size_t keep = 3000) {
    if (log.size() <= 2 * keep) return log;
    return log.substr(0, keep) + "\n[... " + std::to_string(log.size() - 2 * keep) +
           " bytes ...]\n" + log.substr(log.size() - keep);
}

// A count from conn's exit line ("conn exiting: ... name=N ..."), or -1 if it is not there.
long long exit_count(const std::string &log, const std::string &name) {
    std::vector<std::string> lines = lines_with(log, "conn exiting:");
    if (lines.empty()) return -1;
    std::vector<uint64_t> v = numbers_after(lines.back(), " " + name + "=");
    return v.empty() ? -1 : (long long)v[0];
}

// A loopback TCP socket to port, connected, then non-blocking.
int tcp_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// fds a test opened, closed when it ends however it ends.
struct Fds {
    std::vector<int> fds;
    ~Fds() {
        for (int fd : fds)
            close(fd);
    }
    int add(int fd) {
        if (fd >= 0) fds.push_back(fd);
        return fd;
    }
};

// A reset or an orderly close from the other side: the socket is done.
bool gone(int err) {
    return err != EAGAIN && err != EWOULDBLOCK && err != EINTR;
}

// The well-behaved client beside misbehaving ones: echo round trips from a thread, one
// every `pace`, each answered within `deadline`, until stop(). Read the counts after stop().
class EchoProbe {
  public:
    EchoProbe(uint16_t port, milliseconds deadline, milliseconds pace)
        : port_(port), deadline_(deadline), pace_(pace) {}
    ~EchoProbe() { stop(); }
    bool start() {
        if (!client_.connect(port_)) return false;
        running_.store(true);
        thread_ = std::thread([this] { run(); });
        return true;
    }
    void stop() {
        running_.store(false);
        if (thread_.joinable()) thread_.join();
    }
    uint64_t ok() const { return ok_.load(); }
    uint64_t errors() const { return errors_.load(); }
    const std::string &first_error() const { return first_error_; }

  private:
    void run() {
        for (uint64_t i = 0; running_.load() && i < 1000000; i++) {
            std::string want = "probe " + std::to_string(i), got;
            auto t0 = Clock::now();
            if (!client_.send_frame(want) || !client_.recv_frame(&got, deadline_) || got != want) {
                first_error_ = "round trip " + std::to_string(i) + ": sent '" + want + "', got '" +
                               got + "' after " + std::to_string(int(ms_since(t0))) + " ms";
                errors_.fetch_add(1);
                return;  // the connection is in an unknown state: stop here
            }
            ok_.fetch_add(1);
            std::this_thread::sleep_for(pace_);
        }
    }

    uint16_t port_;
    milliseconds deadline_, pace_;
    Client client_;
    std::thread thread_;
    std::atomic<bool> running_{false};
    std::atomic<uint64_t> ok_{0}, errors_{0};
    std::string first_error_;
};

// The highest value a /proc status field (KiB) of a process reaches while this lives,
// sampled every 2 ms from a thread.
class PeakSampler {
  public:
    PeakSampler(pid_t pid, const char *field)
        : pid_(pid), field_(field), peak_(status_kib(pid, field)) {
        thread_ = std::thread([this] { run(); });
    }
    ~PeakSampler() { stop(); }
    long stop() {
        running_.store(false);
        if (thread_.joinable()) thread_.join();
        return peak_.load();
    }

  private:
    void run() {
        for (int i = 0; running_.load() && i < 10000000; i++) {
            long v = status_kib(pid_, field_);
            if (v > peak_.load()) peak_.store(v);
            std::this_thread::sleep_for(milliseconds(2));
        }
    }

    pid_t pid_;
    const char *field_;
    std::atomic<long> peak_;
    std::atomic<bool> running_{true};
    std::thread thread_;
};

// The sanitizer build keeps every freed block in a quarantine (256 MB by default), resident,
// which would hide whether conn bounds its buffers. While this lives, the asyncd a test
// starts keeps a 1 MB quarantine.
class SmallQuarantine {
  public:
    SmallQuarantine() {
        if (!kSanitized) return;
        const char *old = getenv("ASAN_OPTIONS");
        had_ = old != nullptr;
        old_ = old ? old : "";
        std::string now = old_.empty() ? "" : old_ + ":";
        setenv("ASAN_OPTIONS", (now + "quarantine_size_mb=1").c_str(), 1);
    }
    ~SmallQuarantine() {
        if (!kSanitized) return;
        if (had_) {
            setenv("ASAN_OPTIONS", old_.c_str(), 1);
        } else {
            unsetenv("ASAN_OPTIONS");
        }
    }
    SmallQuarantine(const SmallQuarantine &) = delete;
    SmallQuarantine &operator=(const SmallQuarantine &) = delete;

  private:
    bool had_ = false;
    std::string old_;
};

// The files a process has mapped executable that are neither its own binary, nor a system
// library, nor one of `originals`: the copies of plugins it keeps, one entry per file (device
// and inode), described by its path.
std::vector<std::string> plugin_copies(pid_t pid, const std::vector<std::string> &originals) {
    std::string proc = "/proc/" + std::to_string(pid);
    // A file as /proc/PID/maps names it: "major:minor inode", the device in hex.
    auto id_of = [](const std::string &path) {
        struct stat st;
        if (stat(path.c_str(), &st) != 0) return std::string();
        char id[64];
        snprintf(id, sizeof id, "%02x:%02x %llu", major(st.st_dev), minor(st.st_dev),
                 (unsigned long long)st.st_ino);
        return std::string(id);
    };
    std::set<std::string> skip = {id_of(proc + "/exe")};
    for (const auto &path : originals)
        skip.insert(id_of(path));
    std::istringstream maps(read_text(proc + "/maps"));
    std::set<std::string> seen;
    std::vector<std::string> out;
    std::string line;
    for (int i = 0; std::getline(maps, line) && i < 1000000; i++) {
        std::istringstream f(line);
        std::string range, perms, offset, dev, path;
        unsigned long long inode = 0;
        f >> range >> perms >> offset >> dev >> inode;
        std::getline(f >> std::ws, path);
        if (perms.size() < 3 || perms[2] != 'x' || inode == 0 || path.empty() || path[0] != '/')
            continue;
        if (path.rfind("/usr/", 0) == 0 || path.rfind("/lib", 0) == 0) continue;
        std::string id = dev + " " + std::to_string(inode);
        if (!skip.count(id) && seen.insert(id).second) out.push_back(path);
    }
    return out;
}

// Items one a line, at most `most` of them, for a failure message.
std::string joined(const std::vector<std::string> &items, size_t most = 8) {
    std::string out;
    for (size_t i = 0; i < items.size() && i < most; i++)
        out += "\n  " + items[i];
    if (items.size() > most) out += "\n  ... " + std::to_string(items.size() - most) + " more";
    return out;
}

class Bounds : public ServerTest {
  protected:
    // Fails on the ALERT lines and sanitizer reports of a server other than server_.
    static void check_clean(const Server &s) {
        for (const auto &line : s.unexpected_lines())
            ADD_FAILURE() << line;
    }
};

// A worker_max_rss below what the plugin holds once init_service has run can never be met:
// each worker says so in one ERROR line and exits fatally (code 2, not restarted), and with
// no worker left asyncd stops with code 1. Recycling such a worker could only loop, as fast
// as workers start.
TEST_F(Bounds, WorkerMaxRssBelowStartupSizeIsFatalNotALoop) {
    Server s(base("quirks.so", 2, "worker_max_rss 2M\nplugin.init_alloc_mib 16\n"));
    int code = s.run_to_exit(seconds(10));
    std::string log = s.log();
    EXPECT_EQ(code, 1) << "-1: still running after 10 s\n" << excerpt(log, 1500);
    // One start per slot, and no recycle: a worker over the cap before its first packet is
    // not one that a fresh start would bring under it.
    EXPECT_LE(lines_with(log, "recycled").size(), 2u);
    for (int w = 0; w < 2; w++) {
        EXPECT_EQ(
            lines_with(log, "[ERROR] work" + std::to_string(w) + " ", "worker_max_rss").size(), 1u)
            << "worker " << w << " says once why it cannot start";
    }
    EXPECT_EQ(lines_with(log, "(fatal): not restarted").size(), 2u);
    EXPECT_EQ(lines_with(log, "nothing can serve").size(), 1u);
    check_clean(s);
}

// A plugin that passes worker_max_rss on its first packet: every worker is recycled after
// the packet it is on, and its replacement passes the cap again on its next. Recycles that
// come within a second of the worker's start go through the restart back-off, so a client
// sending one packet after another sees a few restarts, not one per packet, and every
// answer that comes is right.
TEST_F(Bounds, WorkerMaxRssReachedByTheFirstPacketBacksOff) {
    start(base("quirks.so", 1, "worker_max_rss 32M\nplugin.first_alloc_mib 64\n"));
    ASSERT_FALSE(HasFatalFailure());
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    const auto t0 = Clock::now();
    int answered = 0, wrong = 0, reconnects = 0;
    std::string first_wrong;
    // Back-to-back round trips for 3 s; a back-off of a few seconds is a slow answer, not a
    // lost one.
    for (int i = 0; i < 100000 && ms_since(t0) < 3000; i++) {
        std::string want = "packet " + std::to_string(i), got;
        if (c.send_frame(want) && c.recv_frame(&got, seconds(8)) && got == want) {
            answered++;
            continue;
        }
        if (first_wrong.empty()) first_wrong = "sent '" + want + "', got '" + got + "'";
        wrong++;
        reconnects++;
        if (!c.connect(server_->port()) || reconnects > 3) break;
    }
    std::string log = server_->log();
    size_t recycles = lines_with(log, "recycled").size();
    EXPECT_EQ(wrong, 0) << first_wrong;
    EXPECT_GT(answered, 0);
    EXPECT_LT(recycles, 20u) << answered << " answers in " << ms_since(t0) << " ms\n"
                             << excerpt(log);
    EXPECT_EQ(server_->stop(), 0);
}

// Every reload with a new plugin makes conn load a private copy of it (so that a file
// rebuilt in place is new code). Copies of plugins it no longer frames with must not pile
// up: after 30 reloads conn maps at most two copies, and still serves.
TEST_F(Bounds, ReloadsDoNotPileUpPluginCopiesInConn) {
    const int reloads = 30;
    server_ = std::make_unique<Server>("workers 1\nplugin a.so\n");
    // Two files with the same code: each reload names the other one, so each is a change.
    copy_file(plugin_path("testplug.so"), server_->dir() + "/a.so");
    copy_file(plugin_path("testplug.so"), server_->dir() + "/b.so");
    ASSERT_GT(read_text(server_->dir() + "/b.so").size(), 0u) << plugin_path("testplug.so");
    std::string why;
    ASSERT_TRUE(server_->start(&why)) << why;
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    const std::string conf_path = server_->config_path();
    const std::string conf = read_text(conf_path);
    ASSERT_NE(conf.find("plugin a.so\n"), std::string::npos) << conf;
    for (int i = 1; i <= reloads; i++) {
        std::string next = conf;
        if (i % 2) next.replace(next.find("plugin a.so\n"), 12, "plugin b.so\n");
        {
            std::ofstream out(conf_path + ".new");
            out << next;
        }
        ASSERT_EQ(rename((conf_path + ".new").c_str(), conf_path.c_str()), 0) << strerror(errno);
        ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
        ASSERT_TRUE(server_->wait_log("reload: conn frames with plugin", i, seconds(5)))
            << "reload " << i << "\n"
            << excerpt(server_->log());
        ASSERT_TRUE(server_->wait_log("reload: every worker runs plugin", i, seconds(5)))
            << "reload " << i << "\n"
            << excerpt(server_->log());
    }
    EXPECT_EQ(server_->child("asyncd-conn"), conn) << "conn was restarted";
    std::vector<std::string> copies =
        plugin_copies(conn, {server_->dir() + "/a.so", server_->dir() + "/b.so"});
    EXPECT_LE(copies.size(), 2u) << "plugin copies mapped by conn after " << reloads
                                 << " reloads:" << joined(copies);
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    EXPECT_EQ(c.call("after the reloads"), "after the reloads");
    EXPECT_EQ(server_->stop(), 0);
}

// A get_pkg_len that answers differently for the same bytes breaks the plugin's contract,
// not an invariant of asyncd. Here it changes its answer about a packet that conn streams
// into a full ring in parts, when conn comes back to the packet's bytes. conn closes that
// connection with a WARN line naming get_pkg_len and the plugin, and another client keeps
// being served.
TEST_F(Bounds, InconsistentGetPkgLenClosesItsConnectionOnly) {
    // One slow worker and a small ring (max_record 16 KiB): a 48 KiB packet goes in parts,
    // and the one after it finds the ring full half-way.
    start(base("quirks.so", 1, "frame plugin\nring_size 64K\nplugin.delay_us 20000\n"));
    ASSERT_FALSE(HasFatalFailure());
    EchoProbe probe(server_->port(), seconds(2), milliseconds(20));
    ASSERT_TRUE(probe.start());
    ASSERT_TRUE(eventually([&] { return probe.ok() >= 3 || probe.errors() > 0; }));
    const size_t pkt_len = 48 << 10;
    const int attempts = 5, per_conn = 8;
    int closed = 0, tried = 0;
    auto told = [&] {
        std::string log = server_->log();
        return !lines_with(log, "get_pkg_len", "quirks.so").empty() ||
               !lines_with(log, "[ALERT]").empty();
    };
    for (int a = 0; a < attempts && !told(); a++) {
        tried++;
        Client bad;
        ASSERT_TRUE(bad.connect(server_->port()));
        for (int k = 0; k < per_conn; k++) {
            // The sequence number makes each packet's first 16 bytes its own.
            char head[32];
            snprintf(head, sizeof head, "FLAKY %06d ", a * per_conn + k);
            std::string payload = head;
            payload.resize(pkt_len - 4, 'f');
            if (!bad.send_frame(payload)) break;  // closed already
        }
        // Its echoes come back until the close.
        if (bad.wait_closed(seconds(5))) closed++;
    }
    std::string log = server_->log();
    std::vector<std::string> warn = lines_with(log, "get_pkg_len", "quirks.so");
    ASSERT_FALSE(warn.empty()) << "no line names get_pkg_len and the plugin after " << tried
                               << " connections\n"
                               << excerpt(log);
    EXPECT_NE(warn[0].find("[WARN]"), std::string::npos) << warn[0];
    EXPECT_GE(closed, 1) << "the connection with the inconsistent answers was not closed";
    // The other client was answered all along, and still is.
    uint64_t ok_before = probe.ok();
    EXPECT_TRUE(eventually([&] { return probe.ok() >= ok_before + 5 || probe.errors() > 0; }));
    probe.stop();
    EXPECT_EQ(probe.errors(), 0u) << probe.first_error();
    Client after;
    ASSERT_TRUE(after.connect(server_->port()));
    EXPECT_EQ(after.call("still served"), "still served");
    EXPECT_EQ(server_->stop(), 0);
}

// input_budget bounds the bytes conn holds, over all connections, for packets not yet
// handed to a worker. 200 clients each send 900 KiB of a 1 MiB packet and then nothing:
// conn's private memory stays within the budget and some slack (a read's worth per
// connection) instead of growing by the 180 MB they sent, a well-behaved client is answered
// within 2 s all along, the hostile clients are closed at pkg_timeout, and conn says (WARN)
// that it paused input at the budget and counts the pauses in its exit line.
TEST_F(Bounds, InputBudgetBoundsUnfinishedPackets) {
    const int hostile = 200;
    const size_t declared = size_t(1) << 20, sent_each = size_t(900) << 10;
    // The slack: what conn may hold beyond the budget, about one read (64 KiB) for each
    // connection, and under the sanitizers their shadow and redzones besides.
    const long budget_kib = 16 << 10, slack_kib = (16 << 10) + (kSanitized ? 8 << 10 : 0);
    const double pkg_timeout_s = 4;
    SmallQuarantine quarantine;
    start(base("testplug.so", 1, "input_budget 16M\nmax_pkg_len 1M\npkg_timeout 4\n"));
    ASSERT_FALSE(HasFatalFailure());
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    EchoProbe probe(server_->port(), seconds(2), milliseconds(5));
    ASSERT_TRUE(probe.start());
    ASSERT_TRUE(eventually([&] { return probe.ok() >= 20 || probe.errors() > 0; }));
    // conn's private memory (RssAnon) is what its input buffers take; VmRSS also counts the
    // pages of the shared rings as they are touched, which have nothing to do with the budget.
    const long rss_before = status_kib(conn, "RssAnon");
    const long vm_before = status_kib(conn, "VmRSS");

    struct Hostile {
        int fd = -1;
        size_t sent = 0;
        bool closed = false;
    };
    std::vector<Hostile> flood(static_cast<size_t>(hostile));
    Fds fds;
    for (auto &h : flood) {
        h.fd = fds.add(tcp_connect(server_->port()));
        ASSERT_GE(h.fd, 0) << strerror(errno);
    }
    std::string bytes(sent_each, 'h');
    bytes[0] = char(declared >> 24);
    bytes[1] = char(declared >> 16);
    bytes[2] = char(declared >> 8);
    bytes[3] = char(declared);
    PeakSampler rss_peak(conn, "RssAnon"), vm_peak(conn, "VmRSS");
    const auto t0 = Clock::now();
    // Send what the sockets take until every client has sent its 900 KiB or been closed;
    // then wait for the closes. pkg_timeout runs from conn's first read of each client.
    const auto deadline = t0 + milliseconds(int(pkg_timeout_s * 1000) + 8000);
    int open_count = hostile;
    std::vector<pollfd> pfds;
    std::vector<Hostile *> which;
    char sink[4096];
    for (int turn = 0; open_count > 0 && Clock::now() < deadline && turn < 10000000; turn++) {
        pfds.clear();
        which.clear();
        for (auto &h : flood) {
            if (h.closed) continue;
            pfds.push_back({h.fd, short(POLLIN | (h.sent < sent_each ? POLLOUT : 0)), 0});
            which.push_back(&h);
        }
        if (poll(pfds.data(), pfds.size(), std::min(ms_left(deadline), 50)) <= 0) continue;
        for (size_t k = 0; k < pfds.size(); k++) {
            Hostile &h = *which[k];
            bool done = pfds[k].revents & (POLLERR | POLLHUP);
            if (!done && (pfds[k].revents & POLLOUT)) {
                ssize_t n = send(h.fd, bytes.data() + h.sent, sent_each - h.sent, MSG_NOSIGNAL);
                if (n > 0) h.sent += size_t(n);
                done = n < 0 && gone(errno);
            }
            if (!done && (pfds[k].revents & POLLIN)) {
                ssize_t n = recv(h.fd, sink, sizeof sink, 0);
                done = n == 0 || (n < 0 && gone(errno));
                EXPECT_LE(n, 0) << "an answer to a packet that never completed";
            }
            if (done) {
                h.closed = true;
                open_count--;
            }
        }
    }
    const double flood_ms = ms_since(t0);
    const long rss_top = rss_peak.stop(), vm_top = vm_peak.stop();
    size_t sent_total = 0;
    for (auto &h : flood)
        sent_total += h.sent;
    EXPECT_LT(rss_top - rss_before, budget_kib + slack_kib)
        << "conn RssAnon KiB before " << rss_before << ", peak " << rss_top << " (VmRSS "
        << vm_before << " -> " << vm_top << "); the clients sent " << (sent_total >> 10) << " KiB";
    EXPECT_EQ(open_count, 0) << "hostile clients not closed " << flood_ms
                             << " ms after the flood began";
    EXPECT_TRUE(server_->wait_log("no whole packet within pkg_timeout", 1, seconds(2)))
        << excerpt(server_->log());
    // The well-behaved client was answered within 2 s every time, and still is.
    uint64_t ok_before = probe.ok();
    EXPECT_TRUE(eventually([&] { return probe.ok() >= ok_before + 20 || probe.errors() > 0; }));
    probe.stop();
    EXPECT_EQ(probe.errors(), 0u) << probe.first_error();
    std::vector<std::string> warn = lines_with(server_->log(), "[WARN]", "input_budget");
    ASSERT_FALSE(warn.empty()) << "no WARN line says input paused at input_budget\n"
                               << excerpt(server_->log());
    EXPECT_LE(warn.size(), size_t(flood_ms / 1000) + 2) << "WARN lines are rate limited";
    EXPECT_EQ(server_->stop(), 0);
    std::string log = server_->log();
    EXPECT_GT(exit_count(log, "input_budget_pauses"), 0)
        << joined(lines_with(log, "conn exiting:"));
}

}  // namespace
}  // namespace asyncd::test
