// Discovery through ZooKeeper, black-box: throwaway ZooKeeper servers (one, or an ensemble of
// three) on loopback, asyncd nodes whose cluster files name only themselves, and the nodes
// test plugin's calls between them. Skipped, with the reason, where ZooKeeper's jars, java or
// the module are missing (make test installs the packages and builds the module).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"

namespace asyncd::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

const char *const kJars[] = {"/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-log4j12.jar",
                             "/usr/share/java/log4j-1.2.jar"};

bool exists(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

std::string dir_name(const std::string &p) {
    size_t slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

// The module the tests load: ASYNCD_ZK_MODULE (make test sets it), else beside the binary
// or one folder up (the sanitizer build's binary is in build/san/).
std::string zk_module() {
    if (const char *m = getenv("ASYNCD_ZK_MODULE")) return m;
    std::string d = dir_name(asyncd_bin());
    for (const std::string &p : {d + "/asyncd_zk.so", d + "/../asyncd_zk.so"}) {
        if (exists(p)) return p;
    }
    return "";
}

// zk-tool, built beside the module: the tests' other ZooKeeper writer.
std::string zk_tool() {
    return dir_name(zk_module()) + "/zk-tool";
}

std::string why_skipped() {
    for (const char *j : kJars) {
        if (!exists(j)) return std::string(j) + " not found (apt-get install zookeeper)";
    }
    if (!have_tool("java")) return "java not found (apt-get install zookeeper)";
    std::string m = zk_module();
    if (m.empty() || !exists(m)) return "the discovery module asyncd_zk.so is not built";
    if (!exists(zk_tool())) return zk_tool() + " is not built";
    return "";
}

// What `srvr` says on the server at port, or "" when it does not answer.
std::string four_letters(uint16_t port, const std::string &word) {
    Client c;
    if (!c.connect(port) || !c.send_all(word.data(), word.size())) return "";
    std::string out;
    c.read_to_close(&out, seconds(2));
    return out;
}

// A throwaway ZooKeeper server, or one of an ensemble.
class ZkServer {
  public:
    ZkServer(std::string dir, int id, uint16_t client_port, std::string peers)
        : dir_(std::move(dir)), id_(id), port_(client_port), peers_(std::move(peers)) {}
    ~ZkServer() { kill_now(SIGKILL); }

    void start() {
        run_shell("mkdir -p " + shell_quote(dir_ + "/data"));
        std::ofstream cfg(dir_ + "/zoo.cfg");
        cfg << "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=" << dir_ << "/data\n"
            << "clientPort=" << port_ << "\nclientPortAddress=127.0.0.1\n"
            << "admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
            << "minSessionTimeout=1000\nmaxSessionTimeout=20000\n"
            << peers_;
        cfg.close();
        if (!peers_.empty()) std::ofstream(dir_ + "/data/myid") << id_ << "\n";
        std::string cp = "/etc/zookeeper/conf";
        for (const char *j : kJars)
            cp += std::string(":") + j;
        pid_ = fork();
        if (pid_ == 0) {
            std::string out = dir_ + "/zk.log";
            FILE *f = freopen(out.c_str(), "a", stdout);
            (void)f;
            dup2(1, 2);
            setpgid(0, 0);
            execlp("java", "java", "-Xmx64m", "-Dzookeeper.root.logger=WARN,CONSOLE",
                   "-Dzookeeper.log.dir=/tmp", "-cp", cp.c_str(),
                   "org.apache.zookeeper.server.quorum.QuorumPeerMain", (dir_ + "/zoo.cfg").c_str(),
                   (char *)nullptr);
            _exit(127);
        }
    }
    // "leader", "follower", "standalone", or "" while it does not serve.
    std::string mode() const {
        std::string s = four_letters(port_, "srvr");
        size_t at = s.find("Mode: ");
        if (at == std::string::npos) return "";
        size_t end = s.find('\n', at);
        return s.substr(at + 6, end - at - 6);
    }
    void kill_now(int sig) {
        if (pid_ <= 0) return;
        kill(pid_, sig);
        waitpid(pid_, nullptr, 0);
        pid_ = 0;
    }
    uint16_t port() const { return port_; }
    std::string log() const {
        std::ifstream in(dir_ + "/zk.log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

  private:
    std::string dir_;
    int id_;
    uint16_t port_;
    std::string peers_;
    pid_t pid_ = 0;
};

class Discovery : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why = why_skipped();
        if (!why.empty()) GTEST_SKIP() << "ZooKeeper discovery not tested: " << why;
        char tmpl[] = "/tmp/asyncd-zk-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        root_ = "/asyncd/" +
                std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    }
    void TearDown() override {
        expect_clean_logs(nodes_);
        nodes_.clear();
        zk_.clear();
        if (!dir_.empty() && !getenv("ASYNCD_KEEP_TEST_DIRS"))
            run_shell("rm -rf " + shell_quote(dir_));
    }

    // n = 1: a standalone server; n = 3: an ensemble. Waits until every one serves.
    void start_zk(int n) {
        std::string peers;
        std::vector<uint16_t> client;
        for (int i = 1; i <= n; i++) {
            client.push_back(uint16_t(free_port()));
            if (n > 1) {
                peers += "server." + std::to_string(i) +
                         "=127.0.0.1:" + std::to_string(free_port()) + ":" +
                         std::to_string(free_port()) + "\n";
            }
        }
        for (int i = 1; i <= n; i++) {
            zk_.push_back(std::make_unique<ZkServer>(dir_ + "/zk" + std::to_string(i), i,
                                                     client[size_t(i - 1)], peers));
            zk_.back()->start();
            servers_ += (i > 1 ? "," : "") + std::string("127.0.0.1:") +
                        std::to_string(client[size_t(i - 1)]);
        }
        for (auto &z : zk_) {
            ASSERT_TRUE(eventually([&] { return !z->mode().empty(); }, seconds(30)))
                << "ZooKeeper on " << z->port() << " did not serve:\n"
                << z->log();
        }
    }

    std::string node_config(const std::string &name, const std::string &extra) {
        if (!ports_.count(name)) ports_[name] = uint16_t(free_port());
        std::string cl = dir_ + "/" + name + ".cluster";
        std::ofstream(cl) << "node " << name << " 127.0.0.1:" << ports_[name] << "\n"
                          << link_options_ << "call_timeout 2s\nconnect_timeout 500ms\n";
        return "workers 2\nplugin " + plugin_path("nodes.so") + "\nnode_name " + name +
               "\ncluster " + cl + "\ndiscovery zookeeper\nzk_servers " + servers_ + "\nzk_root " +
               root_ + "\nzk_session_timeout " + session_ + "\nzk_module " + zk_module() + "\n" +
               extra;
    }

    void start_node(const std::string &name, const std::string &extra = "") {
        auto s = std::make_unique<Server>(node_config(name, extra));
        std::string why;
        ASSERT_TRUE(s->start(&why)) << name << ": " << why;
        ASSERT_TRUE(s->wait_log("discovery: registered as", 1, seconds(20)))
            << name << " did not register:\n"
            << s->log();
        nodes_[name] = std::move(s);
    }

    // Every process of the node at once: its session ends only by its timeout.
    void kill_node(const std::string &name, int sig) {
        Server &s = *nodes_.at(name);
        std::vector<pid_t> kids = s.children();
        kill(s.pid(), sig);
        for (pid_t p : kids)
            kill(p, sig);
    }

    // The lines of s's log that say `name` was added ("discovery: added b, c" names two).
    static int added_lines(const Server &s, const std::string &name) {
        std::string log = s.log();
        int n = 0;
        for (size_t at = 0; (at = log.find("discovery: added ", at)) != std::string::npos;) {
            size_t end = log.find_first_of(";\n", at);
            std::string names = "," + log.substr(at + 17, end - at - 17) + ",";
            for (char &ch : names)
                if (ch == ' ') ch = ',';
            if (names.find("," + name + ",") != std::string::npos) n++;
            at = end;
        }
        return n;
    }

    // zk-tool against the ensemble; true when it succeeded.
    bool zk(const std::string &args) {
        std::string out;
        int rc =
            run_shell(shell_quote(zk_tool()) + " " + servers_ + " " + args + " 2>&1", &out, 30);
        if (rc != 0) ADD_FAILURE() << "zk-tool " << args << ": " << out;
        return rc == 0;
    }

    std::string call(const std::string &from, const std::string &cmd) {
        Client c;
        if (!c.connect(nodes_.at(from)->port())) return "no connect";
        std::string got;
        if (!c.send_frame(cmd) || !c.recv_frame(&got, seconds(10))) return "no answer";
        return got;
    }
    bool callable(const std::string &from, const std::string &to) {
        return call(from, "call " + to + " echo any 1000 hi") == "S0 C0 hi";
    }

    std::string dir_, root_, servers_;
    std::string session_ = "2s";
    std::string link_options_ = "hb_interval 200ms\nhb_timeout 1s\n";
    std::map<std::string, uint16_t> ports_;
    std::vector<std::unique_ptr<ZkServer>> zk_;
    std::map<std::string, std::unique_ptr<Server>> nodes_;
};

// Three nodes that name only themselves find each other and call each other; the time from a
// node's start to being callable from the others is the figure.
TEST_F(Discovery, NodesFindEachOtherAndCall) {
    start_zk(1);
    start_node("a");
    start_node("b");
    auto t0 = Clock::now();  // from the start of its process
    start_node("c");
    ASSERT_TRUE(eventually([&] { return callable("a", "c") && callable("b", "c"); }, seconds(15)));
    auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
    for (const char *from : {"a", "b", "c"}) {
        for (const char *to : {"a", "b", "c"}) {
            if (std::string(from) != to) {
                EXPECT_TRUE(eventually([&] { return callable(from, to); }, seconds(10)))
                    << from << " -> " << to;
            }
        }
    }
    EXPECT_TRUE(eventually([&] { return added_lines(*nodes_["a"], "c") == 1; }))
        << nodes_["a"]->log();
    printf("FIGURE D1 start_to_callable_ms=%lld\n", (long long)ms);
}

// kill -9 of every process of a node: the others remove it once its session has expired, and
// calls to it fail (never hang) meanwhile and after; restarted, it reappears.
TEST_F(Discovery, AKilledNodeIsRemovedAfterItsSessionAndComesBack) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    kill_node("b", SIGKILL);
    auto t0 = Clock::now();
    bool removed = false;
    int calls = 0;
    Client c;  // one connection for every call of the loop
    ASSERT_TRUE(c.connect(nodes_["a"]->port()));
    while (!removed && Clock::now() - t0 < seconds(15)) {
        auto c0 = Clock::now();
        std::string got;
        if (!c.send_frame("call b echo any 1000 hi") || !c.recv_frame(&got, seconds(10)))
            got = "no answer";
        EXPECT_LT(Clock::now() - c0, seconds(3)) << "a call to a dead node took long: " << got;
        // Before the removal: the link's loss or the open circuit; after: no such node.
        EXPECT_TRUE(got == "S4 C0 " || got == "S5 C0 " || got == "S3 C0 " || got == "S2 C0 ")
            << got;
        removed = got == "S3 C0 ";
        calls++;
    }
    ASSERT_TRUE(removed) << "b was never removed:\n" << nodes_["a"]->log();
    auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
    EXPECT_GE(ms, 1000) << "removed before its session could expire";
    EXPECT_EQ(nodes_["a"]->count_log("discovery: removed b"), 1);
    nodes_["b"]->wait_exit(seconds(5));
    nodes_.erase("b");
    // Its restart waits for nothing: the old znode went with its session.
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }, seconds(15)));
    EXPECT_TRUE(callable("b", "a"));
    printf("FIGURE D2 kill_to_removal_ms=%lld calls_meanwhile=%d\n", (long long)ms, calls);
}

// A second process claiming a live node's name is refused, in one line, and does not serve;
// the live one is untouched.
TEST_F(Discovery, ASecondClaimOfALiveNameIsRefused) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("b", "a"); }));
    ports_["a"] = uint16_t(free_port());  // its own listen address: another process
    Server dup(node_config("a", ""));
    int rc = dup.run_to_exit(seconds(20));
    EXPECT_NE(rc, 0);
    EXPECT_EQ(dup.count_log("discovery: refused: node name a is registered by a live node"), 1)
        << dup.log();
    EXPECT_EQ(dup.count_log("nothing can serve: stopping"), 1) << dup.log();
    EXPECT_TRUE(callable("b", "a"));
    EXPECT_EQ(nodes_["b"]->count_log("discovery: removed a"), 0);
    EXPECT_EQ(nodes_["b"]->count_log("discovery: moved a"), 0);
}

// SIGSTOP of a node for longer than its session: the others remove it; SIGCONT: its session
// has expired, it registers again in a new one and is callable again.
TEST_F(Discovery, AnExpiredSessionRegistersAgain) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    kill_node("b", SIGSTOP);
    EXPECT_TRUE(nodes_["a"]->wait_log("discovery: removed b", 1, seconds(15)));
    kill_node("b", SIGCONT);
    EXPECT_TRUE(nodes_["b"]->wait_log("discovery: the session expired", 1, seconds(15)))
        << nodes_["b"]->log();
    EXPECT_TRUE(nodes_["b"]->wait_log("discovery: registered as", 2, seconds(15)));
    EXPECT_TRUE(eventually([&] { return added_lines(*nodes_["a"], "b") == 2; }, seconds(15)));
    EXPECT_TRUE(eventually([&] { return callable("a", "b") && callable("b", "a"); }, seconds(15)));
}

// A session flap: b's session expires while its link is alive (b's conn stopped for longer
// than the session, not for as long as the link's heartbeat timeout). a removes b from its
// table but keeps the link for its grace; b registers again, and a takes it back with the
// link it has: the call in flight across it is answered.
TEST_F(Discovery, ASessionFlapKeepsTheLink) {
    link_options_ = "hb_interval 500ms\nhb_timeout 6s\n";
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    Client pending;
    ASSERT_TRUE(pending.connect(nodes_["a"]->port()));
    ASSERT_TRUE(pending.send_frame("call b later any 9000 1000"));
    pid_t conn = nodes_["b"]->child("asyncd-conn");
    ASSERT_GT(conn, 0);
    ASSERT_TRUE(
        eventually([&] { return nodes_["b"]->count_log("discovery: registered as") == 1; }));
    // A link broken before the stop (the two nodes' first connects may cross) is not the flap's.
    int broken_before = nodes_["a"]->count_log("link to node b (");
    kill(conn, SIGSTOP);
    bool removed = nodes_["a"]->wait_log("discovery: removed b", 1, seconds(15));
    EXPECT_EQ(call("a", "call b echo any 1000 hi"), "S3 C0 ") << "no new calls to it";
    kill(conn, SIGCONT);
    ASSERT_TRUE(removed) << nodes_["a"]->log();
    EXPECT_TRUE(nodes_["a"]->wait_log("discovery: node b is back within its grace", 1, seconds(15)))
        << nodes_["a"]->log();
    std::string got;
    ASSERT_TRUE(pending.recv_frame(&got, seconds(15)));
    EXPECT_EQ(got, "S0 C0 late") << "the call in flight on the kept link";
    EXPECT_EQ(nodes_["a"]->count_log("link to node b ("), broken_before) << nodes_["a"]->log();
    EXPECT_TRUE(callable("a", "b"));
    EXPECT_TRUE(callable("b", "a"));
}

// Somebody replaces a serving node's znode with one of its own (delete and create in one
// transaction, as a stale or hostile process might): the node keeps serving, says so once,
// and registers again when that znode goes.
TEST_F(Discovery, ATakenOverZnodeIsClaimedBackAndTheNodeKeepsServing) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    ASSERT_TRUE(zk("steal " + root_ + "/nodes/b 'addr=127.0.0.1:1 workers=1' 1500"));
    EXPECT_TRUE(nodes_["b"]->wait_log("is held by another session"));
    EXPECT_TRUE(nodes_["b"]->wait_log("discovery: registered as", 2, seconds(20)))
        << nodes_["b"]->log();
    EXPECT_EQ(nodes_["b"]->count_log("discovery: refused"), 0);
    EXPECT_EQ(waitpid(nodes_["b"]->pid(), nullptr, WNOHANG), 0) << "b stopped";
    EXPECT_TRUE(eventually([&] { return callable("a", "b") && callable("b", "a"); }, seconds(15)));
}

// ROOT/nodes deleted with everything in it: every node makes it again and registers again.
TEST_F(Discovery, ADeletedNodesFolderIsMadeAgain) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    ASSERT_TRUE(zk("deleteall " + root_ + "/nodes"));
    for (const char *n : {"a", "b"}) {
        EXPECT_TRUE(nodes_[n]->wait_log("discovery: registered as", 2, seconds(20)))
            << nodes_[n]->log();
    }
    EXPECT_TRUE(eventually([&] { return callable("a", "b") && callable("b", "a"); }, seconds(15)));
}

// Somebody changes a node's registration: the node puts its own back.
TEST_F(Discovery, AChangedRegistrationIsRestored) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    ASSERT_TRUE(zk("set " + root_ + "/nodes/b 'addr=127.0.0.1:1 workers=1'"));
    EXPECT_TRUE(nodes_["b"]->wait_log("was changed by somebody; restoring it"));
    EXPECT_TRUE(eventually([&] { return callable("a", "b"); }, seconds(15)));
}

// What a znode holds goes into the log and the cache file as one line, whatever it is; a
// znode whose name is no node name, or whose address is this node's own, is ignored.
TEST_F(Discovery, WhatZnodesHoldCannotForgeLogLinesOrNodes) {
    start_zk(1);
    std::string cache = dir_ + "/a.cache";
    start_node("a", "zk_cache " + cache + "\n");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    // A valid address, then a forged log line and a forged cache line; and one with no
    // address, which is logged (as one line).
    const std::string fake = "2026-01-01 00:00:00.000 [CRIT] conn 1: FORGED";
    std::ofstream(dir_ + "/evil") << "addr=127.0.0.1:1 \n" << fake << "\nforged addr=127.0.0.1:2";
    std::ofstream(dir_ + "/junk") << "no address\n" << fake << "\x1b[31m";
    ASSERT_TRUE(zk("create " + root_ + "/nodes/evil \"$(cat " + dir_ + "/evil)\""));
    ASSERT_TRUE(zk("create " + root_ + "/nodes/junk \"$(cat " + dir_ + "/junk)\""));
    ASSERT_TRUE(zk("create " + root_ + "/nodes/bad.name! 'addr=127.0.0.1:3'"));
    ASSERT_TRUE(zk("create " + root_ +
                   "/nodes/mirror 'addr=127.0.0.1:" + std::to_string(ports_["a"]) + "'"));
    ASSERT_TRUE(eventually([&] { return added_lines(*nodes_["a"], "evil") == 1; }));
    EXPECT_TRUE(nodes_["a"]->wait_log("node junk registered no numeric addr="));
    EXPECT_TRUE(nodes_["a"]->wait_log("is not a valid node name"));
    EXPECT_TRUE(nodes_["a"]->wait_log("registered this node's own address"));
    std::string log = nodes_["a"]->log();
    EXPECT_EQ(log.find("\n" + fake), std::string::npos) << log;
    EXPECT_EQ(log.find('\x1b'), std::string::npos) << "a raw escape sequence in the log";
    EXPECT_EQ(added_lines(*nodes_["a"], "forged"), 0);
    EXPECT_EQ(added_lines(*nodes_["a"], "mirror"), 0);
    std::ifstream in(cache);
    std::string names;
    for (std::string line; std::getline(in, line);)
        names += line.substr(0, line.find(' ')) + ";";
    EXPECT_EQ(names, "b;evil;mirror;") << "one line each (mirror is only left out of the table)";
    EXPECT_TRUE(callable("a", "b"));
}

// More nodes than the node table's 64 slots: one that joined while it was full gets a slot
// when others leave, and node_send reaches it then.
TEST_F(Discovery, ANodePastTheTableGetsASlotWhenOthersLeave) {
    start_zk(1);
    start_node("a");
    ASSERT_TRUE(zk("many " + root_ + "/nodes/x 70 'addr=127.0.0.1:%d'"));
    ASSERT_TRUE(eventually([&] { return added_lines(*nodes_["a"], "x69") == 1; }));
    start_node("k");
    ASSERT_TRUE(eventually([&] { return callable("a", "k"); }));
    EXPECT_TRUE(nodes_["a"]->wait_log("more than 64 nodes"));
    EXPECT_EQ(call("a", "send k echo any hi"), "sent 3") << "no slot: UNKNOWN, and said so";
    ASSERT_TRUE(zk("deleteall " + root_ + "/nodes/x1"));
    for (int i = 0; i < 70; i++) {
        if (i != 1) {
            ASSERT_TRUE(zk("deleteall " + root_ + "/nodes/x" + std::to_string(i)));
        }
    }
    EXPECT_TRUE(eventually([&] { return call("a", "send k echo any hi") == "sent 0"; }));
}

// Calls a -> b from now until stop() returns how many failed.
class Caller {
  public:
    Caller(uint16_t port, const std::string &cmd) : port_(port), cmd_(cmd) {}
    // One call, on one connection kept for all of them (tens of thousands of connections
    // would fill the machine's ephemeral ports with TIME_WAIT); false if it failed.
    bool once(std::string *got) {
        if (c_.fd() < 0 && !c_.connect(port_)) {
            *got = "no connect";
            return false;
        }
        if (!c_.send_frame(cmd_) || !c_.recv_frame(got, seconds(10))) {
            c_.close();
            *got = "no answer";
            return false;
        }
        return *got == "S0 C0 hi";
    }
    // Calls until cond holds (or the deadline); counts the calls and the failures.
    void until(const std::function<bool()> &cond, milliseconds deadline) {
        auto end = Clock::now() + deadline;
        while (Clock::now() < end) {
            std::string got;
            calls++;
            if (!once(&got)) {
                failed++;
                last_failure = got;
            }
            if (cond()) return;
        }
    }
    int calls = 0, failed = 0;
    std::string last_failure;

  private:
    uint16_t port_;
    std::string cmd_;
    Client c_;
};

// One ZooKeeper server of three killed, a follower and then the leader: no node is removed,
// and calls between the nodes never fail. The figure: from the leader's death to the next
// table change the nodes see (a node started right after it).
TEST_F(Discovery, OneServerOfAnEnsembleDiesAndNothingIsRemoved) {
    session_ = "4s";
    start_zk(3);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    Caller caller(nodes_["a"]->port(), "call b echo any 1000 hi");
    size_t follower = 0, leader = 0;
    for (size_t i = 0; i < zk_.size(); i++) {
        std::string m = zk_[i]->mode();
        if (m == "leader") leader = i;
        if (m == "follower") follower = i;
    }
    ASSERT_NE(follower, leader);
    zk_[follower]->kill_now(SIGKILL);
    caller.until([] { return false; }, milliseconds(3000));
    zk_[follower]->start();
    ASSERT_TRUE(eventually([&] { return !zk_[follower]->mode().empty(); }, seconds(30)));
    zk_[leader]->kill_now(SIGKILL);
    auto t0 = Clock::now();
    start_node("c");
    caller.until([&] { return added_lines(*nodes_["a"], "c") >= 1; }, milliseconds(20000));
    auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
    EXPECT_EQ(added_lines(*nodes_["a"], "c"), 1) << nodes_["a"]->log();
    caller.until([] { return false; }, milliseconds(1000));
    EXPECT_EQ(caller.failed, 0) << caller.last_failure;
    EXPECT_GT(caller.calls, 10);
    for (const char *n : {"a", "b"}) {
        EXPECT_EQ(nodes_[n]->count_log("discovery: removed"), 0) << nodes_[n]->log();
        EXPECT_EQ(nodes_[n]->count_log("discovery: the session expired"), 0);
    }
    EXPECT_TRUE(eventually([&] { return callable("c", "a") && callable("a", "c"); }));
    printf("FIGURE D3 leader_death_to_table_change_ms=%lld calls=%d failed=%d\n", (long long)ms,
           caller.calls, caller.failed);
}

// The whole ensemble stopped for longer than the session timeout, then started again: the
// tables stay frozen meanwhile (nobody is removed because ZooKeeper is away), calls between
// live nodes never fail, and registration recovers (a node started after is seen by all).
TEST_F(Discovery, TheWholeEnsembleAwayFreezesTheTable) {
    start_zk(1);
    start_node("a");
    start_node("b");
    ASSERT_TRUE(eventually([&] { return callable("a", "b") && callable("b", "a"); }));
    Caller caller(nodes_["a"]->port(), "call b echo any 1000 hi");
    zk_[0]->kill_now(SIGKILL);
    EXPECT_TRUE(nodes_["a"]->wait_log("discovery: the service is unreachable"));
    caller.until([] { return false; }, milliseconds(3500));  // past the 2 s session
    EXPECT_TRUE(callable("b", "a"));
    zk_[0]->start();
    ASSERT_TRUE(eventually([&] { return !zk_[0]->mode().empty(); }, seconds(30)));
    start_node("c");
    caller.until(
        [&] { return added_lines(*nodes_["a"], "c") >= 1 && added_lines(*nodes_["b"], "c") >= 1; },
        milliseconds(20000));
    EXPECT_EQ(caller.failed, 0) << caller.last_failure << " in " << caller.calls;
    EXPECT_EQ(nodes_["a"]->count_log("discovery: removed"), 0) << nodes_["a"]->log();
    EXPECT_EQ(nodes_["b"]->count_log("discovery: removed"), 0) << nodes_["b"]->log();
    // The library says the same few lines at each reconnect attempt (about 20 a second): each
    // kind goes out once in 30 s.
    EXPECT_LT(nodes_["a"]->count_log("discovery: zookeeper:"), 12) << nodes_["a"]->log();
    EXPECT_TRUE(eventually([&] { return callable("c", "a") && callable("c", "b"); }));
    printf("FIGURE D4 ensemble_outage_calls=%d failed=%d\n", caller.calls, caller.failed);
}

// zk_cache: a node restarted while ZooKeeper is away still knows its peers from the file (and
// they still know it: their tables are frozen too).
TEST_F(Discovery, TheCacheServesARestartWhileTheServiceIsAway) {
    start_zk(1);
    std::string cache = dir_ + "/a.cache";
    start_node("b");
    start_node("a", "zk_cache " + cache + "\n");
    ASSERT_TRUE(eventually([&] { return callable("a", "b"); }));
    ASSERT_TRUE(eventually([&] { return exists(cache); }));
    zk_[0]->kill_now(SIGKILL);
    EXPECT_TRUE(nodes_["b"]->wait_log("discovery: the service is unreachable"));
    nodes_["a"]->stop();
    nodes_.erase("a");
    auto s = std::make_unique<Server>(node_config("a", "zk_cache " + cache + "\n"));
    std::string why;
    ASSERT_TRUE(s->start(&why)) << why;
    nodes_["a"] = std::move(s);
    EXPECT_TRUE(nodes_["a"]->wait_log("discovery: 1 nodes from the cache"));
    EXPECT_TRUE(eventually([&] { return callable("a", "b"); }));
}

// -t and a start say clearly when the module cannot be loaded.
TEST_F(Discovery, AMissingModuleIsSaidAtTestAndStart) {
    servers_ = "127.0.0.1:1";
    std::string body = node_config("a", "");
    body.replace(body.find("zk_module "), std::string::npos, "zk_module " + dir_ + "/none.so\n");
    std::string conf = dir_ + "/t.conf";
    std::ofstream(conf) << "listen 127.0.0.1:0\npid_file -\n" << body;
    for (const char *how : {"-t -c ", "-c "}) {
        std::string out;
        int rc = run_shell(shell_quote(asyncd_bin()) + " " + how + shell_quote(conf) + " 2>&1",
                           &out, 20);
        EXPECT_NE(rc, 0) << how << out;
        EXPECT_NE(out.find("zk_module " + dir_ + "/none.so: No such file"), std::string::npos)
            << how << out;
    }
    std::ofstream(dir_ + "/bad.so") << "not an ELF file\n";
    body.replace(body.find("zk_module "), std::string::npos, "zk_module " + dir_ + "/bad.so\n");
    std::ofstream(conf) << "listen 127.0.0.1:0\npid_file -\n" << body;
    std::string out;
    EXPECT_NE(
        run_shell(shell_quote(asyncd_bin()) + " -t -c " + shell_quote(conf) + " 2>&1", &out, 20),
        0);
    EXPECT_NE(out.find("discovery module " + dir_ + "/bad.so cannot be loaded"), std::string::npos)
        << out;
}

}  // namespace
}  // namespace asyncd::test
