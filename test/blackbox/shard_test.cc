// The RESP plugin sharded over a two-node cluster (plugin.shard_nodes), black-box: two nodes
// of two workers each, driven by redis-cli and by a raw pipelining client; any command to
// either node sees one key space.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"

namespace asyncd::test {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

std::string resp_command(const std::vector<std::string> &args) {
    std::string s = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto &a : args)
        s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    return s;
}

// Reads RESP replies off a blocking client: one reply as text ("+OK", ":3", "$v" for a bulk
// v, "$-1", "-ERR ...", arrays as "*N" then their items joined by ',').
class Replies {
  public:
    explicit Replies(Client *c) : c_(c) {}
    bool line(std::string *out) {
        while (true) {
            size_t nl = buf_.find("\r\n");
            if (nl != std::string::npos) {
                *out = buf_.substr(0, nl);
                buf_.erase(0, nl + 2);
                return true;
            }
            char chunk[65536];
            ssize_t n = recv_some(chunk, sizeof chunk);
            if (n <= 0) return false;
            buf_.append(chunk, size_t(n));
        }
    }
    bool reply(std::string *out) {
        std::string l;
        if (!line(&l)) return false;
        if (l[0] == '$' && l != "$-1") {
            std::string v;
            if (!line(&v)) return false;
            *out = "$" + v;
            return true;
        }
        if (l[0] == '*') {
            long n = atol(l.c_str() + 1);
            std::string all = l;
            for (long i = 0; i < n; i++) {
                std::string item;
                if (!reply(&item)) return false;
                all += (i ? "," : " ") + item;
            }
            *out = all;
            return true;
        }
        *out = l;
        return true;
    }

  private:
    ssize_t recv_some(char *p, size_t cap) {
        struct pollfd pfd = {c_->fd(), POLLIN, 0};
        if (poll(&pfd, 1, 10000) != 1) return -1;
        return recv(c_->fd(), p, cap, 0);
    }
    Client *c_;
    std::string buf_;
};

class ShardedResp : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have_tool("redis-cli")) {
            GTEST_SKIP() << "redis-cli not found: make test installs redis-tools with apt-get "
                            "when it can, and could not here";
        }
        char tmpl[] = "/tmp/asyncd-shard-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        ports_["a"] = free_port();
        ports_["b"] = free_port();
        std::ofstream(dir_ + "/cluster.conf")
            << "node a 127.0.0.1:" << ports_["a"] << "\nnode b 127.0.0.1:" << ports_["b"]
            << "\ncall_timeout 1s\nconnect_timeout 500ms\nhb_interval 200ms\nhb_timeout 1s\n";
        start("a");
        start("b");
    }
    void TearDown() override {
        expect_clean_logs(nodes_);
        nodes_.clear();
        if (!dir_.empty()) run_shell("rm -rf " + shell_quote(dir_));
    }
    void start(const std::string &name) {
        auto s =
            std::make_unique<Server>("workers 2\nframe plugin\nplugin " + plugin_path("resp.so") +
                                     "\nplugin.shard_nodes a,b\nnode_name " + name + "\ncluster " +
                                     dir_ + "/cluster.conf\n" + extra_);
        std::string why;
        ASSERT_TRUE(s->start(&why)) << name << ": " << why;
        nodes_[name] = std::move(s);
    }
    uint16_t port(const std::string &n) { return nodes_.at(n)->port(); }
    std::string cli(const std::string &n, const std::string &args) {
        std::string out;
        run_shell("redis-cli -p " + std::to_string(port(n)) + " " + args + " 2>&1", &out, 30);
        while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
            out.pop_back();
        return out;
    }
    // redis-cli reading its commands from a file: one line of output per reply.
    std::string cli_file(const std::string &n, const std::string &file) {
        std::string out;
        run_shell("redis-cli -p " + std::to_string(port(n)) + " < " + shell_quote(file) + " 2>&1",
                  &out, 120);
        return out;
    }
    // The links are up once a command for a key of each node answers from each side.
    void wait_linked() {
        ASSERT_TRUE(eventually([&] {
            for (int i = 0; i < 20; i++) {
                std::string k = "probe" + std::to_string(i);
                if (cli("a", "SET " + k + " x") != "OK" || cli("b", "GET " + k) != "x")
                    return false;
            }
            return true;
        }));
    }
    void kill_node(const std::string &name) {
        Server &s = *nodes_.at(name);
        std::vector<pid_t> kids = s.children();
        kill(s.pid(), SIGKILL);
        for (pid_t p : kids)
            kill(p, SIGKILL);
        s.wait_exit(seconds(10));
    }

    std::string dir_;
    std::string extra_ = "plugin.shard_max_command 200000\n";
    std::map<std::string, int> ports_;
    std::map<std::string, std::unique_ptr<Server>> nodes_;
};

// SET through one node, GET through the other, for a thousand keys (each pair of commands
// crosses whichever node and worker owns the key).
TEST_F(ShardedResp, SetThroughOneNodeGetThroughTheOther) {
    wait_linked();
    std::ofstream sets(dir_ + "/sets.txt"), gets(dir_ + "/gets.txt");
    for (int i = 0; i < 1000; i++) {
        sets << "SET key:" << i << " value-" << i << "\n";
        gets << "GET key:" << i << "\n";
    }
    sets.close();
    gets.close();
    std::string out = cli_file("a", dir_ + "/sets.txt");
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1000);
    EXPECT_EQ(out.find("ERR"), std::string::npos) << out.substr(0, 500);
    out = cli_file("b", dir_ + "/gets.txt");
    std::string want;
    for (int i = 0; i < 1000; i++)
        want += "value-" + std::to_string(i) + "\n";
    EXPECT_EQ(out, want);
    // Both nodes hold some of them: DBSIZE is the whole key space from either side.
    EXPECT_EQ(cli("a", "DBSIZE"), "1020");
    EXPECT_EQ(cli("b", "DBSIZE"), "1020");
}

// 10,000 mixed commands pipelined on one connection: redis-cli --pipe sees every reply and
// no error, and a raw client's replies come in the order of its commands, as a model of the
// store says they must read.
TEST_F(ShardedResp, TenThousandPipelinedCommandsAreAnsweredInOrder) {
    wait_linked();
    std::mt19937 rng(7);
    std::vector<std::vector<std::string>> cmds;
    for (int i = 0; i < 10000; i++) {
        std::string k = "pk" + std::to_string(rng() % 400);
        unsigned r = rng() % 10;
        if (r < 4) {
            cmds.push_back({"SET", k, "v" + std::to_string(i)});
        } else if (r < 8) {
            cmds.push_back({"GET", k});
        } else if (r < 9) {
            cmds.push_back({"INCR", "ctr" + std::to_string(rng() % 20)});
        } else {
            cmds.push_back({"EXISTS", k});
        }
    }
    {
        std::ofstream f(dir_ + "/pipe.txt");
        for (const auto &c : cmds)
            f << resp_command(c);
    }
    std::string out;
    run_shell("redis-cli -p " + std::to_string(port("a")) + " --pipe < " + dir_ + "/pipe.txt 2>&1",
              &out, 120);
    EXPECT_NE(out.find("errors: 0, replies: 10000"), std::string::npos) << out;

    ASSERT_EQ(cli("b", "FLUSHALL"), "OK");
    Client c;
    ASSERT_TRUE(c.connect(port("a")));
    std::string all;
    for (const auto &cmd : cmds)
        all += resp_command(cmd);
    ASSERT_TRUE(c.send_all(all.data(), all.size()));
    Replies replies(&c);
    std::map<std::string, std::string> model;
    int wrong = 0;
    std::string first_wrong;
    for (size_t i = 0; i < cmds.size(); i++) {
        const auto &cmd = cmds[i];
        std::string want;
        if (cmd[0] == "SET") {
            model[cmd[1]] = cmd[2];
            want = "+OK";
        } else if (cmd[0] == "GET") {
            want = model.count(cmd[1]) ? "$" + model[cmd[1]] : "$-1";
        } else if (cmd[0] == "INCR") {
            model[cmd[1]] = std::to_string(atol(model[cmd[1]].c_str()) + 1);
            want = ":" + model[cmd[1]];
        } else {
            want = model.count(cmd[1]) ? ":1" : ":0";
        }
        std::string got;
        ASSERT_TRUE(replies.reply(&got)) << "no reply to command " << i;
        if (got != want && !wrong++) {
            first_wrong = "command " + std::to_string(i) + " (" + cmd[0] + " " + cmd[1] +
                          "): got " + got + ", want " + want;
        }
    }
    EXPECT_EQ(wrong, 0) << first_wrong;
}

// Multi-key commands over keys of both nodes: split by owner, gathered in order.
TEST_F(ShardedResp, MultiKeyCommandsSpanBothNodes) {
    wait_linked();
    std::string mset = "MSET", mget = "MGET", del = "DEL", want;
    for (int i = 0; i < 20; i++) {
        mset += " m" + std::to_string(i) + " " + std::to_string(i * i);
        mget += " m" + std::to_string(i);
        del += " m" + std::to_string(i);
        want += std::to_string(i * i) + "\n";
    }
    EXPECT_EQ(cli("a", mset), "OK");
    want.pop_back();
    EXPECT_EQ(cli("b", mget), want);
    EXPECT_EQ(cli("b", "MGET absent m3"), "\n9") << "an absent key is nil (an empty line)";
    EXPECT_EQ(cli("b", "EXISTS m0 m1 m19 absent"), "3");
    EXPECT_EQ(cli("a", del + " absent"), "20");
    EXPECT_EQ(cli("b", "EXISTS m0 m1 m19"), "0");
    EXPECT_EQ(cli("a", "MSET odd"), "ERR wrong number of arguments for 'mset' command");
}

// The other node killed: commands for its keys answer -ERR naming it, within the call
// timeout, while this node's own keys keep working; restarted, it is served again.
TEST_F(ShardedResp, AKilledNodeIsAnErrorNamingItAndTheRestKeepsWorking) {
    wait_linked();
    std::ofstream sets(dir_ + "/sets.txt"), gets(dir_ + "/gets.txt");
    for (int i = 0; i < 200; i++) {
        sets << "SET k" << i << " v" << i << "\n";
        gets << "GET k" << i << "\n";
    }
    sets.close();
    gets.close();
    cli_file("a", dir_ + "/sets.txt");
    kill_node("b");
    auto t0 = Clock::now();
    std::string out = cli_file("a", dir_ + "/gets.txt");
    auto took = Clock::now() - t0;
    int errors = 0, values = 0, other = 0;
    size_t at = 0;
    for (int i = 0; i < 200; i++) {
        size_t nl = out.find('\n', at);
        std::string line = out.substr(at, nl - at);
        at = nl + 1;
        if (line.rfind("ERR node b ", 0) == 0) {
            errors++;
            if (out.compare(at, 1, "\n") == 0)
                at++;  // redis-cli follows an error with a blank line
        } else if (line == "v" + std::to_string(i)) {
            values++;
        } else {
            other++;
        }
    }
    EXPECT_GT(errors, 20) << out.substr(0, 400);
    EXPECT_GT(values, 20) << "a's own keys";
    EXPECT_EQ(other, 0) << out.substr(0, 2000);
    EXPECT_LT(took, seconds(30)) << "200 commands, each within the 1 s call timeout at most";
    EXPECT_NE(cli("a", "DBSIZE").find("ERR node b "), std::string::npos);
    start("b");
    EXPECT_TRUE(eventually(
        [&] { return cli_file("a", dir_ + "/sets.txt").find("ERR") == std::string::npos; },
        seconds(15)));
    std::string want;
    for (int i = 0; i < 200; i++)
        want += "v" + std::to_string(i) + "\n";
    EXPECT_EQ(cli_file("a", dir_ + "/gets.txt"), want);
}

// Mass inserts into both nodes at once (two redis-cli --pipe each): every write is answered
// OK. The calls a worker keeps in flight are bounded, and the rest wait in it, in order,
// rather than being answered "busy" by an owner's full ring.
TEST_F(ShardedResp, ConcurrentMassInsertsAreAllAnswered) {
    wait_linked();
    for (int f = 0; f < 4; f++) {
        std::ofstream out(dir_ + "/mass" + std::to_string(f) + ".txt");
        for (int i = 0; i < 100000; i++)
            out << resp_command(
                {"SET", "mass" + std::to_string(f) + ":" + std::to_string(i), std::to_string(i)});
    }
    std::string cmd;
    for (int f = 0; f < 4; f++) {
        cmd += "redis-cli -p " + std::to_string(port(f % 2 ? "b" : "a")) + " --pipe < " + dir_ +
               "/mass" + std::to_string(f) + ".txt > " + dir_ + "/mass" + std::to_string(f) +
               ".out 2>&1 & ";
    }
    cmd += "wait";
    run_shell(cmd, nullptr, 300);
    for (int f = 0; f < 4; f++) {
        std::ifstream in(dir_ + "/mass" + std::to_string(f) + ".out");
        std::string out((std::istreambuf_iterator<char>(in)), {});
        EXPECT_NE(out.find("errors: 0, replies: 100000"), std::string::npos) << f << ": " << out;
    }
    EXPECT_EQ(cli("b", "DBSIZE"), "400020");
}

// QUIT in a pipeline: the answers before it, its +OK, the close; what came after it is not run.
TEST_F(ShardedResp, NothingAfterQuitRuns) {
    wait_linked();
    for (int round = 0; round < 2; round++) {
        Client c;
        ASSERT_TRUE(c.connect(port("a")));
        std::string k = "afterquit" + std::to_string(round);
        std::string in = resp_command({"SET", "q" + std::to_string(round), "1"}) +
                         resp_command({"QUIT"}) + resp_command({"SET", k, "ran"}) +
                         resp_command({"PING"});
        ASSERT_TRUE(c.send_all(in.data(), in.size()));
        std::string got;
        ASSERT_TRUE(c.read_to_close(&got, seconds(10)));
        EXPECT_EQ(got, "+OK\r\n+OK\r\n");
        EXPECT_EQ(cli("b", "EXISTS " + k), "0") << "a command after QUIT ran";
    }
}

// A command above plugin.shard_max_command is refused on every path (so that a value can
// never be stored that cannot be read back through the other node), and the connection
// goes on.
TEST_F(ShardedResp, ACommandAboveTheLimitIsRefusedAndTheConnectionGoesOn) {
    wait_linked();
    Client c;
    ASSERT_TRUE(c.connect(port("a")));
    std::string big(300000, 'x');
    std::string in;
    for (int i = 0; i < 10; i++)
        in += resp_command({"SET", "big" + std::to_string(i), big});
    in += resp_command({"PING"});
    ASSERT_TRUE(c.send_all(in.data(), in.size()));
    Replies r(&c);
    for (int i = 0; i < 10; i++) {
        std::string got;
        ASSERT_TRUE(r.reply(&got));
        EXPECT_NE(got.find("-ERR command of 300"), std::string::npos) << got;
    }
    std::string got;
    ASSERT_TRUE(r.reply(&got));
    EXPECT_EQ(got, "+PONG");
    EXPECT_EQ(cli("b", "EXISTS big0 big1 big2 big3 big4 big5 big6 big7 big8 big9"), "0");
}

// The workers of a node killed while a connection waits for answers from the other node:
// the connection is closed (its answers were in the dead worker's memory), never left
// hanging or answered out of step.
TEST_F(ShardedResp, AConnectionWhoseWorkerDiedWithAnswersOwedIsClosed) {
    wait_linked();
    Client c;
    ASSERT_TRUE(c.connect(port("a")));
    std::string ping = resp_command({"PING"}), pong;
    ASSERT_TRUE(c.send_all(ping.data(), ping.size()));
    Replies first(&c);
    ASSERT_TRUE(first.reply(&pong));
    ASSERT_EQ(pong, "+PONG");
    pid_t bconn = nodes_["b"]->child("asyncd-conn");
    ASSERT_GT(bconn, 0);
    kill(bconn, SIGSTOP);
    std::string in;
    for (int i = 0; i < 40; i++)
        in += resp_command({"GET", "probe" + std::to_string(i % 20)});
    ASSERT_TRUE(c.send_all(in.data(), in.size()));
    for (const char *w : {"asyncd-work0", "asyncd-work1"})
        kill(nodes_["a"]->child(w), SIGKILL);
    std::string got;
    bool closed = c.read_to_close(&got, seconds(15));
    kill(bconn, SIGCONT);
    EXPECT_TRUE(closed) << "the client was left waiting; got: " << got.substr(0, 300);
    EXPECT_EQ(got.find("$-1"), std::string::npos) << "an answer out of step: " << got;
    EXPECT_TRUE(eventually([&] { return cli("a", "SET z 1") == "OK" && cli("b", "GET z") == "1"; },
                           seconds(15)));
}

}  // namespace
}  // namespace asyncd::test
