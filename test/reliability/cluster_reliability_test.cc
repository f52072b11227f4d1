// The cluster's failure scenarios under load (RELIABILITY.md C1, C2, C3, C7), with their
// figures: hundreds of calls in flight when the callee, its link or the caller's conn
// goes, every one accounted for, and how long each failure took to see.
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "test/blackbox/cluster_fixture.h"
#include "test/reliability/probe.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class ClusterReliability : public ClusterTest {
  protected:
    // n calls from `clients` clients of a, each `cmd`, all written before this returns;
    // they are in flight (conn a holds them: its metrics say so) when it returns true.
    bool fill(std::vector<Client> *clients, int n, const std::string &cmd, int admin) {
        for (int i = 0; i < n; i++) {
            Client &c = (*clients)[size_t(i) % clients->size()];
            if (!c.send_frame(cmd)) return false;
        }
        return eventually([&] {
            auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
            return m["asyncd_node_pending_calls_out{node=\"b\"}"] == n;
        });
    }
    // Every answer to the n calls, by text; false if one is missing.
    bool collect(std::vector<Client> *clients, int n, std::map<std::string, int> *seen) {
        for (int i = 0; i < n; i++) {
            std::string got;
            if (!(*clients)[size_t(i) % clients->size()].recv_frame(&got, seconds(30)))
                return false;
            (*seen)[got]++;
        }
        return true;
    }
    std::vector<Client> clients_of(const std::string &name, int k) {
        std::vector<Client> v(static_cast<size_t>(k));
        for (Client &c : v)
            EXPECT_TRUE(c.connect(node(name).port()));
        return v;
    }
    void kill_tree(const std::string &name, int sig) {
        for (pid_t p : node(name).children())
            kill(p, sig);
        kill(node(name).pid(), sig);
    }
    int calls_in_flight() const { return 100 * (long_run() ? 5 : 1); }
    // Nodes a (with admin_listen at *admin) and b, quick heartbeats, and calls_in_flight()
    // calls from four clients of a held by b's workers.
    void load_a_pair(int *admin, std::vector<Client> *cs) {
        write_cluster({"a", "b"}, "hb_interval 200ms\nhb_timeout 1\n");
        *admin = free_port();
        start_node("a", "admin_listen 127.0.0.1:" + std::to_string(*admin) + "\n");
        start_node("b");
        ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
        *cs = clients_of("a", 4);
        ASSERT_TRUE(fill(cs, calls_in_flight(), "call b later any 30000 20000", *admin));
    }
};

std::string tally(const std::map<std::string, int> &seen) {
    std::string out;
    for (const auto &e : seen)
        out += (out.empty() ? "" : ", ") + std::to_string(e.second) + "x \"" + e.first + "\"";
    return out;
}

// C1 and C2: the callee killed with calls in flight; then restarted.
TEST_F(ClusterReliability, C1C2CalleeKilledUnderLoadThenBack) {
    int admin = 0;
    std::vector<Client> cs;
    ASSERT_NO_FATAL_FAILURE(load_a_pair(&admin, &cs));
    const int n = calls_in_flight();
    auto t0 = Clock::now();
    kill_tree("b", SIGKILL);
    std::map<std::string, int> seen;
    ASSERT_TRUE(collect(&cs, n, &seen));
    double fail_ms = ms_since(t0);
    EXPECT_EQ(seen["S5 C0 "], n) << tally(seen);
    auto t1 = Clock::now();
    EXPECT_EQ(call("a", "call b echo any 5000 x"), "S4 C0 ");
    double fast_ms = ms_since(t1);
    figure("C1", std::to_string(n) + " calls in flight: all ended LINK_LOST within " +
                     std::to_string(int(fail_ms)) +
                     " ms of the kill, 0 lost; a new call ended "
                     "DOWN in " +
                     std::to_string(int(fast_ms * 1000)) + " us");
    // C2: back by the caller's own back-off timer (calls never start a connect: while the
    // circuit is open they end DOWN at once).
    nodes_["b"]->wait_exit(seconds(5));
    nodes_.erase("b");
    start_node("b");
    auto t2 = Clock::now();
    int down = 0;
    EXPECT_TRUE(eventually(
        [&] {
            std::string got = call("a", "call b echo any 0 again");
            if (got == "S4 C0 ") down++;
            return got == "S0 C0 again";
        },
        seconds(30)));
    double relink_ms = ms_since(t2);
    figure("C2", "the restarted callee was called again " + std::to_string(int(relink_ms)) +
                     " ms after it was ready (the back-off timer's reconnect; " +
                     std::to_string(down) + " calls meanwhile ended DOWN at once)");
}

// C3: the callee stopped (SIGSTOP): its link is declared dead within hb_timeout plus an
// interval, the calls on it end, and it comes back after SIGCONT.
TEST_F(ClusterReliability, C3CalleeStoppedThenContinued) {
    int admin = 0;
    std::vector<Client> cs;
    ASSERT_NO_FATAL_FAILURE(load_a_pair(&admin, &cs));
    const int n = calls_in_flight();
    auto t0 = Clock::now();
    kill_tree("b", SIGSTOP);
    std::map<std::string, int> seen;
    ASSERT_TRUE(collect(&cs, n, &seen));
    double dead_ms = ms_since(t0);
    EXPECT_EQ(seen["S5 C0 "], n) << tally(seen);
    EXPECT_LT(dead_ms, 1200 + 1000) << "hb_timeout 1 s plus an interval, and some slack";
    EXPECT_EQ(call("a", "call b echo any 5000 x"), "S4 C0 ");
    kill_tree("b", SIGCONT);
    auto t1 = Clock::now();
    EXPECT_TRUE(eventually([&] { return call("a", "call b echo any 0 back") == "S0 C0 back"; },
                           seconds(30)));
    figure("C3", "stopped callee declared dead " + std::to_string(int(dead_ms)) +
                     " ms after SIGSTOP (hb_timeout 1 s): " + std::to_string(n) +
                     " calls ended LINK_LOST, 0 left pending; back " +
                     std::to_string(int(ms_since(t1))) + " ms after SIGCONT");
}

// C6: the caller's worker killed with calls pending: its replacement drops their late
// results and counts them; the other worker's calls are not touched.
TEST_F(ClusterReliability, C6CallersWorkerKilled) {
    write_cluster({"a", "b"});
    int admin = free_port();
    start_node("a", "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    Client c0, c1;  // bound round-robin: one to each of a's workers
    ASSERT_TRUE(c0.connect(node("a").port()) && c1.connect(node("a").port()));
    std::string got, other;
    ASSERT_TRUE(c0.send_frame("worker") && c0.recv_frame(&got));
    ASSERT_TRUE(c1.send_frame("worker") && c1.recv_frame(&other));
    ASSERT_NE(got, other);
    Client &w0 = got == "0" ? c0 : c1;  // the victim's client
    Client &w1 = got == "0" ? c1 : c0;
    const int n = calls_in_flight() / 2;
    std::string batch;
    for (int i = 0; i < n; i++)
        batch += frame("call b later any 10000 800");
    ASSERT_TRUE(w0.send_all(batch.data(), batch.size()) && w1.send_all(batch.data(), batch.size()));
    ASSERT_TRUE(eventually([&] {
        auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_node_pending_calls_out{node=\"b\"}"] == 2 * n;
    }));
    pid_t victim = node("a").child("asyncd-work0");
    kill(victim, SIGKILL);
    std::map<std::string, int> seen;
    for (int i = 0; i < n; i++) {
        ASSERT_TRUE(w1.recv_frame(&got, seconds(20))) << i;
        seen[got]++;
    }
    EXPECT_EQ(seen["S0 C0 late"], n) << "the other worker's calls";
    double dropped = 0;
    EXPECT_TRUE(eventually(
        [&] {
            auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
            dropped = m["asyncd_worker_node_results_dropped_total{worker=\"0\"}"];
            return dropped == n;
        },
        seconds(20)));
    figure("C6", "caller's worker killed with " + std::to_string(n) +
                     " calls pending: " + std::to_string(int(dropped)) +
                     " late results dropped by its replacement, "
                     "the other worker's " +
                     std::to_string(n) + " calls all answered");
}

// C7: the caller's conn killed: its workers' calls end LINK_LOST (each callback once; the
// plugin logs them, since the clients that asked go with conn), and the links come back
// with the new conn.
TEST_F(ClusterReliability, C7CallersConnKilled) {
    write_cluster({"a", "b"});
    int admin = free_port();
    std::string events = dir_ + "/a-events.log";
    start_node("a", "admin_listen 127.0.0.1:" + std::to_string(admin) + "\nplugin.event_log " +
                        events + "\n");
    start_node("b");
    ASSERT_EQ(call("a", "call b echo any 0 up"), "S0 C0 up");
    const int n = calls_in_flight();
    std::vector<Client> cs = clients_of("a", 4);
    ASSERT_TRUE(fill(&cs, n, "call b later any 30000 20000", admin));
    auto t0 = Clock::now();
    kill(node("a").child("asyncd-conn"), SIGKILL);
    auto lost = [&] {
        std::string text = read_text(events);
        int k = 0;
        for (size_t at = text.find("done 5\n"); at != std::string::npos;
             at = text.find("done 5\n", at + 1))
            k++;
        return k;
    };
    EXPECT_TRUE(eventually([&] { return lost() >= n; }, seconds(10)));
    double fail_ms = ms_since(t0);
    EXPECT_EQ(lost(), n) << "each once";
    EXPECT_TRUE(eventually(
        [&] {
            auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
            return m["asyncd_node_up{node=\"b\",state=\"up\"}"] == 1;
        },
        seconds(30)));
    double relink_ms = ms_since(t0);
    EXPECT_EQ(call("a", "call b echo any 0 again"), "S0 C0 again");
    figure("C7", "caller's conn killed with " + std::to_string(n) +
                     " calls in flight: all ended LINK_LOST in the workers within " +
                     std::to_string(int(fail_ms)) + " ms; relinked " +
                     std::to_string(int(relink_ms)) + " ms after the kill");
}

}  // namespace
}  // namespace asyncd::test
