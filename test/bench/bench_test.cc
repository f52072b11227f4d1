// asyncd-bench's own parts: the histogram against a sorted reference, the reply checkers
// against right and wrong replies, and a short run of the real tool against asyncd.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "bench/protocol.h"
#include "test/blackbox/harness.h"

namespace asyncd::bench {
namespace {

// The value at percentile p of sorted data, with the same rank rule as the histogram.
uint64_t exact_percentile(const std::vector<uint64_t> &sorted, double p) {
    uint64_t rank = uint64_t(std::ceil(p / 100.0 * double(sorted.size())));
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

TEST(Histogram, PercentilesWithinTheErrorBoundOfASortedReference) {
    std::mt19937_64 rng(3);
    std::lognormal_distribution<double> lognormal(11.0, 1.5);  // ~60 us median, long tail
    std::uniform_int_distribution<uint64_t> small(0, 300);
    for (int round = 0; round < 3; round++) {
        Histogram h;
        std::vector<uint64_t> values;
        for (int i = 0; i < 200000; i++) {
            uint64_t v = round == 0 ? small(rng) : uint64_t(lognormal(rng)) * uint64_t(round);
            values.push_back(v);
            h.record(v);
        }
        std::sort(values.begin(), values.end());
        EXPECT_EQ(h.count(), values.size());
        EXPECT_EQ(h.min(), values.front());
        EXPECT_EQ(h.max(), values.back());
        double sum = 0;
        for (uint64_t v : values)
            sum += double(v);
        EXPECT_NEAR(h.mean(), sum / double(values.size()), 1e-6 * sum / double(values.size()));
        for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
            uint64_t want = exact_percentile(values, p);
            uint64_t got = h.percentile(p);
            EXPECT_GE(got, want) << "p" << p;
            EXPECT_LE(double(got), double(want) * (1 + Histogram::kMaxRelativeError) + 1)
                << "p" << p;
        }
    }
}

TEST(Histogram, BucketsCoverEveryValueAndMerge) {
    for (uint64_t v : {uint64_t(0), uint64_t(1), uint64_t(255), uint64_t(256), uint64_t(257),
                       uint64_t(1) << 40, ~uint64_t(0)}) {
        size_t i = Histogram::index_of(v);
        EXPECT_GE(Histogram::highest_of(i), v);
        if (i > 0) {
            EXPECT_LT(Histogram::highest_of(i - 1), v);
        }
    }
    Histogram a, b;
    a.record(10);
    b.record(1000);
    a.merge(b);
    EXPECT_EQ(a.count(), 2u);
    EXPECT_EQ(a.percentile(50), 10u);
    EXPECT_EQ(a.percentile(100), 1000u);
}

struct Checked {
    size_t replies;
    uint64_t errors;
    bool fatal;
    size_t used;
};

Checked check(ReplyChecker &c, const std::string &bytes) {
    Checked r{0, 0, false, 0};
    r.replies = c.consume(bytes.data(), bytes.size(), &r.used, &r.errors, &r.fatal);
    return r;
}

TEST(ReplyChecker, EchoBytesMustMatchTheRequest) {
    ReplyChecker ok(Proto::kEcho32be, 64, 7);
    std::string r0, r1;
    build_request(Proto::kEcho32be, 64, 7, 0, &r0);
    build_request(Proto::kEcho32be, 64, 7, 1, &r1);
    Checked c = check(ok, r0 + r1.substr(0, 10));
    EXPECT_EQ(c.replies, 1u);
    EXPECT_EQ(c.errors, 0u);
    EXPECT_EQ(c.used, r0.size()) << "the partial second reply waits";

    ReplyChecker flipped(Proto::kEcho32be, 64, 7);
    std::string bad = r0;
    bad[40] ^= 1;
    c = check(flipped, bad);
    EXPECT_EQ(c.replies, 1u);
    EXPECT_EQ(c.errors, 1u) << "one wrong byte";

    ReplyChecker other_conn(Proto::kEcho32be, 64, 8);
    c = check(other_conn, r0);
    EXPECT_EQ(c.errors, 1u) << "another connection's reply";

    ReplyChecker reordered(Proto::kEcho32be, 64, 7);
    c = check(reordered, r1 + r0);
    EXPECT_EQ(c.errors, 2u) << "replies out of order";

    ReplyChecker wrong_len(Proto::kEcho32be, 64, 7);
    c = check(wrong_len, std::string("\x00\x00\x00\x09hello", 9));
    EXPECT_EQ(c.errors, 1u);
    EXPECT_TRUE(c.fatal);
}

TEST(ReplyChecker, RespWantsPong) {
    ReplyChecker c(Proto::kResp, 0, 0);
    Checked r = check(c, "+PONG\r\n+PONG\r\n+PO");
    EXPECT_EQ(r.replies, 2u);
    EXPECT_EQ(r.errors, 0u);
    ReplyChecker bad(Proto::kResp, 0, 0);
    r = check(bad, "-ERR unknown command 'PING'\r\n+PONG\r\n");
    EXPECT_EQ(r.replies, 2u);
    EXPECT_EQ(r.errors, 1u);
    ReplyChecker bulk(Proto::kResp, 0, 0);
    r = check(bulk, "$4\r\nPONG\r\n");
    EXPECT_EQ(r.errors, 1u);
    EXPECT_TRUE(r.fatal);
}

TEST(ReplyChecker, HttpWants200) {
    ReplyChecker c(Proto::kHttp, 0, 0);
    std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    std::string missing = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    Checked r = check(c, ok + missing + ok.substr(0, 20));
    EXPECT_EQ(r.replies, 2u);
    EXPECT_EQ(r.errors, 1u) << "a 404 is an error";
    EXPECT_EQ(r.used, ok.size() + missing.size());
    ReplyChecker chunked(Proto::kHttp, 0, 0);
    r = check(chunked, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    EXPECT_TRUE(r.fatal);
}

std::string bench_bin() {
    const char *b = getenv("ASYNCD_BENCH_BIN");
    return b && *b ? b : "build/asyncd-bench";
}

int run(const std::string &cmd, std::string *out) {
    FILE *p = popen((cmd + " 2>&1").c_str(), "r");
    char buf[512];
    out->clear();
    while (p && fgets(buf, sizeof buf, p))
        *out += buf;
    int status = p ? pclose(p) : -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The real tool against the real server: right replies pass and are counted; a server that
// answers something else fails the run.
TEST(AsyncdBench, ShortRunAgainstAsyncd) {
    test::Server server("workers 2\nplugin " + test::plugin_path("echo.so") + "\n");
    std::string why;
    ASSERT_TRUE(server.start(&why)) << why;
    std::string json = server.dir() + "/r.json", svg = server.dir() + "/r.svg", out;
    std::string target = " 127.0.0.1:" + std::to_string(server.port());
    int rc =
        run(bench_bin() + " -q -c 10 -P 4 -n 5000 -s 100 --json " + json + " --svg " + svg + target,
            &out);
    EXPECT_EQ(rc, 0) << out;
    std::ifstream in(json);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_NE(ss.str().find("\"completed\": 5000,"), std::string::npos) << ss.str();
    EXPECT_NE(ss.str().find("\"wrong_replies\": 0,"), std::string::npos) << ss.str();
    std::ifstream svg_in(svg);
    std::string first;
    std::getline(svg_in, first);
    EXPECT_EQ(first.rfind("<svg", 0), 0u) << first;
    // Open loop, by duration.
    rc = run(bench_bin() + " -q -c 4 -R 2000 -d 1" + target, &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("0 wrong replies"), std::string::npos) << out;
    EXPECT_EQ(server.stop(), 0);

    test::Server wrong("workers 1\nplugin " + test::plugin_path("route.so") + "\n");
    ASSERT_TRUE(wrong.start(&why)) << why;
    rc = run(bench_bin() + " -q -c 2 -n 100 -s 2 127.0.0.1:" + std::to_string(wrong.port()), &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("first error: reply"), std::string::npos) << out;
    EXPECT_EQ(wrong.stop(), 0);
}

std::string slurp_file(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The chart: a title that fits its width, both value axes from 0 with their units, and two
// earlier runs' --json results drawn on one chart with a legend naming each.
TEST(AsyncdBench, TwoEarlierRunsOnOneChart) {
    test::Server server("workers 1\nplugin " + test::plugin_path("echo.so") + "\n");
    std::string why;
    ASSERT_TRUE(server.start(&why)) << why;
    std::string d = server.dir(), out;
    std::string target = " 127.0.0.1:" + std::to_string(server.port());
    ASSERT_EQ(run(bench_bin() + " -q -c 4 -P 2 -n 20000 --json " + d + "/before.json --svg " + d +
                      "/one.svg" + target,
                  &out),
              0)
        << out;
    ASSERT_EQ(
        run(bench_bin() + " -q -c 8 -P 8 -n 40000 --json " + d + "/after.json" + target, &out), 0)
        << out;
    ASSERT_EQ(
        run(bench_bin() + " --svg " + d + "/both.svg " + d + "/before.json " + d + "/after.json",
            &out),
        0)
        << out;
    for (const char *name : {"/one.svg", "/both.svg"}) {
        std::string svg = slurp_file(d + name);
        EXPECT_NE(svg.find(">0 ns</text>"), std::string::npos) << name << ": the latency axis's 0";
        EXPECT_NE(svg.find("percentile of requests"), std::string::npos) << name;
        // No line of text runs past the chart: the title is wrapped at 95 characters.
        size_t at = 0;
        while ((at = svg.find("<text", at)) != std::string::npos) {
            size_t gt = svg.find('>', at), end = svg.find("</text>", at);
            EXPECT_LE(end - gt - 1, 112u) << svg.substr(gt + 1, end - gt - 1);
            at = end;
        }
    }
    std::string both = slurp_file(d + "/both.svg");
    size_t curves = 0;
    for (size_t at = 0; (at = both.find("class=\"curve\"", at)) != std::string::npos; at++)
        curves++;
    EXPECT_EQ(curves, 2u);
    EXPECT_NE(both.find("class=\"legend\" x=\"40\" y=\"36\">before.json: len32be c=4 P=2"),
              std::string::npos)
        << both.substr(0, 800);
    EXPECT_NE(both.find(">after.json: len32be c=8 P=8"), std::string::npos);
    // Anything but a result file is refused, with its name.
    std::ofstream(d + "/junk.json") << "{}";
    EXPECT_EQ(
        run(bench_bin() + " --svg " + d + "/x.svg " + d + "/before.json " + d + "/junk.json", &out),
        2);
    EXPECT_NE(out.find("junk.json: not a result of asyncd-bench --json"), std::string::npos) << out;
}

// Batch pipelining (write P, wait for all P), the target as -h HOST -p PORT, and the
// server's CPU per request from --server-pid (asyncd's supervisor: conn and the workers
// below it): every reply right, the mode named, and a CPU figure that a run which did
// nothing could not have.
TEST(AsyncdBench, BatchModeAndServerCpuPerRequest) {
    test::Server server("workers 1\nplugin " + test::plugin_path("echo.so") + "\n");
    std::string why;
    ASSERT_TRUE(server.start(&why)) << why;
    std::string json = server.dir() + "/b.json", out;
    // /proc counts CPU time in clock ticks (10 ms here): enough requests that the server's
    // share is many ticks, never a round-down to 0 (20,000 once took less than a tick).
    int rc = run(bench_bin() + " -q -c 4 -P 16 --batch -n 300000 --server-pid " +
                     std::to_string(server.pid()) + " --json " + json + " -h 127.0.0.1 -p " +
                     std::to_string(server.port()),
                 &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("pipeline 16 (batch)"), std::string::npos) << out;
    EXPECT_NE(out.find("ns of CPU per request (3 processes"), std::string::npos)
        << "the supervisor, conn and the worker: " << out;
    std::string j = slurp_file(json);
    EXPECT_NE(j.find("\"completed\": 300000,"), std::string::npos) << j;
    EXPECT_NE(j.find("\"mode\": \"batch\""), std::string::npos) << j;
    size_t at = j.find("\"server_cpu_ns_per_request\": ");
    ASSERT_NE(at, std::string::npos) << j;
    double ns = atof(j.c_str() + at + strlen("\"server_cpu_ns_per_request\": "));
    EXPECT_GT(ns, 0) << "300000 requests cost the server some CPU";
    EXPECT_LT(ns, 1e7) << "and not 10 ms each";
    // Split by process: conn and the worker each appear, and their shares add up.
    at = j.find("\"server_cpu_ns_per_request_by_process\": {");
    ASSERT_NE(at, std::string::npos) << j;
    std::string split = j.substr(at, j.find('}', at) - at);
    double sum = 0;
    for (const char *name : {"\"asyncd-conn\": ", "\"asyncd-work0\": "}) {
        size_t p = split.find(name);
        ASSERT_NE(p, std::string::npos) << split;
        sum += atof(split.c_str() + p + strlen(name));
    }
    EXPECT_GT(sum, 0) << split;
    EXPECT_LE(sum, ns * 1.0001) << split;
    // -p is the port now; a protocol name there is refused with a hint.
    rc = run(bench_bin() + " -q -n 10 -p resp", &out);
    EXPECT_EQ(rc, 2) << out;
    EXPECT_NE(out.find("the protocol is -e"), std::string::npos) << out;
    EXPECT_EQ(server.stop(), 0);
}

}  // namespace
}  // namespace asyncd::bench
