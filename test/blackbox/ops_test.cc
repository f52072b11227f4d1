// Operating asyncd: the pid file and its lock, daemon mode and `asyncd -s`, reload (a new
// plugin under load, a broken config, keys that need a restart), and reopening the log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
#include "test/reliability/seqload.h"

namespace asyncd::test {
namespace {

using std::chrono::seconds;

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const std::string &path, const std::string &text) {
    std::ofstream out(path + ".tmp");
    out << text;
    out.close();
    rename((path + ".tmp").c_str(), path.c_str());  // a reload never reads half a file
}

bool ends_with(const std::string &s, const std::string &tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Runs `asyncd ARGS` (bounded) and returns its exit code; what it printed goes to *out.
int asyncd(const std::string &args, std::string *out = nullptr) {
    return run_shell(asyncd_bin() + " " + args, out, 30);
}

bool alive(pid_t pid) {
    return pid > 0 && kill(pid, 0) == 0;
}

TEST(Ops, PidFileLockRefusesASecondInstance) {
    Server first("workers 1\nplugin " + plugin_path("testplug.so") + "\n");
    std::string pid_file = first.dir() + "/asyncd.pid";
    Server a("workers 1\nplugin " + plugin_path("testplug.so") + "\npid_file " + pid_file + "\n");
    std::string why;
    ASSERT_TRUE(a.start(&why)) << why;
    EXPECT_EQ(atoi(slurp(pid_file).c_str()), a.pid());

    Server b("workers 1\nplugin " + plugin_path("testplug.so") + "\npid_file " + pid_file + "\n");
    EXPECT_EQ(b.run_to_exit(seconds(20)), 1);
    std::string err = slurp(b.dir() + "/stderr.log");
    EXPECT_NE(err.find("already running (pid " + std::to_string(a.pid())), std::string::npos)
        << err;
    EXPECT_EQ(atoi(slurp(pid_file).c_str()), a.pid());  // the second one left it alone

    EXPECT_EQ(a.stop(), 0);
    EXPECT_NE(access(pid_file.c_str(), F_OK), 0) << "a clean stop removes the pid file";
}

class Daemon : public ::testing::Test {
  protected:
    void SetUp() override {
        // A scratch Server only lends its folder: the daemon is started by hand.
        scratch_ = std::make_unique<Server>("");
        dir_ = scratch_->dir();
        conf_ = dir_ + "/daemon.conf";
        spit(conf_, "listen 127.0.0.1:0\nworkers 2\nplugin " + plugin_path("testplug.so") +
                        "\ndaemon yes\npid_file " + dir_ + "/asyncd.pid\nlog_file " + dir_ +
                        "/asyncd.log\n");
    }
    void TearDown() override {
        if (alive(pid_)) kill(pid_, SIGKILL);  // its children follow it
    }
    std::string log() const { return slurp(dir_ + "/asyncd.log"); }
    uint16_t ready_port() {
        uint16_t port = 0;
        eventually(
            [&] {
                std::string l = log();
                size_t at = l.find("listening on 127.0.0.1:");
                if (at == std::string::npos) return false;
                port = uint16_t(atoi(l.c_str() + at + strlen("listening on 127.0.0.1:")));
                return port != 0;
            },
            seconds(20));
        return port;
    }

    std::unique_ptr<Server> scratch_;
    std::string dir_, conf_;
    pid_t pid_ = 0;
};

TEST_F(Daemon, DetachesAndAnswersDashS) {
    std::string out;
    ASSERT_EQ(asyncd("-c " + conf_, &out), 0) << out;  // returns once detached
    uint16_t port = ready_port();
    ASSERT_NE(port, 0) << log();
    pid_ = atoi(slurp(dir_ + "/asyncd.pid").c_str());
    ASSERT_TRUE(alive(pid_));
    EXPECT_NE(getsid(pid_), getsid(0)) << "a daemon runs in a session of its own";
    Client c;
    ASSERT_TRUE(c.connect(port));
    EXPECT_EQ(c.call("hello"), "hello");

    ASSERT_EQ(asyncd("-s status -c " + conf_, &out), 0) << out;
    EXPECT_NE(out.find("asyncd is running: pid " + std::to_string(pid_)), std::string::npos) << out;
    EXPECT_NE(out.find("asyncd-conn"), std::string::npos) << out;
    EXPECT_NE(out.find("asyncd-work1"), std::string::npos) << out;
    // --json: the same figures as one object for scripts. The one packet above is counted,
    // and python's parser takes the whole of it.
    ASSERT_EQ(asyncd("-s status --json -c " + conf_, &out), 0) << out;
    EXPECT_EQ(out.rfind("{\"pid\": " + std::to_string(pid_) + ", ", 0), 0u) << out;
    EXPECT_NE(out.find("\"asyncd_packets_in_total\": 1,"), std::string::npos) << out;
    EXPECT_NE(out.find("{\"name\": \"asyncd-work1\", "), std::string::npos) << out;
    if (have_tool("python3")) {
        std::string parsed;
        std::ofstream(dir_ + "/status.json") << out;
        EXPECT_EQ(run_shell("python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                            "print(len(d[\"counters\"][\"workers\"]))' " +
                                shell_quote(dir_ + "/status.json"),
                            &parsed),
                  0)
            << out;
        EXPECT_EQ(parsed, "2\n") << out;
    }
    EXPECT_EQ(asyncd("-s stop --json -c " + conf_, &out), 1) << "--json goes with status only";
    // -s top: a screen a second (two here), rates from two reads, a row per worker.
    EXPECT_EQ(asyncd("-s top --count abc -c " + conf_, &out), 2) << out;
    EXPECT_NE(out.find("--count takes a number of screens"), std::string::npos) << out;
    ASSERT_EQ(asyncd("-s top --count 2 -c " + conf_, &out), 0) << out;
    size_t screens = 0;
    for (size_t at = 0; (at = out.find("asyncd top - up ", at)) != std::string::npos; at++)
        screens++;
    EXPECT_EQ(screens, 2u) << out;
    EXPECT_NE(out.find("packets/s in "), std::string::npos) << out;
    EXPECT_NE(out.find("connections/s opened"), std::string::npos) << out;
    EXPECT_NE(out.find("p99 us"), std::string::npos) << "the handler's percentiles: " << out;
    EXPECT_NE(out.find("\n1 "), std::string::npos) << "worker 1's row: " << out;

    // A second start with the same pid_file is refused, on the terminal.
    EXPECT_EQ(asyncd("-c " + conf_, &out), 1);
    EXPECT_NE(out.find("already running"), std::string::npos) << out;

    // reopen: the log moved away (logrotate) comes back, and gets the next lines.
    ASSERT_EQ(rename((dir_ + "/asyncd.log").c_str(), (dir_ + "/asyncd.log.1").c_str()), 0);
    ASSERT_EQ(asyncd("-s reopen -c " + conf_, &out), 0) << out;
    EXPECT_TRUE(eventually([&] {
        return log().find("reopened the log file") != std::string::npos;
    })) << log();
    Client bad;  // conn's next line lands in the new file too
    ASSERT_TRUE(bad.connect(port));
    ASSERT_TRUE(bad.send_all("\0\0\0\0", 4));
    EXPECT_TRUE(bad.wait_closed());
    EXPECT_TRUE(eventually([&] { return log().find("[INFO] conn") != std::string::npos; }))
        << log();
    EXPECT_EQ(slurp(dir_ + "/asyncd.log.1").find("reopened"), std::string::npos);

    // reload with a broken config: one line, the old one keeps serving.
    std::string good = slurp(conf_);
    spit(dir_ + "/good.conf", good);  // -s reads a config too, to find the pid_file
    spit(conf_, good + "workers none\n");
    ASSERT_EQ(asyncd("-s reload -c " + dir_ + "/good.conf", &out), 0) << out;
    EXPECT_TRUE(eventually([&] {
        return log().find("keeping the running config") != std::string::npos;
    })) << log();
    EXPECT_EQ(c.call("still"), "still");
    spit(conf_, good);

    ASSERT_EQ(asyncd("-s stop -c " + conf_, &out), 0) << out;
    EXPECT_TRUE(eventually([&] { return !alive(pid_); }, seconds(20)));
    EXPECT_NE(access((dir_ + "/asyncd.pid").c_str(), F_OK), 0);
    EXPECT_EQ(asyncd("-s status -c " + conf_, &out), 3) << out;
    EXPECT_NE(out.find("not running"), std::string::npos) << out;
}

void copy_file(const std::string &from, const std::string &to) {
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(to, std::ios::binary);
    out << in.rdbuf();
}

std::string replaced(std::string text, const std::string &from, const std::string &to) {
    size_t at = text.find(from);
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
}

using Metrics = ServerTest;

TEST_F(Metrics, PrometheusTextMovesWithTrafficAndStatusAgrees) {
    int admin = free_port();
    start("workers 2\nplugin " + plugin_path("testplug.so") +
          "\nadmin_listen 127.0.0.1:" + std::to_string(admin) + "\npid_file asyncd.pid\n");
    auto before = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
    ASSERT_TRUE(before.count("asyncd_packets_in_total")) << http_get(uint16_t(admin), "/metrics");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 50; i++)
        ASSERT_EQ(c.call("tick"), "tick");
    std::map<std::string, double> after;
    ASSERT_TRUE(eventually([&] {
        after = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return after["asyncd_packets_in_total"] >= before["asyncd_packets_in_total"] + 50 &&
               after["asyncd_connections"] == 1;
    })) << http_get(uint16_t(admin), "/metrics");
    EXPECT_EQ(after["asyncd_connections_accepted_total"],
              before["asyncd_connections_accepted_total"] + 1);
    EXPECT_GE(after["asyncd_bytes_in_total"], before["asyncd_bytes_in_total"] + 50 * 8);
    double worker_packets = after["asyncd_worker_packets_total{worker=\"0\"}"] +
                            after["asyncd_worker_packets_total{worker=\"1\"}"];
    EXPECT_EQ(worker_packets, after["asyncd_packets_in_total"]);

    // asyncd -s status reads the same counters from shared memory.
    std::string out;
    ASSERT_EQ(asyncd("-s status -c " + server_->config_path(), &out), 0) << out;
    std::string squeezed;  // the table pads with spaces: compare without them
    for (char ch : out) {
        if (ch != ' ') squeezed += ch;
    }
    EXPECT_NE(
        squeezed.find("packetsin" + std::to_string((long long)after["asyncd_packets_in_total"])),
        std::string::npos)
        << out;
    EXPECT_NE(squeezed.find("accepted" +
                            std::to_string((long long)after["asyncd_connections_accepted_total"])),
              std::string::npos)
        << out;
    EXPECT_EQ(http_get(uint16_t(admin), "/nothing"), "GET /, GET /metrics or GET /status.json\n");
}

// Every family of /metrics has its HELP and TYPE before its samples; a histogram's buckets
// rise with le, end at +Inf, and +Inf is its _count. Returns what is wrong, "" when nothing.
std::string check_exposition(const std::string &text) {
    std::map<std::string, std::string> type;
    std::set<std::string> help;
    std::map<std::string, double> last_bucket;  // series without le -> last count
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("# HELP ", 0) == 0) {
            help.insert(line.substr(7, line.find(' ', 7) - 7));
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            size_t sp = line.find(' ', 7);
            type[line.substr(7, sp - 7)] = line.substr(sp + 1);
            continue;
        }
        if (line.empty() || line[0] == '#') return "a line that is no sample: " + line;
        std::string name = line.substr(0, line.find_first_of("{ "));
        std::string family = name;
        for (const char *suffix : {"_bucket", "_sum", "_count"}) {
            size_t n = strlen(suffix);
            if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0 &&
                type.count(name.substr(0, name.size() - n)) &&
                type[name.substr(0, name.size() - n)] == "histogram") {
                family = name.substr(0, name.size() - n);
            }
        }
        if (!type.count(family)) return "no TYPE before " + line;
        if (!help.count(family)) return "no HELP before " + line;
        if (type[family] != "histogram") continue;
        double v = atof(line.c_str() + line.rfind(' ') + 1);
        size_t le = line.find(",le=\"");
        std::string series = le == std::string::npos ? "" : line.substr(0, le);
        if (name == family + "_bucket") {
            if (le == std::string::npos) return "a bucket without le: " + line;
            if (last_bucket.count(series) && v < last_bucket[series])
                return "a bucket below the one before it: " + line;
            last_bucket[series] = v;
            if (line.find("le=\"+Inf\"") != std::string::npos) last_bucket[series + "+Inf"] = v;
        } else if (name == family + "_count") {
            std::string labels = line.substr(name.size(), line.rfind(' ') - name.size());
            std::string key = family + "_bucket" + labels.substr(0, labels.size() - 1) + "+Inf";
            if (!last_bucket.count(key)) return "a _count without a +Inf bucket: " + line;
            if (last_bucket[key] != v) return "_count is not the +Inf bucket: " + line;
        }
    }
    return "";
}

// The plugin's callbacks are timed: one worker runs 40 quick packets and 4 that sleep 30 ms.
// /metrics has them as histograms (promtool accepts the whole text, where it could be
// fetched), -s status --json summarises them, and the status history has the second the
// slow ones ran in, with its p99.
TEST_F(Metrics, HandlerTimesAreHistogramsInMetricsJsonAndHistory) {
    int admin = free_port();
    start("workers 1\nplugin " + plugin_path("testplug.so") + "\nhandler_timing 1\n" +
          "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 40; i++)
        ASSERT_EQ(c.call("tick"), "tick");
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(c.call("SLOW 30"), "SLOW 30");
    std::string text;
    std::map<std::string, double> m;
    const std::string packet = "{worker=\"0\",callback=\"packet\"";
    ASSERT_TRUE(eventually([&] {
        text = http_get(uint16_t(admin), "/metrics");
        m = parse_prometheus(text);
        return m["asyncd_handler_seconds_count" + packet + "}"] == 44;
    })) << text;
    EXPECT_EQ(check_exposition(text), "") << text;
    EXPECT_EQ(m["asyncd_handler_seconds_bucket" + packet + ",le=\"+Inf\"}"], 44);
    // A sleep of 30 ms is never shorter: the slow four are above every bound up to 25 ms.
    EXPECT_LE(m["asyncd_handler_seconds_bucket" + packet + ",le=\"0.01\"}"], 40) << text;
    EXPECT_EQ(m["asyncd_handler_seconds_bucket" + packet + ",le=\"0.1\"}"], 44) << text;
    EXPECT_GE(m["asyncd_handler_seconds_sum" + packet + "}"], 4 * 0.030) << text;
    EXPECT_EQ(m["asyncd_ring_wait_seconds_count{worker=\"0\"}"], 44) << text;
    std::string promtool = "build/tools/promtool";
    if (access(promtool.c_str(), X_OK) == 0) {
        spit(server_->dir() + "/metrics.txt", text);
        std::string out;
        EXPECT_EQ(run_shell(promtool + " check metrics < " +
                                shell_quote(server_->dir() + "/metrics.txt") + " 2>&1",
                            &out),
                  0)
            << out;
        EXPECT_EQ(out, "") << "promtool's complaints";
    } else {
        printf("SKIP promtool: %s is not there (make test-tools fetches it)\n", promtool.c_str());
    }

    if (!have_tool("python3")) GTEST_SKIP() << "python3 is needed to read the JSON";
    std::string doc = server_->dir() + "/status.json";
    std::string out;
    ASSERT_TRUE(eventually([&] {
        spit(doc, http_get(uint16_t(admin), "/status.json"));
        out.clear();
        run_shell(
            "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); w=d[\"workers\"][0]; "
            "h=w[\"handler\"][\"packet\"]; s=d[\"history\"][\"samples\"]; "
            "print(h[\"count\"], h[\"p99_ns\"] >= 30e6, h[\"max_ns\"] >= 30e6, "
            "w[\"ring_wait\"][\"count\"], any(x[\"workers\"][0][\"p99_ns\"] >= 30e6 for x in s if "
            "x[\"workers\"]))' " +
                shell_quote(doc),
            &out);
        return out == "44 True True 44 True\n";
    })) << out
        << slurp(doc);
}

// handler_timing 16: about one packet in 16 is timed (random gaps of 1 to 31): of 480, from
// 15 to 60 (five standard deviations either way), and the ring wait of each of them.
TEST_F(Metrics, HandlerTimingSamplesOneInN) {
    int admin = free_port();
    start("workers 1\nplugin " + plugin_path("testplug.so") + "\nhandler_timing 16\n" +
          "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 480; i++)
        ASSERT_EQ(c.call("tick"), "tick");
    std::map<std::string, double> m;
    ASSERT_TRUE(eventually([&] {
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_worker_packets_total{worker=\"0\"}"] == 480;
    }));
    double timed = m["asyncd_handler_seconds_count{worker=\"0\",callback=\"packet\"}"];
    EXPECT_GE(timed, 15);
    EXPECT_LE(timed, 60);
    EXPECT_EQ(m["asyncd_ring_wait_seconds_count{worker=\"0\"}"], timed);
}

// node_call results that end together (200 calls to a node nobody knows, answered UNKNOWN
// from the worker's loop) are 200 callbacks, each timed on its own, not one batch.
TEST_F(Metrics, EachNodeCallResultIsTimedOnItsOwn) {
    int admin = free_port();
    start("workers 1\nplugin " + plugin_path("nodes.so") + "\nhandler_timing 1\n" +
          "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 200; i++)
        ASSERT_TRUE(c.send_frame("call nowhere echo any 100 x"));
    for (int i = 0; i < 200; i++) {
        std::string got;
        ASSERT_TRUE(c.recv_frame(&got, seconds(10))) << i;
        ASSERT_EQ(got, "S3 C0 ") << i;
    }
    std::map<std::string, double> m;
    EXPECT_TRUE(eventually([&] {
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_handler_seconds_count{worker=\"0\",callback=\"call_done\"}"] == 200;
    })) << m["asyncd_handler_seconds_count{worker=\"0\",callback=\"call_done\"}"];
}

// handler_timing off: nothing is timed, and the histograms stay empty.
TEST_F(Metrics, HandlerTimingOffRecordsNothing) {
    int admin = free_port();
    start("workers 1\nplugin " + plugin_path("testplug.so") + "\nhandler_timing off\n" +
          "admin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(c.call("tick"), "tick");
    std::map<std::string, double> m;
    ASSERT_TRUE(eventually([&] {
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_worker_packets_total{worker=\"0\"}"] == 10;
    }));
    EXPECT_EQ(m["asyncd_handler_seconds_count{worker=\"0\",callback=\"packet\"}"], 0);
    EXPECT_EQ(m["asyncd_ring_wait_seconds_count{worker=\"0\"}"], 0);
}

// The number in the element with this id (`id="X"` then `>N<`), or -1.
long long element_number(const std::string &dom, const std::string &id) {
    size_t at = dom.find("id=\"" + id + "\"");
    if (at == std::string::npos) return -1;
    at = dom.find('>', at);
    return at == std::string::npos ? -1 : atoll(dom.c_str() + at + 1);
}

// The number in the table cell that shows this metric (`data-metric="NAME"`), or -1.
long long metric_cell(const std::string &dom, const std::string &metric) {
    size_t at = dom.find("data-metric=\"" + metric + "\"");
    if (at == std::string::npos) return -1;
    at = dom.find('>', at);
    return at == std::string::npos ? -1 : atoll(dom.c_str() + at + 1);
}

// The status page in a real browser, under load: headless Chromium runs its script, which
// draws the charts and fills the tables from /status.json; a screenshot goes to
// build/status-page.png. Under load the rates are above zero and the charts are drawn; once
// the load is over, the figures the page shows are /metrics' figures.
TEST_F(Metrics, StatusPageRendersLiveFiguresInChromium) {
    const char *bench_env = getenv("ASYNCD_BENCH_BIN");
    std::string bench = bench_env && *bench_env ? bench_env : "build/asyncd-bench";
    ASSERT_EQ(access(bench.c_str(), X_OK), 0) << bench;
    int admin = free_port();
    start("workers 2\nplugin " + plugin_path("testplug.so") +
          "\nadmin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    std::string url = "http://127.0.0.1:" + std::to_string(admin) + "/";
    std::string browser = chromium_command(server_->dir());
    if (browser.empty()) {
        GTEST_SKIP() << "chromium not found: make test installs it with apt-get when it can, "
                        "and could not here";
    }
    auto dump = [&](std::string *dom) { return dump_dom(browser, url, dom); };

    // The load: bounded in time and count, on loopback.
    std::string bench_out;
    std::thread load([&] {
        run_shell(bench + " -q -c 8 -P 4 -d 10 -n 200000000 --max-time 30 127.0.0.1:" +
                      std::to_string(server_->port()) + " 2>&1",
                  &bench_out, 60);
    });
    struct Joiner {
        std::thread &t;
        ~Joiner() {
            if (t.joinable()) t.join();
        }
    } joiner{load};
    std::map<std::string, double> m;
    ASSERT_TRUE(eventually(
        [&] {
            m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
            return m["asyncd_connections"] == 8 && m["asyncd_uptime_seconds"] >= 3;
        },
        seconds(20)));
    std::string dom;
    ASSERT_TRUE(dump(&dom)) << dom;
    ASSERT_NE(dom.find("<h1>asyncd</h1>"), std::string::npos) << dom;
    EXPECT_GT(element_number(dom, "rate-packets-in"), 0) << dom;
    EXPECT_GT(element_number(dom, "rate-bytes-in"), 0) << dom;
    EXPECT_GT(element_number(dom, "w0-packets"), 0) << dom;
    EXPECT_NE(dom.find("id=\"w0-p99\""), std::string::npos) << dom;
    for (const char *chart : {"chart-throughput", "chart-connections", "chart-ring", "chart-p99"}) {
        size_t at = dom.find(std::string("id=\"") + chart + "\"");
        ASSERT_NE(at, std::string::npos) << chart << dom;
        size_t end = dom.find("</svg>", at);
        EXPECT_NE(dom.substr(at, end - at).find("<path"), std::string::npos)
            << chart << " has no line: " << dom.substr(at, end - at);
    }
    std::string shot = "build/status-page.png";
    unlink(shot.c_str());
    ASSERT_EQ(
        run_shell(browser + " --screenshot=" + shot + " " + url + " >/dev/null 2>&1", nullptr, 100),
        0);
    std::string png = slurp(shot);
    ASSERT_GT(png.size(), 1000u) << shot;
    EXPECT_EQ(png.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0) << shot << " is not a PNG";
    double under_load = m["asyncd_packets_in_total"];
    load.join();
    EXPECT_NE(bench_out.find("0 wrong replies"), std::string::npos) << bench_out;

    // The load is over: two reads of /metrics agree, and the page shows what they say.
    std::map<std::string, double> again;
    ASSERT_TRUE(eventually([&] {
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        again = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_connections"] == 0 &&
               m["asyncd_packets_in_total"] == again["asyncd_packets_in_total"];
    }));
    ASSERT_TRUE(dump(&dom)) << dom;
    EXPECT_EQ(element_number(dom, "connections"), (long long)m["asyncd_connections"]) << dom;
    EXPECT_EQ(metric_cell(dom, "asyncd_connections_accepted_total"),
              (long long)m["asyncd_connections_accepted_total"])
        << dom;
    EXPECT_EQ(metric_cell(dom, "asyncd_packets_in_total"), (long long)m["asyncd_packets_in_total"])
        << dom;
    EXPECT_EQ(element_number(dom, "w0-packets") + element_number(dom, "w1-packets"),
              (long long)m["asyncd_packets_in_total"])
        << dom;
    printf(
        "FIGURE status_page screenshot=%s bytes=%zu packets_in_under_load=%.0f packets_in=%.0f\n",
        shot.c_str(), png.size(), under_load, m["asyncd_packets_in_total"]);
}

TEST(MetricsConfig, AdminListenRefusesARemoteAddressUnlessAllowed) {
    Server s("workers 1\nplugin " + plugin_path("testplug.so") + "\nadmin_listen 0.0.0.0:0\n");
    EXPECT_EQ(s.run_to_exit(seconds(20)), 1);
    std::string err = slurp(s.dir() + "/stderr.log");
    EXPECT_NE(err.find("is not a loopback address"), std::string::npos) << err;
}

using Quit = ServerTest;

// SIGQUIT: nobody new is let in, the clients there are served until they leave, then
// asyncd stops by itself.
TEST_F(Quit, ServesWhoIsThereRefusesNewcomersAndStopsWhenTheyLeave) {
    start("workers 2\nplugin " + plugin_path("testplug.so") + "\nshutdown_timeout 30\n");
    Client a, b;
    ASSERT_TRUE(a.connect(server_->port()));
    ASSERT_TRUE(b.connect(server_->port()));
    EXPECT_EQ(a.call("one"), "one");
    ASSERT_EQ(kill(server_->pid(), SIGQUIT), 0);
    ASSERT_TRUE(server_->wait_log("not accepting")) << server_->log();
    EXPECT_TRUE(eventually([&] {
        Client late;
        return !late.connect(server_->port());
    })) << "a newcomer is refused";
    EXPECT_EQ(a.call("two"), "two");
    EXPECT_EQ(b.call("three"), "three");
    a.close();
    EXPECT_EQ(b.call("four"), "four") << "still serving the last client";
    b.close();
    EXPECT_EQ(server_->wait_exit(seconds(20)), 0) << server_->log();
    EXPECT_EQ(server_->count_log("every client has left: stopping"), 1);
}

using Scale = ServerTest;

// A reload changes `workers` up to max_workers: new workers take new connections; a
// retiring one keeps serving its clients and stops when the last has gone.
TEST_F(Scale, WorkersUpAndDownWithoutDroppingAClient) {
    start("workers 2\nmax_workers 4\nplugin " + plugin_path("testplug.so") + "\n");
    EXPECT_EQ(server_->child("asyncd-work2"), 0);
    std::string good = slurp(server_->config_path());

    spit(server_->config_path(), replaced(good, "workers 2\n", "workers 4\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(eventually([&] { return server_->child("asyncd-work3") != 0; })) << server_->log();
    // New connections are spread over all four (round robin).
    std::vector<Client> clients(8);
    std::set<std::string> seen;
    for (auto &c : clients) {
        ASSERT_TRUE(c.connect(server_->port()));
        seen.insert(c.call("WHO"));
    }
    EXPECT_EQ(seen, (std::set<std::string>{"w0", "w1", "w2", "w3"}));

    // Down to one: workers 1..3 keep their clients until these leave.
    spit(server_->config_path(), replaced(good, "workers 2\n", "workers 1\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("take no new connections")) << server_->log();
    for (auto &c : clients)
        EXPECT_NE(c.call("WHO"), "<no answer>") << "a retiring worker still serves its clients";
    for (int i = 0; i < 4; i++) {
        Client fresh;
        ASSERT_TRUE(fresh.connect(server_->port()));
        EXPECT_EQ(fresh.call("WHO"), "w0") << "new clients go to the workers that remain";
    }
    for (auto &c : clients)
        c.close();
    EXPECT_TRUE(eventually([&] {
        return server_->child("asyncd-work1") == 0 && server_->child("asyncd-work2") == 0 &&
               server_->child("asyncd-work3") == 0;
    })) << server_->log();
    EXPECT_EQ(server_->count_log("retired"), 3) << server_->log();
    EXPECT_EQ(server_->count_log("restart #"), 0) << server_->log();
    Client last;
    ASSERT_TRUE(last.connect(server_->port()));
    EXPECT_EQ(last.call("WHO"), "w0");
}

using Reload = ServerTest;

// busy_poll_us is live: with 0, neither conn nor the worker polls; after a reload to 50
// both do, and /metrics says how much CPU that took.
TEST_F(Reload, BusyPollingFollowsTheConfigAndIsCounted) {
    int admin = free_port();
    start("workers 1\nbusy_poll_us 0\nplugin " + plugin_path("testplug.so") +
          "\nadmin_listen 127.0.0.1:" + std::to_string(admin) + "\n");
    std::string good = slurp(server_->config_path());
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    for (int i = 0; i < 200; i++)
        ASSERT_EQ(c.call("p"), "p");
    auto m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
    ASSERT_TRUE(m.count("asyncd_busy_poll_seconds_total")) << "the family is there";
    EXPECT_EQ(m["asyncd_busy_poll_seconds_total"], 0) << "busy_poll_us 0: conn never polls";
    EXPECT_EQ(m["asyncd_worker_busy_poll_seconds_total{worker=\"0\"}"], 0) << "nor does the worker";

    spit(server_->config_path(), replaced(good, "busy_poll_us 0\n", "busy_poll_us 50\n"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: limits now")) << server_->log();
    // Each request after the reload is followed by a poll on both sides (it may account
    // nothing when its first yield hands the CPU away, hence a bounded number of tries).
    ASSERT_TRUE(eventually([&] {
        for (int i = 0; i < 50; i++) {
            if (c.call("p") != "p") return false;
        }
        m = parse_prometheus(http_get(uint16_t(admin), "/metrics"));
        return m["asyncd_busy_poll_seconds_total"] > 0 &&
               m["asyncd_worker_busy_poll_seconds_total{worker=\"0\"}"] > 0;
    })) << "conn "
        << m["asyncd_busy_poll_seconds_total"] << " s, worker "
        << m["asyncd_worker_busy_poll_seconds_total{worker=\"0\"}"] << " s\n"
        << server_->log();
}

// R15: a new plugin under load. Each worker finishes its batch, hands over and restarts with
// the new plugin, one at a time; conn keeps every client connection.
TEST_F(Reload, NewPluginUnderLoadDropsNoConnection) {
    Server scratch("");  // lends its folder to the two builds of the plugin
    std::string a = scratch.dir() + "/a.so", b = scratch.dir() + "/b.so";
    copy_file(plugin_path("testplug.so"), a);
    copy_file(plugin_path("testplug.so"), b);
    const int workers = long_run() ? 4 : 2, reloads = long_run() ? 20 : 1;
    start("workers " + std::to_string(workers) + "\nplugin " + a + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    EXPECT_TRUE(ends_with(c.call("WHERE"), "/a.so"));
    SeqLoad load(server_->port(), long_run() ? 200 : 40, 4);
    ASSERT_TRUE(load.connect_all());
    load.start();
    ASSERT_TRUE(eventually([&] { return load.answered() > 2000; }));

    // Back and forth between the two builds, each reload under load.
    double roll_ms_max = 0;
    std::string from = a, to = b;
    for (int r = 0; r < reloads; r++) {
        spit(server_->config_path(), replaced(slurp(server_->config_path()), from, to));
        auto t0 = Clock::now();
        ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
        ASSERT_TRUE(
            server_->wait_log("reload: every worker runs plugin " + to, r / 2 + 1, seconds(30)))
            << server_->log();
        roll_ms_max = std::max(roll_ms_max, ms_since(t0));
        EXPECT_TRUE(ends_with(c.call("WHERE"), to.substr(to.rfind('/'))))
            << "the same connection, the new plugin";
        uint64_t before = load.answered();
        ASSERT_TRUE(eventually([&] { return load.answered() > before + 1000; }));
        std::swap(from, to);
    }
    load.stop_sending();
    EXPECT_TRUE(load.wait_answered(seconds(30)));
    load.stop();
    SeqStats st = load.stats();
    EXPECT_EQ(st.closed, 0u) << "a client connection was dropped";
    EXPECT_EQ(st.lost, 0u);
    EXPECT_EQ(st.wrong, 0u);
    EXPECT_EQ(st.duplicates, 0u) << "a worker restarted for a reload hands over cleanly";
    EXPECT_EQ(server_->count_log("restarting for a reload"), workers * reloads);
    figure("R15", "reloads=" + std::to_string(reloads) + " workers=" + std::to_string(workers) +
                      " dropped_connections=" + std::to_string(st.closed) + " lost=" +
                      std::to_string(st.lost) + " duplicates=" + std::to_string(st.duplicates) +
                      " answered=" + std::to_string(st.answered) +
                      " roll_ms_max=" + std::to_string(int(roll_ms_max)));
}

// With `frame plugin`, conn frames with the new plugin too: line framing (lines.so) gives
// way to HTTP's (http.so), or the request below would reach the worker cut at its first line.
TEST_F(Reload, ConnFramesWithTheNewPlugin) {
    start("workers 1\nframe plugin\nplugin " + plugin_path("lines.so") + "\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_TRUE(c.send_all("hello\n", 6));
    char got[6];
    ASSERT_TRUE(c.recv_exact(got, 6, seconds(10)));
    EXPECT_EQ(std::string(got, 6), "HELLO\n");

    spit(server_->config_path(),
         replaced(slurp(server_->config_path()), plugin_path("lines.so"), plugin_path("http.so")));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: conn frames with plugin")) << server_->log();
    ASSERT_TRUE(server_->wait_log("reload: every worker runs plugin")) << server_->log();
    Client h;
    ASSERT_TRUE(h.connect(server_->port()));
    std::string req = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    ASSERT_TRUE(h.send_all(req.data(), req.size()));
    std::string resp;
    ASSERT_TRUE(h.read_to_close(&resp));
    EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << resp;
    EXPECT_NE(resp.find("Hello from asyncd"), std::string::npos) << resp;
}

// A new plugin that loads but whose init_service refuses: the worker that tried it goes
// back to the old plugin, and so does the rest of asyncd.
TEST_F(Reload, NewPluginThatWillNotStartSendsTheReloadBack) {
    Server scratch("");
    std::string a = scratch.dir() + "/a.so", b = scratch.dir() + "/b.so";
    copy_file(plugin_path("testplug.so"), a);
    copy_file(plugin_path("testplug.so"), b);
    start("workers 2\nplugin " + a + "\n");
    server_->allow("reload:");  // nothing here may be an ALERT; the ERROR line is expected
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    spit(server_->config_path(),
         replaced(slurp(server_->config_path()), a, b) + "plugin.fail_init yes\n");
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("going back to the old config")) << server_->log();
    EXPECT_TRUE(eventually([&] { return ends_with(c.call("WHERE"), "/a.so"); })) << server_->log();
    for (int i = 0; i < 4; i++) {  // new clients land on both workers, both on a.so
        Client n;
        ASSERT_TRUE(n.connect(server_->port()));
        EXPECT_TRUE(ends_with(n.call("WHERE"), "/a.so")) << server_->log();
    }
    EXPECT_EQ(server_->count_log("not restarted"), 0) << server_->log();
}

TEST_F(Reload, BrokenConfigIsKeptOutAndRestartKeysAreNamed) {
    start("workers 2\nplugin " + plugin_path("testplug.so") + "\npkg_timeout 30\nmax_workers 2\n");
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string good = slurp(server_->config_path());

    spit(server_->config_path(), good + "frame sideways\n");
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("keeping the running config")) << server_->log();
    EXPECT_EQ(server_->count_log("keeping the running config"), 1);
    EXPECT_NE(
        server_->log().find(":" + std::to_string(std::count(good.begin(), good.end(), '\n') + 1) +
                            ": frame must be"),
        std::string::npos)
        << "the line names the file, the line and why: " << server_->log();
    EXPECT_EQ(c.call("ping"), "ping");

    // A limit changes live; `workers` needs a restart and is named.
    spit(server_->config_path(),
         replaced(
             replaced(replaced(good, "pkg_timeout 30", "pkg_timeout 7"), "workers 2", "workers 3"),
             "max_workers 2", "max_workers 3"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: limits now")) << server_->log();
    EXPECT_NE(server_->log().find("pkg_timeout 7 s"), std::string::npos) << server_->log();
    EXPECT_NE(
        server_->log().find("reload: workers 3 is above max_workers 2, which needs a restart"),
        std::string::npos)
        << server_->log();
    EXPECT_NE(server_->log().find("reload: max_workers changed, which needs a restart"),
              std::string::npos)
        << server_->log();
    EXPECT_EQ(server_->child("asyncd-work2"), 0) << "no third worker without a restart";
    EXPECT_EQ(c.call("pong"), "pong");
}

// Without a max_workers line there is room to grow: workers 2 -> 3 by a reload starts a
// third worker, and the reload names no key as changed (max_workers follows its default).
TEST_F(Reload, WorkersGrowWithoutAMaxWorkersLine) {
    start("workers 2\nplugin " + plugin_path("testplug.so") + "\n");
    std::string good = slurp(server_->config_path());
    spit(server_->config_path(), replaced(good, "workers 2", "workers 3"));
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("reload: workers 2 -> 3: started 1")) << server_->log();
    EXPECT_TRUE(eventually([&] { return server_->child("asyncd-work2") != 0; })) << server_->log();
    EXPECT_EQ(server_->count_log("which needs a restart"), 0) << server_->log();
    EXPECT_EQ(server_->count_log("max_workers changed"), 0) << server_->log();
}

}  // namespace
}  // namespace asyncd::test
