// The black-box harness: starts the real asyncd binary with a config of the test's, waits
// for it to say it is ready, talks to it over loopback, and stops it. Every wait has a
// deadline; nothing sleeps and hopes.
#pragma once

#include <sys/types.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asyncd::test {

// The asyncd binary (ASYNCD_BIN, default build/asyncd) and a plugin by file name, from
// build/test-plugins or build/plugins (ASYNCD_PLUGIN_DIR overrides the first).
std::string asyncd_bin();
std::string plugin_path(const std::string &name);

// 'text' for sh.
std::string shell_quote(const std::string &text);
// Runs a shell command, bounded by timeout_s, with its stdout and stderr into *out; returns
// its exit code (-1 if it could not run or was killed).
int run_shell(const std::string &cmd, std::string *out = nullptr, int timeout_s = 60);
// GET path from an admin listener: the body, or "" on failure.
std::string http_get(uint16_t port, const std::string &path);
// Every line of Prometheus text is a comment or `name{labels} value`; returns the values
// by their full name (with labels), or fails the test on a bad line.
std::map<std::string, double> parse_prometheus(const std::string &text);
// A listening TCP socket on 127.0.0.1 at a port of the kernel's choice (*port); -1 on error.
int listen_loopback(uint16_t *port, int backlog = 16);
// A loopback TCP port that was free a moment ago (for configs that need a fixed one).
int free_port();
// The tool is on PATH.
bool have_tool(const std::string &tool);
// Headless Chromium's command with the flags the page tests use (scripts run for up to 4 s
// of virtual time, a profile in `dir`), or "" when no browser is installed.
std::string chromium_command(const std::string &dir);
// The page at url after its scripts ran, as Chromium serialises it. False if it failed.
bool dump_dom(const std::string &browser, const std::string &url, std::string *dom);

// Polls cond until it holds or the deadline passes.
bool eventually(const std::function<bool()> &cond,
                std::chrono::milliseconds deadline = std::chrono::seconds(10));

class Server {
  public:
    // config_body: config lines; "listen 127.0.0.1:0" and "log_file" are added unless given.
    explicit Server(std::string config_body);
    ~Server();
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    // Starts asyncd and waits for its "asyncd ready" line. False with the log on failure.
    bool start(std::string *why);
    // Starts asyncd and returns at once (for a server that will never say it is ready).
    void spawn() { launch(); }
    // Starts asyncd and waits for it to exit by itself (for configs that must not serve).
    // Returns the exit code, or -1 if it did not exit within the deadline.
    int run_to_exit(std::chrono::milliseconds deadline);
    // SIGTERM, then waits. Returns the exit code (128+signal if killed), -1 on timeout.
    int stop(std::chrono::milliseconds deadline = std::chrono::seconds(20));
    // Waits for asyncd to exit by itself. Returns the exit code, -1 on timeout.
    int wait_exit(std::chrono::milliseconds deadline = std::chrono::seconds(20));

    pid_t pid() const { return pid_; }
    uint16_t port() const { return port_; }
    std::string dir() const { return dir_; }
    std::string config_path() const { return dir_ + "/asyncd.conf"; }
    std::string log() const;
    // How many log lines contain `needle`.
    int count_log(const std::string &needle) const;
    bool wait_log(const std::string &needle, int times = 1,
                  std::chrono::milliseconds deadline = std::chrono::seconds(10)) const;
    // The pid of the child whose prctl name is `comm` ("asyncd-work0"), or 0.
    pid_t child(const std::string &comm) const;
    std::vector<pid_t> children() const;
    // Log lines at ALERT, and sanitizer reports, that no test expects.
    std::vector<std::string> unexpected_lines() const;
    // An ALERT line containing needle is expected by this test.
    void allow(const std::string &needle) { allowed_.push_back(needle); }
    // Start this binary instead of asyncd_bin().
    void use_binary(const std::string &path) { binary_ = path; }
    // Start asyncd with this RLIMIT_NOFILE (soft and hard); 0 leaves the test's own.
    void set_nofile(unsigned long limit) { nofile_ = limit; }

  private:
    void launch();

    std::string dir_;
    std::string config_body_;
    std::string binary_;
    std::vector<std::string> allowed_;
    pid_t pid_ = 0;
    uint16_t port_ = 0;
    unsigned long nofile_ = 0;
};

// A test failure for each unexpected line (see Server::unexpected_lines) of each named
// server; a null entry (a server the test took away) is skipped.
void expect_clean_logs(const std::map<std::string, std::unique_ptr<Server>> &servers);

// A blocking loopback client with deadlines on every call.
class Client {
  public:
    Client() = default;
    ~Client();
    Client(Client &&other) noexcept;
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    bool connect(uint16_t port);
    // Takes a connected socket (an accepted one) as its own.
    void adopt(int fd) {
        close();
        fd_ = fd;
    }
    void close();
    int fd() const { return fd_; }

    bool send_all(const void *data, size_t len);
    // Sends a frame: 4-byte big-endian length (counting itself) and payload.
    bool send_frame(const std::string &payload);
    // Reads one frame and returns its payload; false on EOF, error or timeout.
    bool recv_frame(std::string *payload,
                    std::chrono::milliseconds deadline = std::chrono::seconds(10));
    bool recv_exact(void *buf, size_t len, std::chrono::milliseconds deadline);
    // True once the server closed the connection (EOF or reset) within the deadline;
    // bytes that arrive before are skipped.
    bool wait_closed(std::chrono::milliseconds deadline = std::chrono::seconds(10));
    // Like wait_closed, keeping the bytes that came before the close in *out.
    bool read_to_close(std::string *out,
                       std::chrono::milliseconds deadline = std::chrono::seconds(10));
    // A frame round trip: send payload, read one frame.
    std::string call(const std::string &payload);

  private:
    int fd_ = -1;
};

std::string frame(const std::string &payload);

// A test that starts one server (start()) and, when it ends, fails on any ALERT line or
// sanitizer report the test did not allow.
class ServerTest : public ::testing::Test {
  protected:
    void start(const std::string &config) {
        server_ = std::make_unique<Server>(config);
        if (!binary_.empty()) server_->use_binary(binary_);
        for (const auto &a : allowed_)
            server_->allow(a);
        std::string why;
        ASSERT_TRUE(server_->start(&why)) << why;
    }
    void TearDown() override {
        if (!server_) return;
        for (const auto &line : server_->unexpected_lines())
            ADD_FAILURE() << line;
    }

    std::unique_ptr<Server> server_;
    std::string binary_;                // another asyncd binary to start, if set
    std::vector<std::string> allowed_;  // ALERT lines this test expects
};

}  // namespace asyncd::test
