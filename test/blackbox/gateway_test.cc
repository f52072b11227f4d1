// Black-box tests of the gateway: the real asyncd binary, test plugins, loopback clients.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string base_config(const std::string &plugin, int workers, const std::string &extra = "") {
    return "workers " + std::to_string(workers) + "\nplugin " + plugin_path(plugin) + "\n" + extra;
}

class GatewayTest : public ServerTest {
  protected:
    Client connect() {
        Client c;
        EXPECT_TRUE(c.connect(server_->port()));
        return c;
    }
};

// Many connections at once, each with packets of many sizes in flight (written without
// waiting for answers), all driven from one poll loop: every byte comes back, in order.
TEST_F(GatewayTest, EchoesEverySizePipelinedOverAHundredConnections) {
    const size_t max_pkg = 128 << 10;
    start(base_config("echo.so", 2, "max_pkg_len 128K\nring_size 256K\n"));
    const int kConns = 100, kPackets = 12;
    std::mt19937_64 rng(1);
    struct Flow {
        Client c;
        std::string out;  // everything to send
        std::string expect;
        size_t sent = 0;
        std::string got;
    };
    std::vector<Flow> flows(kConns);
    for (int i = 0; i < kConns; i++) {
        ASSERT_TRUE(flows[i].c.connect(server_->port()));
        for (int k = 0; k < kPackets; k++) {
            size_t len;
            if (k == 0) {
                len = 4;  // an empty payload: the smallest packet
            } else if (k == 1 && i % 10 == 0) {
                len = max_pkg;  // the largest
            } else {
                len = 4 + rng() % (k % 3 == 0 ? 20000 : 200);
            }
            std::string payload(len - 4, '\0');
            for (auto &ch : payload)
                ch = char(rng());
            flows[i].out += frame(payload);
        }
        flows[i].expect = flows[i].out;
    }
    auto end = std::chrono::steady_clock::now() + seconds(60);
    size_t done = 0;
    while (done < flows.size()) {
        ASSERT_LT(std::chrono::steady_clock::now(), end) << done << " of " << kConns << " done";
        std::vector<pollfd> pfds;
        for (auto &f : flows) {
            short ev = POLLIN;
            if (f.sent < f.out.size()) ev |= POLLOUT;
            pfds.push_back({f.c.fd(), ev, 0});
        }
        ASSERT_GE(poll(pfds.data(), pfds.size(), 1000), 0);
        done = 0;
        for (size_t i = 0; i < flows.size(); i++) {
            Flow &f = flows[i];
            if (pfds[i].revents & POLLOUT) {
                size_t chunk = std::min<size_t>(f.out.size() - f.sent, 65536);
                ssize_t n = send(f.c.fd(), f.out.data() + f.sent, chunk, MSG_DONTWAIT);
                if (n > 0) f.sent += size_t(n);
            }
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                char buf[65536];
                ssize_t n = recv(f.c.fd(), buf, sizeof buf, MSG_DONTWAIT);
                ASSERT_NE(n, 0) << "connection " << i << " closed early";
                if (n > 0) f.got.append(buf, size_t(n));
            }
            ASSERT_LE(f.got.size(), f.expect.size());
            if (f.got.size() == f.expect.size()) done++;
        }
    }
    for (int i = 0; i < kConns; i++) {
        ASSERT_TRUE(flows[i].got == flows[i].expect) << "connection " << i << " got other bytes";
    }
    EXPECT_EQ(server_->stop(), 0);
}

struct BadCase {
    const char *name;
    std::string bytes;
};

// Each bad stream closes its own connection with one INFO line; a neighbour that is in the
// middle of its own traffic notices nothing.
TEST_F(GatewayTest, BadFramesCloseOnlyTheirOwnConnection) {
    start(base_config("echo.so", 2, "max_pkg_len 64K\n"));
    const std::vector<BadCase> cases = {
        {"length above max_pkg_len", std::string("\x00\x01\x00\x01", 4) + "xx"},
        {"length zero", std::string("\x00\x00\x00\x00", 4)},
        {"length below the prefix", std::string("\x00\x00\x00\x03", 4)},
        {"0xFFFFFFFF", std::string("\xff\xff\xff\xff", 4)},
        {"garbage", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
    };
    Client neighbour = connect();
    ASSERT_EQ(neighbour.call("before"), "before");
    int closed = 0;
    for (const auto &bc : cases) {
        Client bad = connect();
        ASSERT_TRUE(bad.send_all(bc.bytes.data(), bc.bytes.size())) << bc.name;
        EXPECT_TRUE(bad.wait_closed()) << bc.name << ": not closed";
        closed++;
        EXPECT_TRUE(server_->wait_log("[INFO]", 1));
        EXPECT_EQ(neighbour.call(std::string("still here after ") + bc.name),
                  std::string("still here after ") + bc.name);
    }
    EXPECT_TRUE(server_->wait_log("closing 127.0.0.1:", closed));
    EXPECT_EQ(server_->count_log("closing 127.0.0.1:"), closed) << server_->log();
    // A valid packet one byte at a time is served.
    Client slow = connect();
    std::string f = frame("trickle");
    for (char ch : f)
        ASSERT_TRUE(slow.send_all(&ch, 1));
    std::string got;
    ASSERT_TRUE(slow.recv_frame(&got));
    EXPECT_EQ(got, "trickle");
    EXPECT_EQ(server_->stop(), 0);
}

struct Events {
    std::map<std::string, std::vector<std::string>> by_conn;  // conn -> "up", "pkg X", "down R"
};

Events read_events(const std::string &path) {
    Events ev;
    std::ifstream in(path);
    std::string kind, conn, rest;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        ls >> kind >> conn;
        std::getline(ls, rest);
        if (kind == "up") ev.by_conn[conn].push_back("up");
        if (kind == "pkg") ev.by_conn[conn].push_back("pkg" + rest);
        if (kind == "down") ev.by_conn[conn].push_back("down" + rest);
    }
    return ev;
}

TEST_F(GatewayTest, LinkUpAndDownOncePerConnectionInOrderWithPackets) {
    std::string events = "/tmp/asyncd-events-" + std::to_string(getpid()) + ".log";
    unlink(events.c_str());
    start(base_config("testplug.so", 2, "plugin.event_log " + events + "\n"));
    const int kConns = 20, kPackets = 5;
    for (int i = 0; i < kConns; i++) {
        Client c = connect();
        for (int k = 0; k < kPackets; k++) {
            std::string p = "c" + std::to_string(i) + "p" + std::to_string(k);
            ASSERT_EQ(c.call(p), p);
        }
    }  // each closes here
    // One more stays open through the stop: it gets its link_down too, for the shutdown.
    Client last = connect();
    std::string p = "c" + std::to_string(kConns) + "p0";
    ASSERT_EQ(last.call(p), p);
    auto downs = [&] {
        std::ifstream in(events);
        std::string line;
        int n = 0;
        while (std::getline(in, line))
            n += line.rfind("down ", 0) == 0;
        return n;
    };
    ASSERT_TRUE(eventually([&] { return downs() == kConns; })) << downs();
    EXPECT_EQ(server_->stop(), 0);
    Events ev = read_events(events);
    unlink(events.c_str());
    ASSERT_EQ(ev.by_conn.size(), size_t(kConns + 1));
    std::map<std::string, int> seen_clients;
    for (const auto &[conn, list] : ev.by_conn) {
        if (list.size() == 3) {
            EXPECT_EQ(list[1], "pkg " + p) << conn;
            EXPECT_EQ(list.back(), "down 8") << conn << ": open at the stop";
            continue;
        }
        ASSERT_EQ(list.size(), size_t(kPackets + 2)) << conn;
        EXPECT_EQ(list.front(), "up") << conn;
        EXPECT_EQ(list.back(), "down 1") << conn << ": the peer closed";
        std::string client = list[1].substr(4, list[1].find('p', 4) - 4);
        seen_clients[client]++;
        for (int k = 0; k < kPackets; k++) {
            EXPECT_EQ(list[size_t(k) + 1], "pkg " + client + "p" + std::to_string(k)) << conn;
        }
    }
    EXPECT_EQ(seen_clients.size(), size_t(kConns)) << "connection ids are never shared";
}

TEST_F(GatewayTest, KilledWorkerIsReplacedAndItsConnectionsKeepWorking) {
    start(base_config("testplug.so", 2));
    std::vector<Client> clients;
    std::map<int, int> per_worker;
    for (int i = 0; i < 10; i++) {
        clients.push_back(connect());
        std::string who = clients.back().call("WHO");
        per_worker[who == "w0" ? 0 : 1]++;
    }
    ASSERT_EQ(per_worker[0], 5) << "round-robin binding";
    pid_t w0 = server_->child("asyncd-work0");
    ASSERT_GT(w0, 0);
    ASSERT_EQ(kill(w0, SIGKILL), 0);
    EXPECT_TRUE(server_->wait_log("worker 0 (pid " + std::to_string(w0) + ") killed by signal 9"));
    EXPECT_EQ(server_->count_log("restart #1 in 100 ms"), 1) << server_->log();
    EXPECT_TRUE(server_->wait_log("worker 0 (pid", 2)) << "serving again";
    for (size_t i = 0; i < clients.size(); i++) {
        std::string p = "after the kill " + std::to_string(i);
        EXPECT_EQ(clients[i].call(p), p) << "client " << i;
    }
    pid_t w0_new = server_->child("asyncd-work0");
    EXPECT_GT(w0_new, 0);
    EXPECT_NE(w0_new, w0);
    EXPECT_EQ(server_->stop(), 0);
}

TEST_F(GatewayTest, InitServiceFailureIsNotRespawned) {
    Server s(base_config("testplug.so", 2, "plugin.fail_init yes\n"));
    EXPECT_EQ(s.run_to_exit(seconds(20)), 1) << s.log();
    EXPECT_EQ(s.count_log("exited with code 2 (fatal): not restarted"), 2) << s.log();
    EXPECT_EQ(s.count_log("restart #"), 0) << s.log();
    EXPECT_EQ(s.count_log("nothing can serve"), 1) << s.log();
    printf("FIGURE R4 respawns=%d fatal_lines=%d exit_code=1\n", s.count_log("restart #"),
           s.count_log("(fatal): not restarted"));
}

TEST_F(GatewayTest, PluginWithAnotherAbiIsRefusedOnce) {
    Server s(base_config("bad_abi.so", 2));
    EXPECT_EQ(s.run_to_exit(seconds(20)), 1) << s.log();
    EXPECT_EQ(s.count_log("was built for plugin ABI 999"), 1) << s.log();
    EXPECT_EQ(s.count_log("restart #"), 0) << s.log();
    EXPECT_EQ(s.count_log("asyncd ready"), 0) << s.log();
}

TEST_F(GatewayTest, SelectWorkerRoutesAsThePluginSays) {
    start(base_config("route.so", 3));
    for (int round = 0; round < 2; round++) {
        for (int w = 0; w < 3; w++) {
            Client c = connect();
            std::string want = "w" + std::to_string(w);
            EXPECT_EQ(c.call(std::to_string(w) + " first"), want);
            // Bound for life: later packets that name another worker stay where they are.
            EXPECT_EQ(c.call(std::to_string((w + 1) % 3) + " second"), want);
        }
    }
    EXPECT_EQ(server_->stop(), 0);
}

TEST_F(GatewayTest, PluginFramingWithGetPkgLen) {
    start(base_config("lines.so", 1, "frame plugin\nmax_pkg_len 4K\n"));
    Client c = connect();
    std::string lines = "hello\nsplit ";
    ASSERT_TRUE(c.send_all(lines.data(), lines.size()));
    std::string more = "line\n";
    ASSERT_TRUE(c.send_all(more.data(), more.size()));
    char buf[17];
    ASSERT_TRUE(c.recv_exact(buf, 17, seconds(10)));
    EXPECT_EQ(std::string(buf, 17), "HELLO\nSPLIT LINE\n");
    // A line longer than get_pkg_len accepts is a bad stream.
    Client bad = connect();
    std::string junk(2000, 'x');
    ASSERT_TRUE(bad.send_all(junk.data(), junk.size()));
    EXPECT_TRUE(bad.wait_closed());
    EXPECT_TRUE(server_->wait_log("get_pkg_len rejected the stream"));
    EXPECT_EQ(server_->stop(), 0);
}

TEST_F(GatewayTest, SigtermStopsEveryProcessAndFreesThePort) {
    start(base_config("echo.so", 2));
    Client c = connect();
    ASSERT_EQ(c.call("x"), "x");
    std::vector<pid_t> kids = server_->children();
    ASSERT_EQ(kids.size(), 3u) << "one conn and two workers";
    uint16_t port = server_->port();
    ASSERT_EQ(server_->stop(), 0);
    for (pid_t p : kids) {
        EXPECT_TRUE(eventually([&] { return kill(p, 0) != 0; })) << "pid " << p << " lives on";
    }
    // Free for an immediate restart: a new listener (with SO_REUSEADDR, as asyncd's own)
    // binds at once; connections of the old one may still be in TIME_WAIT.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0) << "port still taken";
    EXPECT_EQ(listen(fd, 1), 0);
    close(fd);
    EXPECT_TRUE(c.wait_closed());
}

// A reply addressed to a connection that has closed must not reach the next connection,
// even when that one got the same fd in the conn process.
TEST_F(GatewayTest, LateReplyNeverReachesTheNextConnectionOnTheSameFd) {
    start(base_config("testplug.so", 1));
    Client probe = connect();
    Client old_client = connect();
    ASSERT_EQ(old_client.call("HOLD"), "held");
    old_client.close();
    // Wait until conn has closed it and told the worker: its fd is free for the next one.
    ASSERT_TRUE(eventually([&] { return probe.call("DOWNS") == "1"; }));
    Client next = connect();
    ASSERT_EQ(next.call("FIRE"), "fired");  // the plugin also sent "late" to the old id
    ASSERT_EQ(next.call("after"), "after") << "nothing arrived between the two answers";
    EXPECT_EQ(server_->stop(), 0);
    EXPECT_EQ(server_->count_log("stale_replies_dropped=1"), 1) << server_->log();
}

TEST(ConfigCheck, DashTReportsFileAndLine) {
    Server ok(base_config("echo.so", 1));
    std::string dir = ok.dir();
    auto check = [&](const std::string &body, std::string *out) {
        std::string path = dir + "/check.conf";
        std::ofstream(path) << body;
        std::string cmd = asyncd_bin() + " -t -c " + path + " 2>&1";
        FILE *p = popen(cmd.c_str(), "r");
        char buf[512];
        out->clear();
        while (p && fgets(buf, sizeof buf, p))
            *out += buf;
        int status = p ? pclose(p) : -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    std::string out;
    EXPECT_EQ(check(base_config("echo.so", 1), &out), 0) << out;
    EXPECT_NE(out.find("test is successful"), std::string::npos) << out;
    EXPECT_EQ(check(base_config("echo.so", 1, "# fine\nworkerz 3\n"), &out), 1);
    EXPECT_NE(out.find("check.conf:4: unknown key 'workerz'"), std::string::npos) << out;
    EXPECT_EQ(check(base_config("echo.so", 1, "ring_size 3M\n"), &out), 1);
    EXPECT_NE(out.find("check.conf:3: ring_size must be a power of two"), std::string::npos) << out;
    EXPECT_EQ(check("workers 1\nplugin nothing-here.so\n", &out), 1);
    EXPECT_NE(out.find("check.conf:2: plugin"), std::string::npos) << out;
    EXPECT_NE(out.find("not found"), std::string::npos) << out;
    EXPECT_EQ(check(base_config("bad_abi.so", 1), &out), 1);
    EXPECT_NE(out.find("ABI 999"), std::string::npos) << out;
    EXPECT_EQ(check(base_config("echo.so", 1, "frame plugin\n"), &out), 1);
    EXPECT_NE(out.find("get_pkg_len"), std::string::npos) << out;
}

}  // namespace
}  // namespace asyncd::test
