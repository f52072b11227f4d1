// The limits conn puts on what clients can make it hold (RELIABILITY.md R9, R10, R11, R16):
// a packet that never completes, a client that never reads, a ring that is full, and no fds
// left. Short versions run in `make test`; `make reliability` runs them longer
// (ASYNCD_TEST_SCALE) and tabulates the FIGURE lines each one prints.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

// A loopback TCP socket to port, non-blocking once it is made. wait: the connect completes
// first (with a 5 s limit); otherwise it may still be in progress. rcvbuf > 0 sets SO_RCVBUF
// before the connect, so that the window the server sees is small from the start.
int tcp_connect(uint16_t port, bool wait, int rcvbuf = 0) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (wait ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) < 0 &&
        (wait || errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    if (wait) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// fds a test opened, closed when it ends however it ends.
struct Fds {
    std::vector<int> fds;
    ~Fds() { close_all(); }
    int add(int fd) {
        if (fd >= 0) fds.push_back(fd);
        return fd;
    }
    void close_all() {
        for (int fd : fds)
            close(fd);
        fds.clear();
    }
};

// A reset or an orderly close from the other side: the socket is done.
bool gone(int err) {
    return err != EAGAIN && err != EWOULDBLOCK && err != EINTR;
}

// The well-behaved client beside a misbehaving one: echo round trips from a thread, paced,
// each checked, until stop(). Read the counts after stop().
class EchoProbe {
  public:
    explicit EchoProbe(uint16_t port) : port_(port) {}
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
        // At most one round trip per 2 ms: a bound of a few hours.
        for (uint64_t i = 0; running_.load() && i < 10000000; i++) {
            std::string want = "probe " + std::to_string(i);
            std::string got = client_.call(want);
            if (got != want) {
                first_error_ =
                    "round trip " + std::to_string(i) + ": sent '" + want + "', got '" + got + "'";
                errors_.fetch_add(1);
                return;  // the connection is in an unknown state: stop here
            }
            ok_.fetch_add(1);
            std::this_thread::sleep_for(milliseconds(2));
        }
    }

    uint16_t port_;
    Client client_;
    std::thread thread_;
    std::atomic<bool> running_{false};
    std::atomic<uint64_t> ok_{0}, errors_{0};
    std::string first_error_;
};

// The highest private memory (RssAnon, KiB) a process reaches while this lives, sampled
// every 2 ms from a thread.
class RssPeak {
  public:
    explicit RssPeak(pid_t pid) : pid_(pid), peak_(status_kib(pid, "RssAnon")) {
        thread_ = std::thread([this] { run(); });
    }
    ~RssPeak() { stop(); }
    long stop() {
        running_.store(false);
        if (thread_.joinable()) thread_.join();
        return peak_.load();
    }

  private:
    void run() {
        for (int i = 0; running_.load() && i < 10000000; i++) {
            long v = status_kib(pid_, "RssAnon");
            if (v > peak_.load()) peak_.store(v);
            std::this_thread::sleep_for(milliseconds(2));
        }
    }

    pid_t pid_;
    std::atomic<long> peak_;
    std::atomic<bool> running_{true};
    std::thread thread_;
};

// The sanitizer build keeps every freed block in a quarantine (256 MB by default), resident,
// which would hide whether conn gives its buffers back. While this lives, the asyncd a test
// starts keeps a 1 MB quarantine: recent frees are still checked, and memory comes back.
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

// A log for a failure message: whole if short, else its head and tail (a spinning server
// writes millions of lines).
std::string excerpt(const std::string &log) {
    const size_t keep = 3000;
    if (log.size() <= 2 * keep) return log;
    return log.substr(0, keep) + "\n[... " + std::to_string(log.size() - 2 * keep) +
           " bytes ...]\n" + log.substr(log.size() - keep);
}

// The log line that contains needle (the first), or "".
std::string line_with(const std::string &log, const std::string &needle) {
    size_t at = log.find(needle);
    if (at == std::string::npos) return "";
    size_t from = log.rfind('\n', at);
    from = from == std::string::npos ? 0 : from + 1;
    size_t to = log.find('\n', at);
    return log.substr(from, to == std::string::npos ? std::string::npos : to - from);
}

// How many log lines contain both a and b.
int lines_with(const std::string &log, const std::string &a, const std::string &b) {
    std::istringstream in(log);
    std::string line;
    int n = 0;
    for (int i = 0; std::getline(in, line) && i < 100000000; i++)
        n += line.find(a) != std::string::npos && line.find(b) != std::string::npos;
    return n;
}

// A count from conn's exit line ("conn exiting: ... name=N ..."), or -1 if it is not there.
long long exit_count(const std::string &log, const std::string &name) {
    std::string line = line_with(log, "conn exiting:");
    std::vector<uint64_t> v = numbers_after(line, " " + name + "=");
    return v.empty() ? -1 : (long long)v[0];
}

// The highest fd number a process holds, or -1.
int highest_fd(pid_t pid) {
    int top = -1;
    DIR *d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
    if (!d) return -1;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] != '.') top = std::max(top, atoi(e->d_name));
    }
    closedir(d);
    return top;
}

class ReliabilityLimits : public ServerTest {
  protected:
    // Fails on the ALERT lines and sanitizer reports of a server other than server_.
    static void check_clean(const Server &s) {
        for (const auto &line : s.unexpected_lines())
            ADD_FAILURE() << line;
    }
};

// R9: slowloris. Hundreds of clients each announce a 200-byte packet and then trickle it a
// byte at a time, never completing it. Each is closed once its packet has taken pkg_timeout
// from its first byte, although bytes keep coming; a normal client is served throughout.
TEST_F(ReliabilityLimits, R9_SlowlorisIsClosedAtThePacketDeadline) {
    const bool big = long_run();
    const int clients = big ? 500 : 200;
    const double timeout_s = big ? 3 : 1.5;
    const milliseconds tick(big ? 1000 : 250);
    const size_t pkg_len = 200;
    const double slack_ms = 5000;  // how late a close may come: the server's check interval
    char cfg[64];
    snprintf(cfg, sizeof cfg, "pkg_timeout %g\n", timeout_s);
    start(base("testplug.so", 2, cfg));
    ASSERT_FALSE(HasFatalFailure());
    EchoProbe probe(server_->port());
    ASSERT_TRUE(probe.start());

    struct Slow {
        int fd = -1;
        Clock::time_point first;
        size_t sent = 0;  // bytes of the packet sent, header included
        bool closed = false;
        double close_ms = -1;  // from its first byte to the close it saw
        size_t unexpected = 0;
    };
    std::vector<Slow> slow(static_cast<size_t>(clients));
    Fds fds;
    for (auto &s : slow) {
        s.fd = fds.add(tcp_connect(server_->port(), true));
        ASSERT_GE(s.fd, 0) << strerror(errno);
    }
    const char header[4] = {0, 0, char(pkg_len >> 8), char(pkg_len & 0xff)};
    for (auto &s : slow) {
        s.first = Clock::now();
        ASSERT_EQ(send(s.fd, header, sizeof header, MSG_NOSIGNAL), 4);
        s.sent = 4;
    }
    auto t0 = Clock::now();
    auto deadline = t0 + milliseconds(int(timeout_s * 1000 + slack_ms + 1000));
    auto next_tick = t0 + tick;
    int open_count = clients;
    auto mark_closed = [&](Slow &s, Clock::time_point at) {
        s.closed = true;
        s.close_ms = std::chrono::duration<double, std::milli>(at - s.first).count();
        open_count--;
    };
    std::vector<pollfd> pfds;
    std::vector<size_t> which;
    char buf[512];
    for (int turn = 0; open_count > 0 && Clock::now() < deadline && turn < 1000000; turn++) {
        pfds.clear();
        which.clear();
        for (size_t i = 0; i < slow.size(); i++) {
            if (slow[i].closed) continue;
            pfds.push_back({slow[i].fd, POLLIN, 0});
            which.push_back(i);
        }
        int n = poll(pfds.data(), pfds.size(), ms_left(next_tick));
        auto now = Clock::now();
        for (size_t k = 0; n > 0 && k < pfds.size(); k++) {
            if (!pfds[k].revents) continue;
            Slow &s = slow[which[k]];
            ssize_t r = recv(s.fd, buf, sizeof buf, 0);
            if (r > 0) {
                s.unexpected += size_t(r);  // nothing was complete, so nothing is answered
            } else if (r == 0 || gone(errno)) {
                mark_closed(s, now);
            }
        }
        if (now < next_tick) continue;
        next_tick += tick;
        for (auto &s : slow) {
            // The last byte is never sent: the packet never completes, however long this runs.
            if (s.closed || s.sent + 1 >= pkg_len) continue;
            ssize_t r = send(s.fd, "x", 1, MSG_NOSIGNAL);
            if (r == 1) {
                s.sent++;
            } else if (r < 0 && gone(errno)) {
                mark_closed(s, now);
            }
        }
    }
    probe.stop();

    std::vector<double> close_ms;
    size_t unexpected = 0;
    for (auto &s : slow) {
        unexpected += s.unexpected;
        if (!s.closed) continue;
        close_ms.push_back(s.close_ms);
        // It was still trickling: bytes came after the header, and the packet never completed.
        EXPECT_GT(s.sent, 4u);
        EXPECT_LT(s.sent, pkg_len);
    }
    EXPECT_EQ(open_count, 0) << "clients the server never closed, of " << clients;
    EXPECT_EQ(unexpected, 0u) << "bytes came back for packets that never completed";
    std::sort(close_ms.begin(), close_ms.end());
    ASSERT_FALSE(close_ms.empty());
    // The server's clock starts when it reads the first byte, after the client sent it, so no
    // client can see its close sooner than pkg_timeout (50 ms for clock granularity).
    EXPECT_GE(close_ms.front(), timeout_s * 1000 - 50) << "closed before pkg_timeout";
    EXPECT_LE(close_ms.back(), timeout_s * 1000 + slack_ms) << "closed too late";
    EXPECT_EQ(probe.errors(), 0u) << probe.first_error();
    EXPECT_GT(probe.ok(), 0u);
    EXPECT_TRUE(server_->wait_log("no whole packet within pkg_timeout", 1, seconds(2)))
        << excerpt(server_->log());
    std::string line = line_with(server_->log(), "no whole packet within pkg_timeout");
    EXPECT_NE(line.find("[INFO]"), std::string::npos) << line;
    EXPECT_NE(line.find("closing 127.0.0.1:"), std::string::npos) << line;
    EXPECT_EQ(server_->stop(), 0);
    EXPECT_EQ(exit_count(server_->log(), "pkg_timeouts"), clients)
        << line_with(server_->log(), "conn exiting:");
    char fig[200];
    snprintf(fig, sizeof fig,
             "clients=%d pkg_timeout_s=%g close_ms_min=%.0f close_ms_median=%.0f "
             "close_ms_max=%.0f",
             clients, timeout_s, close_ms.front(), close_ms[close_ms.size() / 2], close_ms.back());
    figure("R9", fig);
}

// Clients that pipeline echo requests and never read what comes back.
struct SlowReader {
    int fd = -1;
    Clock::time_point first;
    size_t sent = 0;  // bytes
    size_t off = 0;   // into the packet being sent
    bool closed = false;
    double close_ms = -1;  // from its first byte to the close it saw
};

// Sends `pkt` again and again on every reader until the server closes it (a reset, since it
// closes with our bytes unread), `budget` bytes have gone on it, or the deadline passes.
void pump(std::vector<SlowReader> *readers, const std::string &pkt, size_t budget,
          Clock::time_point deadline) {
    std::vector<pollfd> pfds;
    std::vector<SlowReader *> which;
    auto now = Clock::now();
    for (auto &r : *readers)
        r.first = now;
    for (int turn = 0; turn < 10000000 && Clock::now() < deadline; turn++) {
        pfds.clear();
        which.clear();
        for (auto &r : *readers) {
            if (r.closed || r.sent >= budget) continue;
            pfds.push_back({r.fd, POLLOUT, 0});
            which.push_back(&r);
        }
        if (pfds.empty()) return;
        if (poll(pfds.data(), pfds.size(), 10) <= 0) continue;
        now = Clock::now();
        for (size_t k = 0; k < pfds.size(); k++) {
            SlowReader &r = *which[k];
            bool dead_end = pfds[k].revents & (POLLERR | POLLHUP);
            if (!dead_end && (pfds[k].revents & POLLOUT)) {
                ssize_t n = send(r.fd, pkt.data() + r.off, pkt.size() - r.off, MSG_NOSIGNAL);
                if (n > 0) {
                    r.sent += size_t(n);
                    r.off = (r.off + size_t(n)) % pkt.size();
                }
                dead_end = n < 0 && gone(errno);
            }
            if (dead_end) {
                r.closed = true;
                r.close_ms = std::chrono::duration<double, std::milli>(now - r.first).count();
            }
        }
    }
}

// True once the server has closed fd: a byte sent to a closed socket draws a reset. (A
// reader that stopped sending cannot see the close otherwise: the FIN waits behind replies
// its zero window holds back.)
bool closed_by_server(int fd, milliseconds deadline) {
    auto end = Clock::now() + deadline;
    if (send(fd, "\0", 1, MSG_NOSIGNAL) < 0 && gone(errno)) return true;
    for (int turn = 0; turn < 100000 && Clock::now() < end; turn++) {
        pollfd p = {fd, 0, 0};
        if (poll(&p, 1, std::min(ms_left(end), 50)) > 0 && (p.revents & (POLLERR | POLLHUP))) {
            return true;
        }
    }
    return false;
}

// R10: a client that pipelines 64 KiB echo requests and never reads. conn holds its replies
// up to out_buf_hard (plus at most one message from a worker), then closes it with a WARN
// line and gives the memory back; a well-behaved client is served throughout.
TEST_F(ReliabilityLimits, R10_SlowReaderIsClosedAtTheHardLimit) {
    const size_t hard = size_t(4) << 20;
    const size_t pkt_len = size_t(64) << 10;  // whole frame: the largest reply there is
    // A worker hands conn one message at a time: a record of replies to one connection is at
    // most max_record = ring_size/4 = 16 KiB here, and a single reply longer than that (ours:
    // 64 KiB) is handed over whole after its parts. So conn may go over the limit by at most
    // max(16 KiB, 64 KiB) before it looks.
    const size_t ring = size_t(64) << 10;
    const size_t overshoot = std::max(ring / 4, pkt_len);
    // Rounds of slow readers (several at once in the long run), each round back to the
    // baseline. One worker, a little slow (500 us a packet): the well-behaved client shares
    // its ring with the slow readers, whose 64 KiB packets go into that (full) ring in parts,
    // so a reader is closed while one of its packets is half in the ring, which must not
    // disturb anyone else.
    const int readers_n = long_run() ? 8 : 1;
    const int rounds = long_run() ? 5 : 3;
    const size_t budget = size_t(64) << 20;  // per reader: 16x the limit
    // What conn's private memory may keep once the readers are gone: buffers above 128 KiB
    // are mapped on their own and go back whole, the smaller steps they grew through stay in
    // the heap for reuse (measured: 0.2 MiB for one reader, 1.2 MiB for eight at once); the
    // sanitizer's allocator keeps more (1.6 MiB for one).
    const long slack_kib = (kSanitized ? 3 * 1024 : 1024) + (readers_n > 1 ? 1024 : 0);
    SmallQuarantine quarantine;
    start(base("testplug.so", 1,
               "ring_size 64K\nout_buf_hard 4M\nout_buf_soft 0\nplugin.delay_us 500\n"));
    ASSERT_FALSE(HasFatalFailure());
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    EchoProbe probe(server_->port());
    ASSERT_TRUE(probe.start());
    ASSERT_TRUE(eventually([&] { return probe.ok() >= 20 || probe.errors() > 0; }));
    long rss_before = status_kib(conn, "RssAnon");
    std::string pkt = frame(std::string(pkt_len - 4, 'r'));

    long rss_peak = 0, rss_after = 0;
    double ms_to_close = 0;
    for (int round = 0; round < rounds; round++) {
        Fds fds;
        std::vector<SlowReader> readers(static_cast<size_t>(readers_n));
        for (auto &r : readers) {
            r.fd = fds.add(tcp_connect(server_->port(), true, 4096));
            ASSERT_GE(r.fd, 0) << strerror(errno);
        }
        RssPeak sampler(conn);
        pump(&readers, pkt, budget, Clock::now() + seconds(30));
        rss_peak = std::max(rss_peak, sampler.stop());
        for (auto &r : readers) {
            EXPECT_TRUE(r.closed) << "round " << round << ": not closed after " << r.sent
                                  << " bytes";
            ms_to_close = std::max(ms_to_close, r.close_ms);
        }
        // conn's private memory comes back to where it was once the buffers are gone.
        EXPECT_TRUE(eventually([&] {
            return (rss_after = status_kib(conn, "RssAnon")) <= rss_before + slack_kib;
        })) << "round "
            << round << ": conn RssAnon KiB before " << rss_before << ", peak " << rss_peak
            << ", after " << rss_after;
    }
    EXPECT_TRUE(server_->wait_log("over out_buf_hard", 1, seconds(5))) << excerpt(server_->log());
    std::string line = line_with(server_->log(), "over out_buf_hard");
    EXPECT_NE(line.find("[WARN]"), std::string::npos) << line;
    EXPECT_NE(line.find("closing 127.0.0.1:"), std::string::npos) << line;
    EXPECT_NE(line.find(": output buffer"), std::string::npos) << line;
    EXPECT_EQ(server_->count_log("over out_buf_soft"), 0);
    probe.stop();
    EXPECT_EQ(probe.errors(), 0u) << probe.first_error();
    EXPECT_GT(probe.ok(), 0u);
    EXPECT_EQ(server_->stop(), 0);
    std::string log = server_->log();
    long long peak = exit_count(log, "out_buf_peak");
    EXPECT_GT(peak, 0) << line_with(log, "conn exiting:");
    EXPECT_LE(peak, (long long)(hard + overshoot)) << "out_buf_hard " << hard;
    EXPECT_EQ(exit_count(log, "out_buf_closed"), readers_n * rounds)
        << line_with(log, "conn exiting:");
    char fig[240];
    snprintf(fig, sizeof fig,
             "readers=%dx%d peak_out_buf=%lld hard=%zu ms_to_close=%.0f conn_rss_before_kib=%ld "
             "peak_kib=%ld after_kib=%ld",
             rounds, readers_n, peak, hard, ms_to_close, rss_before, rss_peak, rss_after);
    figure("R10", fig);
}

// R10, the soft limit: a client whose replies stay over out_buf_soft for out_buf_soft_seconds
// is closed with a WARN line, though it sends nothing more and the hard limit is off.
TEST_F(ReliabilityLimits, R10_SlowReaderOverTheSoftLimitIsClosed) {
    const double soft_s = 1;
    // 8 MiB of replies: conn holds what the kernel does not, and the kernel holds at most
    // tcp_wmem's 4 MiB on conn's side and a few KiB on ours, so conn holds more than 1 MiB.
    const size_t total = size_t(8) << 20;
    start(base("testplug.so", 1,
               "ring_size 64K\nout_buf_soft 1M\nout_buf_soft_seconds 1\nout_buf_hard 0\n"));
    ASSERT_FALSE(HasFatalFailure());
    EchoProbe probe(server_->port());
    ASSERT_TRUE(probe.start());
    Fds fds;
    std::vector<SlowReader> readers(1);
    readers[0].fd = fds.add(tcp_connect(server_->port(), true, 4096));
    ASSERT_GE(readers[0].fd, 0) << strerror(errno);
    pump(&readers, frame(std::string((64 << 10) - 4, 's')), total, Clock::now() + seconds(20));
    SlowReader &r = readers[0];
    auto sent_all = Clock::now();
    // Closed during the sending (conn may stop reading a client over the soft limit) or after.
    EXPECT_TRUE(server_->wait_log("over out_buf_soft", 1, seconds(int(soft_s) + 10)))
        << excerpt(server_->log());
    double ms_to_close = ms_since(r.first);
    double after_sending_ms = ms_since(sent_all);
    if (r.closed) {
        ms_to_close = r.close_ms;
        after_sending_ms = 0;
    } else {
        EXPECT_TRUE(closed_by_server(r.fd, seconds(5))) << "the WARN line came, the close not";
    }
    // Over the limit at the earliest once the first reply was back; closed soft_s later.
    EXPECT_GE(ms_to_close, soft_s * 1000 - 50) << "closed before out_buf_soft_seconds";
    EXPECT_LE(after_sending_ms, soft_s * 1000 + 5000) << "closed too late";
    std::string line = line_with(server_->log(), "over out_buf_soft");
    EXPECT_NE(line.find("[WARN]"), std::string::npos) << line;
    EXPECT_NE(line.find("closing 127.0.0.1:"), std::string::npos) << line;
    EXPECT_NE(line.find(": output buffer over out_buf_soft"), std::string::npos) << line;
    EXPECT_EQ(server_->count_log("over out_buf_hard"), 0);
    probe.stop();
    EXPECT_EQ(probe.errors(), 0u) << probe.first_error();
    EXPECT_GT(probe.ok(), 0u);
    EXPECT_EQ(server_->stop(), 0);
    std::string log = server_->log();
    EXPECT_EQ(exit_count(log, "out_buf_closed"), 1) << line_with(log, "conn exiting:");
    long long peak = exit_count(log, "out_buf_peak");
    EXPECT_GT(peak, 1 << 20) << "it was over the soft limit";
    char fig[200];
    snprintf(fig, sizeof fig,
             "soft_limit: sent=%zu peak_out_buf=%lld soft=%d soft_s=%g ms_to_close=%.0f "
             "ms_after_sending=%.0f",
             r.sent, peak, 1 << 20, soft_s, ms_to_close, after_sending_ms);
    figure("R10", fig);
}

// Payload of flood packet seq on connection c: "c:seq:" then filler that depends on seq.
std::string flood_payload(int c, uint64_t seq, size_t len) {
    char head[48];
    int n = snprintf(head, sizeof head, "%d:%llu:", c, (unsigned long long)seq);
    std::string p(head, size_t(n));
    p.resize(len, char('a' + seq % 26));
    return p;
}

// R11: one slow worker and a flood of a hundred times its ring from a few connections. conn
// pauses reading while the ring is full instead of buffering the flood, its memory stays
// flat, and afterwards every packet has its answer, in order, once.
TEST_F(ReliabilityLimits, R11_FullRingPausesReadingAndLosesNothing) {
    const bool big = long_run();
    // The sanitizer build's allocator keeps a few MiB of its own (the quarantine, a cache per
    // thread, a region per size class): there the flood is the long run's, so that the bound
    // below, with that much more, still sits far below the flood.
    const size_t ring = big || kSanitized ? size_t(256) << 10 : size_t(64) << 10;
    const size_t flood = 100 * ring;
    const size_t pkt_len = 2048;  // whole frame
    const int conns = big ? 8 : 4;
    const int delay_us = 200;  // 2 KiB per 200 us: at most 10 MB/s through the worker
    const uint64_t per_conn = flood / pkt_len / size_t(conns);
    // conn may hold per connection one read (64 KiB) of input the ring has no room for, and
    // replies not yet written to a client that reads them at once: about 4 x 128 KiB here
    // with buffer doubling, 1 MiB for 8 (measured: 0.6 MiB and 1 MiB). Buffering the flood
    // instead would be all of it. So: a quarter of the flood and never more than 8 MiB, plus
    // 4 MiB for the sanitizer's allocator (measured: 2.7 to 3.7 MiB in all there).
    const long bound_kib =
        long((std::min(flood / 4, size_t(8) << 20) + (kSanitized ? size_t(4) << 20 : 0)) >> 10);
    SmallQuarantine quarantine;
    start(base("testplug.so", 1,
               "ring_size " + std::to_string(ring >> 10) + "K\nplugin.delay_us " +
                   std::to_string(delay_us) + "\n"));
    ASSERT_FALSE(HasFatalFailure());
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);

    struct Flow {
        int fd = -1;
        uint64_t next = 0;      // next sequence to send
        uint64_t expected = 0;  // next sequence to be answered
        std::string out, in;
        bool closed = false;
    };
    std::vector<Flow> flows(static_cast<size_t>(conns));
    Fds fds;
    for (auto &f : flows) {
        f.fd = fds.add(tcp_connect(server_->port(), true));
        ASSERT_GE(f.fd, 0) << strerror(errno);
    }
    // A round trip on each first, so the connections are bound and conn's buffers warm.
    for (int i = 0; i < conns; i++) {
        std::string want = frame("warm");
        ASSERT_EQ(send(flows[size_t(i)].fd, want.data(), want.size(), MSG_NOSIGNAL),
                  ssize_t(want.size()));
        std::string got;
        char c;
        for (int k = 0; k < 1000 && got.size() < want.size(); k++) {
            pollfd p = {flows[size_t(i)].fd, POLLIN, 0};
            if (poll(&p, 1, 10) > 0 && recv(flows[size_t(i)].fd, &c, 1, 0) == 1) got += c;
        }
        ASSERT_EQ(got, want);
    }
    long rss_before = status_kib(conn, "RssAnon");
    RssPeak sampler(conn);
    uint64_t lost = 0, duplicates = 0, wrong = 0, answered = 0;
    const uint64_t total = per_conn * uint64_t(conns);
    auto t0 = Clock::now();
    auto deadline = t0 + seconds(big ? 300 : 60);
    Clock::time_point sent_all{};
    bool all_sent = false;
    std::vector<pollfd> pfds(flows.size());
    std::vector<char> buf(64 << 10);
    for (int turn = 0; answered + lost < total && Clock::now() < deadline && turn < 100000000;
         turn++) {
        bool pending = false;
        for (size_t i = 0; i < flows.size(); i++) {
            Flow &f = flows[i];
            while (f.out.size() < (64u << 10) && f.next < per_conn)
                f.out += frame(flood_payload(int(i), f.next++, pkt_len - 4));
            pending = pending || !f.out.empty() || f.next < per_conn;
            pfds[i] = {f.closed ? -1 : f.fd, short(POLLIN | (f.out.empty() ? 0 : POLLOUT)), 0};
        }
        if (!pending && !all_sent) {
            all_sent = true;
            sent_all = Clock::now();
        }
        if (poll(pfds.data(), pfds.size(), 20) <= 0) continue;
        for (size_t i = 0; i < flows.size(); i++) {
            Flow &f = flows[i];
            if (f.closed) continue;
            if (pfds[i].revents & POLLOUT) {
                ssize_t n = send(f.fd, f.out.data(), f.out.size(), MSG_NOSIGNAL);
                if (n > 0) f.out.erase(0, size_t(n));
            }
            if (!(pfds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
            ssize_t n = recv(f.fd, buf.data(), buf.size(), 0);
            if (n == 0 || (n < 0 && gone(errno))) {
                f.closed = true;
                continue;
            }
            if (n > 0) f.in.append(buf.data(), size_t(n));
            size_t at = 0;
            while (f.in.size() - at >= 4) {
                const auto *h = reinterpret_cast<const unsigned char *>(f.in.data() + at);
                uint32_t len = (uint32_t(h[0]) << 24) | (uint32_t(h[1]) << 16) |
                               (uint32_t(h[2]) << 8) | uint32_t(h[3]);
                if (len != pkt_len) {
                    wrong++;
                    f.closed = true;
                    break;
                }
                if (f.in.size() - at < len) break;
                std::string payload = f.in.substr(at + 4, len - 4);
                at += len;
                int c = -1;
                unsigned long long seq = 0;
                if (sscanf(payload.c_str(), "%d:%llu:", &c, &seq) != 2 || c != int(i) ||
                    payload != flood_payload(c, seq, pkt_len - 4)) {
                    wrong++;
                } else if (seq < f.expected) {
                    duplicates++;
                } else {
                    lost += seq - f.expected;
                    f.expected = seq + 1;
                    answered++;
                }
            }
            f.in.erase(0, at);
        }
    }
    double flood_ms = ms_since(t0);
    double drain_ms = all_sent ? ms_since(sent_all) : -1;
    long rss_peak = sampler.stop();
    long growth = rss_peak - rss_before;
    int closed = 0;
    for (auto &f : flows)
        closed += f.closed;
    EXPECT_EQ(answered, total) << "answers missing after " << flood_ms << " ms";
    EXPECT_EQ(lost, 0u);
    EXPECT_EQ(duplicates, 0u);
    EXPECT_EQ(wrong, 0u);
    EXPECT_EQ(closed, 0);
    EXPECT_LT(growth, bound_kib) << "conn RssAnon KiB before " << rss_before << ", peak "
                                 << rss_peak << "; the flood was " << (flood >> 10) << " KiB";
    // "ring is full" is said at most once a second.
    int full_lines = server_->count_log("ring is full");
    EXPECT_LE(full_lines, flood_ms / 1000 + 1);
    EXPECT_EQ(server_->count_log("restart #"), 0);
    EXPECT_EQ(server_->stop(), 0);
    std::string log = server_->log();
    long long pauses = exit_count(log, "ring_full_pauses");
    EXPECT_GT(pauses, 0) << line_with(log, "conn exiting:");
    // The most bytes the ring held at a flush: it filled, and never past its capacity.
    long long high_water = exit_count(log, "ring_high_water");
    EXPECT_GT(high_water, (long long)ring / 2) << line_with(log, "conn exiting:");
    EXPECT_LE(high_water, (long long)ring);
    char fig[240];
    snprintf(fig, sizeof fig,
             "flood_bytes=%zu ring_size=%zu ring_high_water=%lld packets=%llu pauses=%lld "
             "conn_rss_growth_kib=%ld flood_ms=%.0f drain_ms=%.0f",
             flood, ring, high_water, (unsigned long long)total, pauses, growth, flood_ms,
             drain_ms);
    figure("R11", fig);
}

// R16: no fds left. (a) asyncd started under a small RLIMIT_NOFILE lowers max_conns to what
// fits and refuses beyond it, serving the rest; (b) conn's limit lowered under it at run
// time while connections keep coming: it neither spins nor floods the log, and serves again
// once fds are back.
TEST_F(ReliabilityLimits, R16_FdExhaustionDoesNotSpin) {
    // (a)
    const int tries = 100;
    Server small(base("testplug.so", 1, "max_conns 10000\n"));
    small.set_nofile(64);
    std::string why;
    ASSERT_TRUE(small.start(&why)) << why;
    EXPECT_TRUE(small.wait_log("max_conns 10000 lowered to", 1, seconds(5)))
        << excerpt(small.log());
    std::string lowered = line_with(small.log(), "max_conns 10000 lowered to");
    EXPECT_NE(lowered.find("[WARN]"), std::string::npos) << lowered;
    std::vector<uint64_t> m = numbers_after(lowered, "lowered to ");
    const int fits = m.empty() ? -1 : int(m[0]);
    EXPECT_GT(fits, 0);
    EXPECT_LT(fits, 64);
    int served = 0, refused = 0, undecided = 0;
    {
        Fds fds;
        std::vector<std::string> got(tries), want(tries);
        std::vector<int> state(tries, 0);  // 0 undecided, 1 served, 2 closed
        for (int i = 0; i < tries; i++) {
            int fd = fds.add(tcp_connect(small.port(), true));
            ASSERT_GE(fd, 0) << "connect " << i << ": " << strerror(errno);
            want[size_t(i)] = frame("a" + std::to_string(i));
            // A refused connection may be gone already: a send then fails, which is fine.
            ssize_t n = send(fd, want[size_t(i)].data(), want[size_t(i)].size(), MSG_NOSIGNAL);
            (void)n;
        }
        auto end = Clock::now() + seconds(10);
        char buf[256];
        std::vector<pollfd> pfds;
        std::vector<int> which;
        for (int turn = 0; turn < 100000 && Clock::now() < end; turn++) {
            pfds.clear();
            which.clear();
            for (int i = 0; i < tries; i++) {
                if (state[size_t(i)] != 0) continue;
                pfds.push_back({fds.fds[size_t(i)], POLLIN, 0});
                which.push_back(i);
            }
            if (pfds.empty()) break;
            if (poll(pfds.data(), pfds.size(), std::min(ms_left(end), 50)) <= 0) continue;
            for (size_t k = 0; k < pfds.size(); k++) {
                if (!pfds[k].revents) continue;
                size_t i = size_t(which[k]);
                ssize_t n = recv(pfds[k].fd, buf, sizeof buf, 0);
                if (n > 0) got[i].append(buf, size_t(n));
                if (got[i] == want[i]) {
                    state[i] = 1;
                } else if (n == 0 || (n < 0 && gone(errno))) {
                    state[i] = 2;
                }
            }
        }
        for (int s : state) {
            served += s == 1;
            refused += s == 2;
            undecided += s == 0;
        }
        EXPECT_EQ(undecided, 0) << "connections neither served nor closed";
        EXPECT_GT(served, 0);
        EXPECT_GT(refused, 0);
        EXPECT_EQ(served, std::min(fits, tries)) << "max_conns lowered to " << fits;
        EXPECT_TRUE(
            small.wait_log("max_conns (" + std::to_string(fits) + ") reached", 1, seconds(2)))
            << excerpt(small.log());
        EXPECT_EQ(small.count_log("Too many open files"), 0) << "the lowered max_conns fits";
        // Everyone hangs up: it serves the next one.
    }
    EXPECT_TRUE(eventually([&] {
        Client c;
        return c.connect(small.port()) && c.call("again") == "again";
    })) << "not serving after the clients left";
    EXPECT_EQ(small.stop(), 0);
    EXPECT_GE(exit_count(small.log(), "refused"), refused)
        << line_with(small.log(), "conn exiting:");
    check_clean(small);

    // (b)
    const int conns = long_run() ? 1000 : 100;
    const double window = long_run() ? 10 : 2;
    start(base("testplug.so", 1));
    ASSERT_FALSE(HasFatalFailure());
    pid_t conn = server_->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    struct rlimit old_limit = {};
    ASSERT_EQ(prlimit(conn, RLIMIT_NOFILE, nullptr, &old_limit), 0) << strerror(errno);
    // Room for 8 more fds above the highest it holds (fd_count + 8 at the least).
    int top = highest_fd(conn);
    ASSERT_GE(top, 0);
    struct rlimit low = {rlim_t(top + 1 + 8), old_limit.rlim_max};
    ASSERT_EQ(prlimit(conn, RLIMIT_NOFILE, &low, nullptr), 0) << strerror(errno);
    int crit_before = lines_with(server_->log(), "[CRIT]", "Too many open files");
    Fds clients;
    double cpu0 = cpu_seconds(conn);
    auto t0 = Clock::now();
    for (int i = 0; i < conns; i++) {
        // Non-blocking: once the backlog is full a connect stays in progress.
        if (clients.add(tcp_connect(server_->port(), false)) < 0) {
            ADD_FAILURE() << "connect " << i << ": " << strerror(errno);
            break;
        }
        std::this_thread::sleep_until(t0 + milliseconds(int(window * 1000 * (i + 1) / conns)));
    }
    double window_s = ms_since(t0) / 1000;
    double cpu = cpu_seconds(conn) - cpu0;
    int crit = lines_with(server_->log(), "[CRIT]", "Too many open files") - crit_before;
    EXPECT_LT(cpu, 0.3 * window_s) << "conn used " << cpu << " s of CPU in " << window_s << " s";
    EXPECT_GE(crit, 1) << "no CRIT line at the limit";
    EXPECT_LE(crit, window_s + 1) << "CRIT lines at most once a second";
    // fds back: the limit restored and the clients gone.
    ASSERT_EQ(prlimit(conn, RLIMIT_NOFILE, &old_limit, nullptr), 0) << strerror(errno);
    clients.close_all();
    bool recovered = eventually(
        [&] {
            Client c;
            return c.connect(server_->port()) && c.call("back") == "back";
        },
        seconds(10));
    EXPECT_TRUE(recovered) << "not serving once fds were back";
    EXPECT_EQ(server_->child("asyncd-conn"), conn) << "conn was restarted";
    EXPECT_EQ(server_->stop(), 0);
    EXPECT_GE(exit_count(server_->log(), "fd_exhausted"), 1)
        << line_with(server_->log(), "conn exiting:");
    char fig[240];
    snprintf(fig, sizeof fig,
             "cpu_pct_at_limit=%.1f crit_lines=%d window_s=%.1f recovered=%s "
             "nofile64_max_conns=%d served=%d refused=%d",
             100 * cpu / window_s, crit, window_s, recovered ? "yes" : "no", fits, served, refused);
    figure("R16", fig);
}

}  // namespace
}  // namespace asyncd::test
