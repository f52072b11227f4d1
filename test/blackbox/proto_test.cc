// The resp and http example plugins against clients nobody here wrote: redis-cli and curl
// (make test installs them when it can; a test without its tool says so and is skipped).
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "test/blackbox/harness.h"

namespace asyncd::test {
namespace {

// Runs a shell command (bounded) and returns what it printed on stdout.
std::string run(const std::string &cmd, int *status = nullptr) {
    std::string out;
    int st = run_shell("(" + cmd + ") 2>/dev/null", &out, 30);
    if (status) *status = st;
    return out;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
        s.pop_back();
    return s;
}

class RespPlugin : public ServerTest {
  protected:
    void SetUp() override {
        if (!have_tool("redis-cli")) {
            GTEST_SKIP() << "redis-cli not found: make test installs redis-tools with apt-get "
                            "when it can, and could not here";
        }
        start("workers 1\nframe plugin\nplugin " + plugin_path("resp.so") + "\n");
    }
    std::string cli(const std::string &args) {
        return trim(run("redis-cli -p " + std::to_string(server_->port()) + " " + args));
    }
};

TEST_F(RespPlugin, RedisCliPingSetGet) {
    EXPECT_EQ(cli("PING"), "PONG");
    EXPECT_EQ(cli("SET greeting 'hello world'"), "OK");
    EXPECT_EQ(cli("GET greeting"), "hello world");
    EXPECT_EQ(cli("GET nothing"), "");  // redis-cli prints nil as an empty line in a pipe
    EXPECT_EQ(cli("INCR counter"), "1");
    EXPECT_EQ(cli("INCR counter"), "2");
    EXPECT_EQ(cli("EXISTS greeting counter nothing"), "2");
    EXPECT_EQ(cli("DEL greeting"), "1");
    EXPECT_EQ(cli("ECHO 'a b'"), "a b");
    std::string unknown = cli("NOSUCHCMD x");
    EXPECT_NE(unknown.find("ERR unknown command 'NOSUCHCMD'"), std::string::npos) << unknown;
}

TEST_F(RespPlugin, RedisCliPipeSendsAThousandCommandsPipelined) {
    std::string path = server_->dir() + "/commands.txt";
    {
        std::ofstream out(path);
        for (int i = 0; i < 1000; i++) {
            std::string k = "key:" + std::to_string(i), v = "value-" + std::to_string(i);
            out << "*3\r\n$3\r\nSET\r\n$" << k.size() << "\r\n"
                << k << "\r\n$" << v.size() << "\r\n"
                << v << "\r\n";
        }
    }
    int status = -1;
    std::string out = run(
        "redis-cli -p " + std::to_string(server_->port()) + " --pipe < " + path + " 2>&1", &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("errors: 0, replies: 1000"), std::string::npos) << out;
    EXPECT_EQ(cli("GET key:999"), "value-999");
    EXPECT_EQ(cli("DBSIZE"), "1000");
}

TEST_F(RespPlugin, MalformedInputGetsAnErrorAndAClose) {
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    ASSERT_TRUE(c.send_all("*1\r\n$4\r\nPING\r\n*x\r\n", 19));
    std::string want = "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n";
    std::string got(want.size(), '\0');
    ASSERT_TRUE(c.recv_exact(&got[0], got.size(), std::chrono::seconds(10)));
    EXPECT_EQ(got, want);
    EXPECT_TRUE(c.wait_closed());
}

class HttpPlugin : public ServerTest {
  protected:
    void SetUp() override {
        if (!have_tool("curl")) {
            GTEST_SKIP() << "curl not found: make test installs it with apt-get when it can, "
                            "and could not here";
        }
        start("workers 2\nframe plugin\nplugin " + plugin_path("http.so") + "\n");
        url_ = "http://127.0.0.1:" + std::to_string(server_->port());
    }
    std::string url_;
};

TEST_F(HttpPlugin, CurlGetsStatusAndBody) {
    EXPECT_EQ(run("curl -s " + url_ + "/"), "Hello from asyncd\n");
    EXPECT_EQ(run("curl -s -o /dev/null -w '%{http_code}' " + url_ + "/"), "200");
    EXPECT_EQ(run("curl -s -o /dev/null -w '%{http_code}' " + url_ + "/missing"), "404");
    EXPECT_EQ(run("curl -s -o /dev/null -w '%{http_code}' -X DELETE " + url_ + "/"), "405");
    std::string head = run("curl -s -I " + url_ + "/");
    EXPECT_NE(head.find("HTTP/1.1 200 OK"), std::string::npos) << head;
    EXPECT_NE(head.find("Content-Length: 18"), std::string::npos) << head;
    // A body is framed by its Content-Length and does not leak into the next request.
    EXPECT_EQ(run("curl -s -o /dev/null -w '%{http_code}' --data 'a=1&b=2' " + url_ + "/form"),
              "405");
}

TEST_F(HttpPlugin, CurlReusesTheConnection) {
    // Three URLs in one curl: one connection, kept alive between them.
    std::string out = run("curl -s -v " + url_ + "/ " + url_ + "/ " + url_ + "/x 2>&1");
    EXPECT_NE(out.find("Re-using existing connection"), std::string::npos) << out;
    EXPECT_EQ(server_->stop(), 0);
    std::string log = server_->log();
    EXPECT_NE(log.find("accepted=1 "), std::string::npos) << log;
}

TEST_F(HttpPlugin, PipelinedRequestsAndConnectionClose) {
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string reqs =
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    ASSERT_TRUE(c.send_all(reqs.data(), reqs.size()));
    std::string got;
    ASSERT_TRUE(c.read_to_close(&got)) << got;
    // Three answers in order, then the close the last one asked for.
    size_t a = got.find("HTTP/1.1 200 OK"), b = got.find("HTTP/1.1 404 Not Found"),
           d = got.rfind("HTTP/1.1 200 OK");
    ASSERT_NE(a, std::string::npos) << got;
    ASSERT_NE(b, std::string::npos) << got;
    EXPECT_LT(a, b);
    EXPECT_LT(b, d);
    EXPECT_NE(got.find("Connection: close", d), std::string::npos) << got;
}

TEST_F(HttpPlugin, MalformedRequestGets400AndAClose) {
    Client c;
    ASSERT_TRUE(c.connect(server_->port()));
    std::string req = "NOT HTTP AT ALL\r\n\r\n";
    ASSERT_TRUE(c.send_all(req.data(), req.size()));
    std::string got;
    ASSERT_TRUE(c.read_to_close(&got)) << got;
    EXPECT_EQ(got.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
}

}  // namespace
}  // namespace asyncd::test
