// The cluster from outside: real asyncd nodes on loopback, each with the nodes test plugin
// (test/plugins/nodes.c), driven by a client of one node. Every outcome a call can have is
// provoked and read back as the status its callback got.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/wire.h"
#include "test/blackbox/cluster_fixture.h"
#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

using Cluster = ClusterTest;

TEST_F(Cluster, CallsRepliesAndStatusesBetweenTwoNodes) {
    write_cluster({"a", "b"}, "max_message 64K\n");
    start_node("a");
    start_node("b");
    EXPECT_EQ(call("a", "name"), "a");
    EXPECT_EQ(call("a", "call b echo any 0 hello"), "S0 C0 hello");
    // Index routing picks the worker; the callee sees who called.
    EXPECT_EQ(call("a", "call b whoami 1 0 x"), "S0 C0 b/1 from a");
    EXPECT_EQ(call("a", "call b whoami 0 0 x"), "S0 C0 b/0 from a");
    // "." is this node, through a local worker, with the same statuses.
    EXPECT_EQ(call("a", "call . whoami 1 0 x"), "S0 C0 a/1 from a");
    EXPECT_EQ(call("a", "call a whoami 0 0 x"), "S0 C0 a/0 from a");
    // A non-zero answer reaches the caller as REMOTE with its code.
    EXPECT_EQ(call("a", "call b fail any 0 x"), "S1 C7 nope");
    EXPECT_EQ(call("a", "call zz echo any 0 x"), "S3 C0 ") << "UNKNOWN";
    // No answer: TIMEOUT at the caller's deadline, not a hang.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(call("a", "call b never any 300 x"), "S2 C0 ");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5));
    // An answer after the deadline is dropped: the callback ran once, with TIMEOUT.
    EXPECT_EQ(call("a", "call b later any 200 600"), "S2 C0 ");
    EXPECT_EQ(call("a", "call b later any 2000 50"), "S0 C0 late");
    // Above the cluster's max_message: TOO_LARGE before anything is sent.
    EXPECT_EQ(call("a", "big b 70000 0"), "S7 0 ok");
    EXPECT_EQ(call("a", "big b 60000 0"), "S0 60000 ok");
    // A second node_reply for one request is refused (the plugin aborts if it is not).
    EXPECT_EQ(call("a", "call b twice any 0 x"), "S0 C0 one");
    EXPECT_EQ(call("a", "call b echo any 0 still"), "S0 C0 still");
    // node_call with no callback returns 0 and calls nothing; callbacks never run inside
    // node_call (the plugin answers REENTERED if one does).
    EXPECT_EQ(call("a", "nullcall"), "0");
    EXPECT_EQ(call("a", "call zz echo any 0 x"), "S3 C0 ");
    // Each side heard of the link.
    EXPECT_NE(call("a", "links").find("up:b"), std::string::npos);
}

// Each node's link and calls are in /metrics and in `asyncd -s status`.
TEST_F(Cluster, NodesAreInTheMetricsAndTheStatus) {
    write_cluster({"a", "b"});
    int admin = free_port();
    start_node("a", "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    start_node("b");
    EXPECT_EQ(call("a", "call b echo any 0 x"), "S0 C0 x");
    EXPECT_EQ(call("a", "call b never any 100 x"), "S2 C0 ");
    EXPECT_EQ(call("a", "call b fail any 0 x"), "S1 C7 nope");
    std::map<std::string, double> m;
    EXPECT_TRUE(eventually([&] {
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_node_up{node=\"b\",state=\"up\"}"] == 1 &&
               m["asyncd_node_calls_completed_total{node=\"b\",status=\"ok\"}"] == 1 &&
               m["asyncd_node_calls_completed_total{node=\"b\",status=\"timeout\"}"] == 1 &&
               m["asyncd_node_calls_completed_total{node=\"b\",status=\"remote\"}"] == 1 &&
               m["asyncd_node_calls_out_total{node=\"b\"}"] == 3 &&
               m["asyncd_node_pending_calls_out{node=\"b\"}"] == 0;
    })) << http_get(uint16_t(admin), "/metrics");
    std::string out;
    run_shell(
        shell_quote(asyncd_bin()) + " -c " + shell_quote(node("a").config_path()) + " -s status",
        &out);
    EXPECT_NE(out.find("\nb "), std::string::npos) << out;
    EXPECT_NE(out.find(" up "), std::string::npos) << out;
    EXPECT_NE(http_get(uint16_t(admin), "/status.json").find("\"node\": \"a\", "),
              std::string::npos);
    // The status page's node table: its state, and its calls' errors by status.
    std::string browser = chromium_command(node("a").dir());
    if (browser.empty()) GTEST_SKIP() << "chromium not found";
    std::string dom;
    ASSERT_TRUE(dump_dom(browser, "http://127.0.0.1:" + std::to_string(admin) + "/", &dom));
    size_t at = dom.find("id=\"node\"");
    ASSERT_NE(at, std::string::npos) << dom;
    EXPECT_NE(dom.substr(at, 80).find(">a<"), std::string::npos)
        << "its own name: " << dom.substr(at, 80);
    at = dom.find("id=\"n-b-state\"");
    ASSERT_NE(at, std::string::npos) << dom;
    EXPECT_EQ(dom.compare(dom.find('>', at) + 1, 3, "up<"), 0) << dom.substr(at, 200);
    at = dom.find("id=\"n-b-calls-out\"");
    ASSERT_NE(at, std::string::npos) << dom;
    EXPECT_EQ(dom.compare(dom.find('>', at) + 1, 2, "3<"), 0) << dom.substr(at, 200);
    std::string row = dom.substr(at, dom.find("</tr>", at) - at);
    EXPECT_NE(row.find("timeout 1"), std::string::npos) << row;
    EXPECT_NE(row.find("remote 1"), std::string::npos) << row;
}

// C11: SIGHUP with the cluster file changed while calls to an unchanged node go on: a node
// added, one marked down, one removed, one moved, and a broken file. Each diff is logged
// in one line; the calls to the unchanged node never fail.
TEST_F(Cluster, AReloadAppliesTheClusterFileAsADiff) {
    write_cluster({"a", "b", "c"});
    start_node("a");
    start_node("b");
    start_node("c");
    ASSERT_EQ(call("a", "call c echo any 0 x"), "S0 C0 x");
    std::atomic<bool> done{false};
    std::atomic<int> calls{0}, failed{0};
    std::string first_failure;
    std::thread load([&] {
        Client c;
        if (!c.connect(node("a").port())) {
            failed++;
            return;
        }
        for (int i = 0; i < 200000 && !done; i++) {
            std::string got;
            if (!c.send_frame("call b echo any 0 k") || !c.recv_frame(&got, seconds(10))) {
                failed++;
                return;
            }
            calls++;
            if (got != "S0 C0 k" && failed++ == 0) first_failure = got;
        }
    });
    auto reload = [&](const std::vector<std::string> &names, const std::string &extra,
                      const std::string &line) {
        int before = node("a").count_log(line);
        write_cluster(names, extra);
        kill(node("a").pid(), SIGHUP);
        return node("a").wait_log(line, before + 1, seconds(10));
    };
    // Added d (started with the new file), c marked down.
    ports_["d"] = free_port();
    {
        std::ofstream f(dir_ + "/cluster.conf");
        f << "node a 127.0.0.1:" << ports_["a"] << "\nnode b 127.0.0.1:" << ports_["b"]
          << "\nnode c 127.0.0.1:" << ports_["c"] << " down\nnode d 127.0.0.1:" << ports_["d"]
          << "\n";
    }
    start_node("d");
    kill(node("a").pid(), SIGHUP);
    ASSERT_TRUE(node("a").wait_log("cluster reload: ", 1, seconds(10))) << node("a").log();
    EXPECT_TRUE(node("a").wait_log("added d", 1, seconds(1))) << node("a").log();
    EXPECT_EQ(call("a", "call d echo any 0 new"), "S0 C0 new");
    EXPECT_EQ(call("a", "call c echo any 0 x"), "S4 C0 ") << "marked down";
    // c removed.
    ASSERT_TRUE(reload({"a", "b", "d"}, "", "cluster reload: "));
    EXPECT_EQ(call("a", "call c echo any 0 x"), "S3 C0 ") << "removed";
    // A broken file keeps the table.
    {
        int errors = node("a").count_log("keeping the running config");
        std::ofstream(dir_ + "/cluster.conf")
            << "node a 127.0.0.1:" << ports_["a"] << "\nnode b nowhere\n";
        kill(node("a").pid(), SIGHUP);
        EXPECT_TRUE(node("a").wait_log("keeping the running config", errors + 1, seconds(10)));
        EXPECT_EQ(call("a", "call d echo any 0 still"), "S0 C0 still");
    }
    // d moved: restarted on another port, the file says so; a's calls follow it.
    nodes_.erase("d");
    ports_["d"] = free_port();
    write_cluster({"a", "b", "d"});
    start_node("d");
    ASSERT_TRUE(reload({"a", "b", "d"}, "", "cluster reload: "));
    EXPECT_TRUE(eventually([&] { return call("a", "call d echo any 0 moved") == "S0 C0 moved"; }));
    done = true;
    load.join();
    EXPECT_GT(calls.load(), 0);
    EXPECT_EQ(failed.load(), 0) << "calls to the unchanged node b failed: " << first_failure;
}

// Sends are not answered; they arrive in order with the calls of the same worker pair.
TEST_F(Cluster, SendsArriveInOrderWithCalls) {
    write_cluster({"a", "b"});
    start_node("a");
    start_node("b");
    EXPECT_EQ(call("a", "send b x 0 hi"), "sent 0");
    EXPECT_EQ(call("a", "sendn 999 b x 0"), "sent 0");
    // The count call goes to the same worker after the sends, on the same link: it sees all.
    EXPECT_EQ(call("a", "call b count 0 0 x"), "S0 C0 1000");
    EXPECT_EQ(call("a", "send zz x 0 hi"), "sent 3") << "UNKNOWN, at once";
}

// Many calls in flight from one client at once, routed by key: every one answered, right.
TEST_F(Cluster, PipelinedCallsAreEachAnsweredOnce) {
    write_cluster({"a", "b"});
    start_node("a");
    start_node("b");
    Client c;
    ASSERT_TRUE(c.connect(node("a").port()));
    std::string batch;
    const int kCalls = 2000;
    for (int i = 0; i < kCalls; i++)
        batch += frame("call b echo key:" + std::to_string(i % 7) + " 0 m" + std::to_string(i));
    ASSERT_TRUE(c.send_all(batch.data(), batch.size()));
    std::map<std::string, int> seen;
    for (int i = 0; i < kCalls; i++) {
        std::string got;
        ASSERT_TRUE(c.recv_frame(&got, seconds(20))) << "after " << i;
        seen[got]++;
    }
    EXPECT_EQ(int(seen.size()), kCalls);
    for (int i = 0; i < kCalls; i++)
        EXPECT_EQ(seen["S0 C0 m" + std::to_string(i)], 1) << i;
}

// Large messages travel in parts and come back whole.
TEST_F(Cluster, LargeMessagesTravelInParts) {
    write_cluster({"a", "b"}, "max_frame 16K\nmax_message 4M\n");
    start_node("a");
    start_node("b");
    EXPECT_EQ(call("a", "big b 3000000 0"), "S0 3000000 ok");
    EXPECT_EQ(call("a", "big b 100 0"), "S0 100 ok");
}

// C-scenarios of a dead peer: calls in flight end LINK_LOST at once, new ones DOWN at once
// (the circuit), and a restarted peer is called again once the back-off reconnects.
TEST_F(Cluster, APeerKilledFailsCallsAtOnceAndComesBack) {
    write_cluster({"a", "b"}, "hb_interval 200ms\nhb_timeout 1\n");
    start_node("a");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    Client pending;
    ASSERT_TRUE(pending.connect(node("a").port()));
    ASSERT_TRUE(pending.send_frame("call b never any 30000 x"));
    // The call is written when b's worker has it; then b dies.
    ASSERT_TRUE(eventually([&] { return call("a", "call b echo any 0 ping") == "S0 C0 ping"; }));
    kill(node("b").pid(), SIGKILL);
    for (pid_t p : node("b").children())
        kill(p, SIGKILL);
    std::string got;
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(pending.recv_frame(&got, seconds(10)));
    EXPECT_EQ(got, "S5 C0 ") << "LINK_LOST: it may have run";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5)) << "not its 30 s deadline";
    // Open circuit: DOWN at once, no connect per call.
    t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(call("a", "call b echo any 5000 x"), "S4 C0 ");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(2));
    nodes_["b"]->wait_exit(seconds(5));
    nodes_.erase("b");
    start_node("b");
    EXPECT_TRUE(eventually([&] { return call("a", "call b echo any 0 again") == "S0 C0 again"; },
                           seconds(20)));
    EXPECT_NE(call("a", "links").find("down:b:5"), std::string::npos);
}

// A node that accepts and never speaks: the first call queues for the connect, and ends
// at its deadline (never a hang); the handshake timeout opens the circuit.
TEST_F(Cluster, ASilentPeerCostsADeadlineNotAHang) {
    uint16_t port = 0;
    int silent = listen_loopback(&port);
    ASSERT_GE(silent, 0);
    ports_["s"] = port;
    write_cluster({"a", "s"}, "handshake_timeout 300ms\n");
    start_node("a");
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(call("a", "call s echo any 1500 x"), "S2 C0 ");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5));
    EXPECT_EQ(call("a", "call s echo any 1500 x"), "S4 C0 ") << "the circuit is open";
    close(silent);
}

// A worker that dies on a request: the caller hears WORKER_DIED (it may have run), and the
// request is not run again by the replacement.
TEST_F(Cluster, ACalleeWorkerThatDiesAnswersWorkerDied) {
    write_cluster({"a", "b"});
    start_node("a");
    start_node("b");
    EXPECT_EQ(call("a", "call b crash 0 5000 x"), "S9 C0 ");
    EXPECT_EQ(call("a", "call b whoami 0 0 x"), "S0 C0 b/0 from a");
    // A worker killed while it holds a request it took (to answer from a timer): its
    // replacement's start tells conn, which answers WORKER_DIED long before the deadline.
    Client held;
    ASSERT_TRUE(held.connect(node("a").port()));
    ASSERT_TRUE(held.send_frame("call b later 1 30000 20000"));
    // The request is in b's worker 1 once a call behind it on the same pair (the same
    // client, so the same worker of a) is answered.
    ASSERT_TRUE(held.send_frame("call b whoami 1 0 x"));
    std::string got;
    ASSERT_TRUE(held.recv_frame(&got, seconds(10)));
    ASSERT_EQ(got, "S0 C0 b/1 from a");
    kill(node("b").child("asyncd-work1"), SIGKILL);
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(held.recv_frame(&got, seconds(15)));
    EXPECT_EQ(got, "S9 C0 ");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(10));
}

// asyncd -t checks the cluster file with the rest: its errors name file and line.
TEST_F(Cluster, DashTChecksTheClusterFile) {
    write_cluster({"a", "b"});
    std::string conf = dir_ + "/a.conf";
    std::ofstream(conf) << "plugin " << plugin_path("nodes.so") << "\nnode_name a\ncluster " << dir_
                        << "/cluster.conf\n";
    std::string out;
    EXPECT_EQ(run_shell(shell_quote(asyncd_bin()) + " -t -c " + shell_quote(conf), &out), 0) << out;
    std::ofstream(dir_ + "/cluster.conf", std::ios::app) << "node c nowhere\n";
    EXPECT_EQ(run_shell(shell_quote(asyncd_bin()) + " -t -c " + shell_quote(conf), &out), 1);
    EXPECT_NE(out.find("cluster.conf:3: node c: bad address"), std::string::npos) << out;
    std::ofstream(conf) << "plugin " << plugin_path("nodes.so") << "\nnode_name zz\ncluster "
                        << dir_ << "/cluster.conf\n";
    EXPECT_EQ(run_shell(shell_quote(asyncd_bin()) + " -t -c " + shell_quote(conf), &out), 1);
    std::ofstream(conf) << "plugin " << plugin_path("nodes.so") << "\nnode_name a\n";
    EXPECT_EQ(run_shell(shell_quote(asyncd_bin()) + " -t -c " + shell_quote(conf), &out), 1);
    EXPECT_NE(out.find("node_name needs cluster"), std::string::npos) << out;
}

// Two nodes that configure different max_frame: parts are cut at the smaller, and a
// reload's call_timeout reaches the workers.
TEST_F(Cluster, NodesWithDifferentOptionsStillTalk) {
    write_cluster({"a", "b"}, "max_frame 16K\n");
    std::ofstream(dir_ + "/cluster-a.conf")
        << "node a 127.0.0.1:" << ports_["a"] << "\nnode b 127.0.0.1:" << ports_["b"]
        << "\nmax_frame 1M\n";
    auto a = std::make_unique<Server>("workers 2\nplugin " + plugin_path("nodes.so") +
                                      "\nnode_name a\ncluster " + dir_ + "/cluster-a.conf\n");
    std::string why;
    ASSERT_TRUE(a->start(&why)) << why;
    nodes_["a"] = std::move(a);
    start_node("b");
    EXPECT_EQ(call("a", "big b 900000 0"), "S0 900000 ok");
    EXPECT_EQ(call("b", "big a 900000 0"), "S0 900000 ok");
    EXPECT_EQ(call("a", "call b echo any 0 still"), "S0 C0 still");
    // call_timeout 300ms by a reload: node_call's default deadline in the running workers.
    std::ofstream(dir_ + "/cluster-a.conf", std::ios::app) << "call_timeout 300ms\n";
    kill(node("a").pid(), SIGHUP);
    ASSERT_TRUE(node("a").wait_log("cluster reload: ", 1, seconds(10)));
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(call("a", "call b never any 0 x"), "S2 C0 ");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(3)) << "not the old 5 s";
}

// A stopping caller: its workers' calls still out get their callbacks, once each (the
// answer if it comes in time, else STOPPING), before the workers go.
TEST_F(Cluster, AStoppingCallerRunsEveryCallback) {
    write_cluster({"a", "b"});
    std::string events = dir_ + "/a-events.log";
    start_node("a", "plugin.event_log " + events + "\n");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    Client c;
    ASSERT_TRUE(c.connect(node("a").port()));
    std::string batch;
    for (int i = 0; i < 20; i++)
        batch += frame("call b later any 10000 600");
    ASSERT_TRUE(c.send_all(batch.data(), batch.size()));
    ASSERT_TRUE(c.send_frame("call b later any 10000 1"));
    std::string got;
    ASSERT_TRUE(c.recv_frame(&got, seconds(10)));  // the last is answered first: all are out
    kill(node("a").pid(), SIGTERM);
    EXPECT_EQ(node("a").wait_exit(seconds(20)), 0);
    std::ifstream in(events);
    int done = 0, ok = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("done ", 0) != 0) continue;
        done++;
        if (line == "done 0") ok++;
    }
    EXPECT_EQ(done, 1 + 1 + 20) << "each callback once (the first call, the last, and 20)";
    EXPECT_EQ(ok, 22) << "600 ms is well within the stop";
}

// A stopping callee keeps answering what it holds past two heartbeat timeouts: the GOAWAY
// tells the caller how long (the stop's own deadline).
TEST_F(Cluster, AStoppingCalleeIsWaitedForPastTheHeartbeat) {
    write_cluster({"a", "b"}, "hb_interval 200ms\nhb_timeout 1\n");
    start_node("a");
    start_node("b", "shutdown_timeout 10\n");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    Client c;
    ASSERT_TRUE(c.connect(node("a").port()));
    std::string batch;
    for (int i = 0; i < 10; i++)
        batch += frame("call b later 0 20000 3000");
    ASSERT_TRUE(c.send_all(batch.data(), batch.size()) && c.send_frame("call b echo 0 20000 e"));
    std::string got;
    ASSERT_TRUE(c.recv_frame(&got, seconds(10)));
    ASSERT_EQ(got, "S0 C0 e");  // behind the ten on the same pair: b's worker 0 holds them
    kill(node("b").pid(), SIGTERM);
    int late = 0;
    for (int i = 0; i < 10; i++) {
        ASSERT_TRUE(c.recv_frame(&got, seconds(15)));
        if (got == "S0 C0 late") late++;
    }
    EXPECT_EQ(late, 10) << "answered at 3 s, past 2 x hb_timeout";
}

// "." works without a cluster file: a call to another worker of this node.
TEST(LocalCalls, WorkWithoutAClusterFile) {
    Server s("workers 2\nplugin " + plugin_path("nodes.so") + "\n");
    std::string why;
    ASSERT_TRUE(s.start(&why)) << why;
    Client c;
    ASSERT_TRUE(c.connect(s.port()));
    std::string got;
    ASSERT_TRUE(c.send_frame("call . whoami 1 0 x") && c.recv_frame(&got));
    EXPECT_EQ(got, "S0 C0 /1 from ");
    ASSERT_TRUE(c.send_frame("call b echo any 0 x") && c.recv_frame(&got));
    EXPECT_EQ(got, "S3 C0 ") << "no cluster: every other name is UNKNOWN";
    ASSERT_TRUE(c.send_frame("name") && c.recv_frame(&got));
    EXPECT_EQ(got, "");
    EXPECT_TRUE(s.unexpected_lines().empty());
}

// A node of the file played by the test: it links with a real HELLO, then sends what it
// likes.
class FakeNode {
  public:
    bool link(uint16_t port, const std::string &name) {
        if (!c_.connect(port)) return false;
        cluster::Hello h;
        h.workers = 1;
        h.max_frame = 256 << 10;
        h.max_message = 16 << 20;
        h.incarnation = 77;
        h.node = name;
        for (size_t i = 0; i < cluster::kNonceLen; i++)
            h.nonce[i] = uint8_t(i * 13 + 1);
        std::string hello = cluster::encode_hello(cluster::FrameType::kHello, h);
        if (!c_.send_all(hello.data(), hello.size())) return false;
        uint8_t head[cluster::kFrameHeaderLen];
        if (!c_.recv_exact(head, sizeof head, seconds(5))) return false;
        cluster::FrameHeader fh;
        const char *why = nullptr;
        if (cluster::decode_header(head, sizeof head, 1 << 20, &fh, &why) != cluster::Decode::kOk)
            return false;
        std::string body(fh.body_len(), '\0');
        return c_.recv_exact(&body[0], body.size(), seconds(5)) &&
               fh.type == cluster::FrameType::kHelloAck;
    }
    bool send(cluster::FrameType type, uint64_t session, const std::string &service,
              const std::string &payload, uint32_t word = 0) {
        cluster::FrameHeader h;
        h.type = type;
        h.session = session;
        h.word = word;
        std::string f = cluster::encode_frame(h, service, payload);
        return c_.send_all(f.data(), f.size());
    }
    Client &client() { return c_; }

  private:
    Client c_;
};

// C9: a node answering calls it was never given (made to another node, or never made):
// its link is closed, and the caller waits for its real answer.
TEST_F(Cluster, ANodeCannotAnswerCallsMadeToAnother) {
    write_cluster({"a", "b", "c"}, "hb_timeout 30\n");
    start_node("a");
    start_node("b");
    Client caller;
    ASSERT_TRUE(caller.connect(node("a").port()));
    ASSERT_TRUE(caller.send_frame("call b later any 5000 800"));
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");  // the link is up, the call out
    FakeNode c;
    ASSERT_TRUE(c.link(uint16_t(ports_["a"]), "c"));
    for (uint64_t session = 1; session < 40; session++)
        c.send(cluster::FrameType::kReply, session, "", "SPOOFED");
    EXPECT_TRUE(c.client().wait_closed(seconds(5))) << "the forging link is closed";
    std::string got;
    ASSERT_TRUE(caller.recv_frame(&got, seconds(10)));
    EXPECT_EQ(got, "S0 C0 late") << "the real answer, from b";
    EXPECT_TRUE(node("a").wait_log("never issued to this node", 1, seconds(5)));
    EXPECT_TRUE(node("a").wait_log("(127.0.0.1:", 1, seconds(1))) << "the line names the peer";
}

// A graceful stop of the callee: the calls its workers hold are answered before it goes.
TEST_F(Cluster, AStoppingCalleeAnswersWhatItHolds) {
    write_cluster({"a", "b"});
    start_node("a");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    Client c;
    ASSERT_TRUE(c.connect(node("a").port()));
    std::string batch;
    for (int i = 0; i < 50; i++)
        batch += frame("call b later any 15000 700");
    ASSERT_TRUE(c.send_all(batch.data(), batch.size()));
    // Every one taken by b's workers before the stop: an echo on each worker pair behind them.
    ASSERT_TRUE(c.send_frame("call b echo 0 15000 e0") && c.send_frame("call b echo 1 15000 e1"));
    std::map<std::string, int> seen;
    std::string got;
    for (int i = 0; i < 2; i++) {
        ASSERT_TRUE(c.recv_frame(&got, seconds(10)));
        seen[got]++;
    }
    ASSERT_EQ(seen["S0 C0 e0"] + seen["S0 C0 e1"], 2);
    kill(node("b").pid(), SIGTERM);
    for (int i = 0; i < 50; i++) {
        ASSERT_TRUE(c.recv_frame(&got, seconds(15))) << i;
        seen[got]++;
    }
    EXPECT_EQ(seen["S0 C0 late"], 50);
    EXPECT_EQ(node("b").wait_exit(seconds(15)), 0);
    EXPECT_EQ(call("a", "call b echo any 0 x"), "S4 C0 ") << "gone: DOWN at once";
}

// C8: a flood of large calls to a node that has stopped answering (SIGSTOP): conn holds at
// its bounds (queue_bytes), the excess ends QUEUE_FULL at once, and conn's memory stays flat.
TEST_F(Cluster, AFloodToAStalledNodeStaysWithinItsBounds) {
    write_cluster({"a", "b"}, "queue_bytes 8M\nhb_timeout 30\n");
    start_node("a");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    std::vector<pid_t> b_all = node("b").children();
    b_all.push_back(node("b").pid());
    for (pid_t p : b_all)
        kill(p, SIGSTOP);
    Client c;
    ASSERT_TRUE(c.connect(node("a").port()));
    std::string batch;
    const int kCalls = 200;
    for (int i = 0; i < kCalls; i++)
        batch += frame("big b 1000000 3000");
    ASSERT_TRUE(c.send_all(batch.data(), batch.size()));
    std::map<std::string, int> seen;
    for (int i = 0; i < kCalls; i++) {
        std::string got;
        ASSERT_TRUE(c.recv_frame(&got, seconds(20))) << i;
        seen[got.substr(0, 2)]++;
    }
    for (pid_t p : b_all)
        kill(p, SIGCONT);
    EXPECT_GT(seen["S6"], kCalls / 2) << "QUEUE_FULL past the bound";
    EXPECT_EQ(seen["S6"] + seen["S2"], kCalls) << "the rest time out: nothing else";
    long hwm_kb = status_kib(node("a").child("asyncd-conn"), "VmHWM");
    EXPECT_GT(hwm_kb, 0) << "conn's peak RSS could not be read";
    EXPECT_LT(hwm_kb, 120L << 10) << "conn's peak RSS, KiB";
    EXPECT_TRUE(eventually([&] { return call("a", "call b echo any 0 back") == "S0 C0 back"; },
                           seconds(20)));
}

// Both nodes call each other the moment they start: one link, and both calls answered.
TEST_F(Cluster, ASimultaneousFirstConnectLosesNoCall) {
    for (int round = 0; round < 5; round++) {
        nodes_.clear();
        ports_.clear();
        write_cluster({"a", "b"});
        start_node("a");
        start_node("b");
        Client ca, cb;
        ASSERT_TRUE(ca.connect(node("a").port()) && cb.connect(node("b").port()));
        ASSERT_TRUE(ca.send_frame("call b echo any 0 x") && cb.send_frame("call a echo any 0 y"));
        std::string x, y;
        ASSERT_TRUE(ca.recv_frame(&x) && cb.recv_frame(&y));
        EXPECT_EQ(x, "S0 C0 x") << "round " << round;
        EXPECT_EQ(y, "S0 C0 y") << "round " << round;
    }
}

// C12: a message in parts does not hold up another worker's: a peer that has not read yet
// (its socket fills) gets a small call from a's worker 1 between the parts of a 15 MB call
// from a's worker 0, and every part of that one in order.
TEST_F(Cluster, PartsOfALargeMessageLetOtherStreamsThrough) {
    uint16_t port = 0;
    int lfd = listen_loopback(&port, 4);
    ASSERT_GE(lfd, 0);
    ports_["c"] = port;
    write_cluster({"a", "c"}, "max_frame 16K\nmax_message 16M\n");
    int admin = free_port();
    start_node("a", "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    Client big, small;
    ASSERT_TRUE(big.connect(node("a").port()) && small.connect(node("a").port()));
    ASSERT_TRUE(big.send_frame("big c 15000000 20000"));
    // The peer takes the link, answers the HELLO, and reads nothing more for now.
    struct pollfd p = {lfd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1);
    Client peer;
    peer.adopt(accept(lfd, nullptr, nullptr));
    uint8_t head[cluster::kFrameHeaderLen];
    cluster::FrameHeader fh;
    const char *why = nullptr;
    ASSERT_TRUE(peer.recv_exact(head, sizeof head, seconds(10)));
    ASSERT_EQ(cluster::decode_header(head, sizeof head, 1 << 20, &fh, &why), cluster::Decode::kOk);
    std::string body(fh.body_len(), '\0');
    ASSERT_TRUE(peer.recv_exact(&body[0], body.size(), seconds(10)));
    cluster::Hello theirs, mine;
    ASSERT_TRUE(cluster::decode_hello(reinterpret_cast<const uint8_t *>(body.data()), body.size(),
                                      &theirs, &why));
    mine.workers = 1;
    mine.max_frame = 16 << 10;
    mine.max_message = 16 << 20;
    mine.incarnation = 5;
    mine.node = "c";
    std::string ack = cluster::encode_hello(cluster::FrameType::kHelloAck, mine);
    ASSERT_TRUE(peer.send_all(ack.data(), ack.size()));
    // The big call is being written (its parts fill the socket); then the small one.
    ASSERT_TRUE(small.send_frame("call c echo any 20000 tiny"));
    // Both calls are in conn before the peer reads a byte more.
    ASSERT_TRUE(eventually([&] {
        auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_node_calls_out_total{node=\"c\"}"] == 2;
    }));
    int parts = 0, small_at = -1, big_last = -1;
    uint16_t big_stream = 0xFFFF;
    for (int i = 0; i < 20000 && big_last < 0; i++) {
        ASSERT_TRUE(peer.recv_exact(head, sizeof head, seconds(20))) << "frame " << i;
        ASSERT_EQ(cluster::decode_header(head, sizeof head, 1 << 20, &fh, &why),
                  cluster::Decode::kOk)
            << why;
        body.assign(fh.body_len(), '\0');
        ASSERT_TRUE(peer.recv_exact(&body[0], body.size(), seconds(20)));
        if (fh.type == cluster::FrameType::kCall && (fh.flags & cluster::kFlagMore)) {
            big_stream = fh.stream;
        } else if (fh.type == cluster::FrameType::kCall) {
            small_at = i;
            EXPECT_NE(body.find("tiny"), std::string::npos);
        } else if (fh.type == cluster::FrameType::kPart) {
            EXPECT_EQ(fh.stream, big_stream);
            parts++;
            if (!(fh.flags & cluster::kFlagMore)) big_last = i;
        }
    }
    EXPECT_GT(parts, 800);
    EXPECT_GE(small_at, 0) << "the small call never came";
    EXPECT_LT(small_at, big_last) << "it waited behind the whole large message";
    close(lfd);
}

// A TCP proxy between two nodes, run by the test: it forwards, or drops everything
// (a blackhole), or stops forwarding one way (a stall), or cuts the link after forwarding
// part of a frame.
class Proxy {
  public:
    enum Mode { kForward, kBlackhole, kStallToB, kCutMidFrame };
    explicit Proxy(uint16_t to) : to_(to) {
        lfd_ = listen_loopback(&port_, 8);
        thread_ = std::thread([this] { run(); });
    }
    ~Proxy() {
        stop_ = true;
        thread_.join();
        close(lfd_);
    }
    uint16_t port() const { return port_; }
    void set(Mode m) { mode_ = m; }

  private:
    void run() {
        int a = -1, b = -1;
        auto drop = [&] {
            if (a >= 0) close(a);
            if (b >= 0) close(b);
            a = b = -1;
        };
        // Bounded: the test ends it long before.
        for (int turn = 0; turn < 600000 && !stop_; turn++) {
            struct pollfd p[3] = {{lfd_, POLLIN, 0}, {a, POLLIN, 0}, {b, POLLIN, 0}};
            if (poll(p, 3, 20) <= 0) continue;
            if (p[0].revents & POLLIN) {
                drop();
                a = accept(lfd_, nullptr, nullptr);
                b = socket(AF_INET, SOCK_STREAM, 0);
                struct sockaddr_in sa = {};
                sa.sin_family = AF_INET;
                sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                sa.sin_port = htons(to_);
                if (connect(b, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) drop();
                continue;
            }
            for (int side = 1; side <= 2; side++) {
                if (!(p[side].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                int from = side == 1 ? a : b, to = side == 1 ? b : a;
                Mode m = mode_;
                if (m == kStallToB && side == 1) continue;  // a's bytes wait in the socket
                char buf[65536];
                ssize_t n = read(from, buf, sizeof buf);
                if (n <= 0) {
                    drop();
                    break;
                }
                if (m == kBlackhole) continue;
                if (m == kCutMidFrame && n > 8) {
                    (void)!write(to, buf, size_t(n) / 2);  // half of what came, then the cut
                    drop();
                    break;
                }
                (void)!write(to, buf, size_t(n));
            }
        }
        drop();
    }
    uint16_t to_, port_ = 0;
    int lfd_ = -1;
    std::atomic<Mode> mode_{kForward};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// C4: a link through a proxy that goes bad: each way of going bad is seen within
// hb_timeout (plus an interval), the calls on it end (LINK_LOST), never half a message
// reaches a worker, and the link comes back when the path does.
TEST_F(Cluster, ALinkThatGoesBadIsSeenWithinTheHeartbeatTimeout) {
    for (Proxy::Mode mode : {Proxy::kBlackhole, Proxy::kStallToB, Proxy::kCutMidFrame}) {
        nodes_.clear();
        ports_.clear();
        ports_["a"] = free_port();
        ports_["b"] = free_port();
        Proxy proxy{static_cast<uint16_t>(ports_["b"])};
        const std::string opts = "hb_interval 200ms\nhb_timeout 1\n";
        write_cluster({"a", "b"}, opts);  // b's own file: its real address
        start_node("b");
        {
            std::ofstream f(dir_ + "/cluster-a.conf");
            f << "node a 127.0.0.1:" << ports_["a"] << "\nnode b 127.0.0.1:" << proxy.port() << "\n"
              << opts;
        }
        auto a = std::make_unique<Server>("workers 2\nplugin " + plugin_path("nodes.so") +
                                          "\nnode_name a\ncluster " + dir_ + "/cluster-a.conf\n");
        std::string why;
        ASSERT_TRUE(a->start(&why)) << why;
        nodes_["a"] = std::move(a);
        ASSERT_EQ(call("a", "big b 300000 10000"), "S0 300000 ok") << "through the proxy";
        Client pending;
        ASSERT_TRUE(pending.connect(node("a").port()));
        proxy.set(mode);
        auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(pending.send_frame("big b 3000000 20000"));
        std::string got;
        ASSERT_TRUE(pending.recv_frame(&got, seconds(15))) << "mode " << int(mode);
        auto took = std::chrono::steady_clock::now() - t0;
        EXPECT_TRUE(got == "S5 0 ok" || got == "S4 0 ok") << "mode " << int(mode) << ": " << got;
        EXPECT_LT(took, milliseconds(1200 + 1500)) << "mode " << int(mode);
        proxy.set(Proxy::kForward);
        EXPECT_TRUE(eventually([&] { return call("a", "big b 300000 5000") == "S0 300000 ok"; },
                               seconds(20)))
            << "mode " << int(mode);
        EXPECT_EQ(node("b").count_log("bad"), 0);
    }
}

// A peer that sends calls and never reads the answers: once its output passes queue_bytes,
// its new calls are answered BUSY (a small answer, not the work), so conn's memory stays
// bounded; its silence then kills the link.
TEST_F(Cluster, APeerThatNeverReadsIsBounded) {
    write_cluster({"a", "b", "c"}, "queue_bytes 4M\nhb_interval 200ms\nhb_timeout 1\n");
    start_node("a");
    start_node("b");
    FakeNode c;
    ASSERT_TRUE(c.link(uint16_t(ports_["a"]), "c"));
    std::string body(200000, 'x');
    int sent = 0;
    for (int i = 1; i <= 3000; i++) {
        cluster::FrameHeader h;
        h.type = cluster::FrameType::kCall;
        h.session = uint64_t(i);
        h.word = 30000;
        std::string f = cluster::encode_frame(h, "echo", body);
        // The socket fills once conn stops reading: then it is enough.
        struct pollfd p = {c.client().fd(), POLLOUT, 0};
        if (poll(&p, 1, 2000) != 1) break;
        if (!c.client().send_all(f.data(), f.size())) break;
        sent++;
    }
    EXPECT_GT(sent, 0);
    long hwm_kb = status_kib(node("a").child("asyncd-conn"), "VmHWM");
    EXPECT_GT(hwm_kb, 0) << "conn's peak RSS could not be read";
    EXPECT_LT(hwm_kb, 150L << 10) << "conn's peak RSS, KiB";
    EXPECT_TRUE(c.client().wait_closed(seconds(10))) << "declared dead";
    EXPECT_EQ(call("a", "call b echo any 0 fine"), "S0 C0 fine");
}

// Hostile bytes on the cluster port: the link is refused, the node serves on.
TEST_F(Cluster, GarbageOnTheClusterPortIsRefused) {
    write_cluster({"a", "b"});
    start_node("a");
    start_node("b");
    // Not a frame; a length far above max_frame; a CALL before any handshake.
    const std::vector<std::string> junk = {
        "GET / HTTP/1.0\r\n\r\n" + std::string(40, ' '),
        std::string("\xff\xff\xff\xff\x01\x00\x00\x00", 8) + std::string(24, '\0'),
        std::string("\x00\x00\x00\x1c\x03\x00\x00\x00", 8) + std::string(7, '\0') + "\x01" +
            std::string(16, '\0'),
    };
    for (const std::string &j : junk) {
        Client c;
        ASSERT_TRUE(c.connect(uint16_t(ports_["a"])));
        c.send_all(j.data(), j.size());
        EXPECT_TRUE(c.wait_closed(seconds(5))) << "junk must get the link closed";
    }
    EXPECT_EQ(call("a", "call b echo any 0 fine"), "S0 C0 fine");
    EXPECT_EQ(call("b", "call a echo any 0 fine"), "S0 C0 fine");
}

// With a secret, a node with another secret cannot link; with the same one it can.
TEST_F(Cluster, ASharedSecretKeepsOutAnotherCluster) {
    {
        std::ofstream(dir_ + "/k1") << "0123456789abcdef-one";
        std::ofstream(dir_ + "/k2") << "0123456789abcdef-two";
    }
    write_cluster({"a", "b"}, "secret_file k1\n");
    start_node("a");
    // b reads its own copy of the file, with another key.
    std::string a_file = dir_ + "/cluster.conf";
    std::string b_file = dir_ + "/cluster-b.conf";
    run_shell("sed 's/k1/k2/' " + shell_quote(a_file) + " > " + shell_quote(b_file));
    auto b = std::make_unique<Server>("workers 1\nplugin " + plugin_path("nodes.so") +
                                      "\nnode_name b\ncluster " + b_file + "\n");
    std::string why;
    ASSERT_TRUE(b->start(&why)) << why;
    nodes_["b"] = std::move(b);
    std::string got = call("a", "call b echo any 1000 x");
    EXPECT_TRUE(got == "S2 C0 " || got == "S4 C0 ") << got;
    EXPECT_TRUE(node("a").wait_log("secret", 1, seconds(5)) ||
                node("b").wait_log("secret", 1, seconds(5)));
}

}  // namespace
}  // namespace asyncd::test
