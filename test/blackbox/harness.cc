#include "test/blackbox/harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

namespace asyncd::test {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point end) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    return left.count() < 0 ? 0 : int(left.count());
}

bool file_exists(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

std::string read_file(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

std::string asyncd_bin() {
    const char *bin = getenv("ASYNCD_BIN");
    return bin && *bin ? bin : "build/asyncd";
}

std::string plugin_path(const std::string &name) {
    const char *dir = getenv("ASYNCD_PLUGIN_DIR");
    std::string candidates[] = {dir ? std::string(dir) + "/" + name : "",
                                "build/test-plugins/" + name, "build/plugins/" + name};
    for (const auto &c : candidates) {
        if (!c.empty() && file_exists(c)) {
            char real[4096];
            return realpath(c.c_str(), real) ? std::string(real) : c;
        }
    }
    return "build/test-plugins/" + name;
}

std::string shell_quote(const std::string &text) {
    std::string out = "'";
    for (char c : text) {
        if (c == '\'') {
            out += "'\\''";
        } else {
            out += c;
        }
    }
    return out + "'";
}

int run_shell(const std::string &cmd, std::string *out, int timeout_s) {
    std::string full =
        "timeout " + std::to_string(timeout_s) + " sh -c " + shell_quote(cmd) + " 2>&1";
    FILE *p = popen(full.c_str(), "r");
    if (!p) return -1;
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        text.append(buf, n);
    int st = pclose(p);
    if (out) *out = text;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// GET path from the admin listener: the body, or "" on failure.
std::string http_get(uint16_t port, const std::string &path) {
    Client c;
    if (!c.connect(port)) return "";
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    if (!c.send_all(req.data(), req.size())) return "";
    std::string resp;
    if (!c.read_to_close(&resp)) return "";
    size_t at = resp.find("\r\n\r\n");
    return at == std::string::npos ? "" : resp.substr(at + 4);
}

// Every line of Prometheus text is a comment or `name{labels} value`; returns the values
// by their full name (with labels), or fails the test on a bad line.
std::map<std::string, double> parse_prometheus(const std::string &text) {
    std::map<std::string, double> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        size_t sp = line.rfind(' ');
        EXPECT_NE(sp, std::string::npos) << line;
        if (sp == std::string::npos) continue;
        std::string name = line.substr(0, sp), value = line.substr(sp + 1);
        char *end = nullptr;
        double v = strtod(value.c_str(), &end);
        EXPECT_TRUE(end && *end == '\0' && !value.empty()) << "bad value: " << line;
        size_t brace = name.find('{');
        std::string base = name.substr(0, brace);
        EXPECT_FALSE(base.empty()) << line;
        for (char ch : base) {
            EXPECT_TRUE(isalnum((unsigned char)ch) || ch == '_' || ch == ':') << line;
        }
        if (brace != std::string::npos) {
            EXPECT_EQ(name.back(), '}') << line;
        }
        out[name] = v;
    }
    return out;
}

int listen_loopback(uint16_t *port, int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        listen(fd, backlog) != 0 || getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

// A port nothing listens on, below the kernel's ephemeral range (32768 and up here): a port
// from that range can be taken by any outgoing connection between this call and the bind
// of the server it is for, and the tests make many.
int free_port() {
    static std::mt19937 rng(std::random_device{}());
    for (int tries = 0; tries < 1000; tries++) {
        int port = 20000 + int(rng() % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(uint16_t(port));
        bool ok = bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    return 0;
}

bool have_tool(const std::string &tool) {
    return run_shell("command -v " + shell_quote(tool)) == 0;
}

bool eventually(const std::function<bool()> &cond, std::chrono::milliseconds deadline) {
    auto end = Clock::now() + deadline;
    while (!cond()) {
        if (Clock::now() > end) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

Server::Server(std::string config_body) : config_body_(std::move(config_body)) {
    char tmpl[] = "/tmp/asyncd-test-XXXXXX";
    dir_ = mkdtemp(tmpl) ? tmpl : "/tmp";
}

Server::~Server() {
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = 0;
    }
    if (!getenv("ASYNCD_KEEP_TEST_DIRS")) {
        std::string cmd = "rm -rf '" + dir_ + "'";
        if (dir_.rfind("/tmp/asyncd-test-", 0) == 0 && system(cmd.c_str()) != 0) {
            // leaving a temporary folder behind is harmless
        }
    }
}

void Server::launch() {
    std::string body = config_body_;
    if (body.find("listen ") == std::string::npos) body += "\nlisten 127.0.0.1:0\n";
    if (body.find("log_file ") == std::string::npos) body += "\nlog_file " + dir_ + "/asyncd.log\n";
    {
        std::ofstream out(config_path());
        out << body << "\n";
    }
    std::string bin = binary_.empty() ? asyncd_bin() : binary_;
    std::string conf = config_path();
    std::string err_path = dir_ + "/stderr.log";
    pid_ = fork();
    if (pid_ == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        // asyncd starts with stdin, stdout and stderr only, so that any other fd its
        // processes hold is one they opened (R17 checks those are close-on-exec).
        close_range(3, ~0u, 0);
        if (nofile_) {
            struct rlimit rl = {nofile_, nofile_};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        execl(bin.c_str(), bin.c_str(), "-c", conf.c_str(), static_cast<char *>(nullptr));
        _exit(127);
    }
}

bool Server::start(std::string *why) {
    launch();
    std::string err_path = dir_ + "/stderr.log";
    const std::string ready = "asyncd ready: listening on ";
    bool ok = eventually(
        [&] {
            std::string l = log();
            size_t at = l.find(ready);
            if (at == std::string::npos) return false;
            size_t end = l.find(',', at);
            size_t colon = l.rfind(':', end);
            port_ = uint16_t(atoi(l.substr(colon + 1, end - colon - 1).c_str()));
            return port_ != 0;
        },
        std::chrono::seconds(20));
    if (!ok) {
        *why = "asyncd did not become ready; log:\n" + log() + "\nstderr:\n" + read_file(err_path);
        return false;
    }
    return true;
}

int Server::run_to_exit(std::chrono::milliseconds deadline) {
    launch();
    int status = 0;
    bool exited = eventually([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, deadline);
    if (!exited) return -1;
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int Server::stop(std::chrono::milliseconds deadline) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    return wait_exit(deadline);
}

int Server::wait_exit(std::chrono::milliseconds deadline) {
    if (pid_ <= 0) return -1;
    int status = 0;
    bool exited = eventually([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, deadline);
    if (!exited) return -1;
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Server::log() const {
    return read_file(dir_ + "/asyncd.log");
}

int Server::count_log(const std::string &needle) const {
    std::string l = log();
    int n = 0;
    for (size_t at = l.find(needle); at != std::string::npos; at = l.find(needle, at + 1))
        n++;
    return n;
}

bool Server::wait_log(const std::string &needle, int times,
                      std::chrono::milliseconds deadline) const {
    return eventually([&] { return count_log(needle) >= times; }, deadline);
}

std::vector<pid_t> Server::children() const {
    std::vector<pid_t> out;
    DIR *d = opendir("/proc");
    if (!d) return out;
    while (struct dirent *e = readdir(d)) {
        pid_t p = atoi(e->d_name);
        if (p <= 0) continue;
        std::string stat = read_file("/proc/" + std::string(e->d_name) + "/stat");
        size_t rp = stat.rfind(')');
        if (rp == std::string::npos) continue;
        std::istringstream rest(stat.substr(rp + 2));
        char state;
        pid_t ppid = 0;
        rest >> state >> ppid;
        if (ppid == pid_ && state != 'Z') out.push_back(p);
    }
    closedir(d);
    return out;
}

pid_t Server::child(const std::string &comm) const {
    for (pid_t p : children()) {
        std::string c = read_file("/proc/" + std::to_string(p) + "/comm");
        while (!c.empty() && c.back() == '\n')
            c.pop_back();
        if (c == comm) return p;
    }
    return 0;
}

void expect_clean_logs(const std::map<std::string, std::unique_ptr<Server>> &servers) {
    for (const auto &e : servers) {
        if (!e.second) continue;
        for (const auto &line : e.second->unexpected_lines())
            ADD_FAILURE() << e.first << ": " << line;
    }
}

std::vector<std::string> Server::unexpected_lines() const {
    std::vector<std::string> out;
    std::istringstream in(log() + "\n" + read_file(dir_ + "/stderr.log"));
    std::string line;
    while (std::getline(in, line)) {
        bool allowed = false;
        for (const auto &a : allowed_)
            allowed = allowed || line.find(a) != std::string::npos;
        if (allowed) continue;
        if (line.find("[ALERT]") != std::string::npos ||
            line.find("ERROR: AddressSanitizer") != std::string::npos ||
            line.find("runtime error:") != std::string::npos ||
            line.find("LeakSanitizer") != std::string::npos) {
            out.push_back(line);
        }
    }
    return out;
}

Client::~Client() {
    close();
}

Client::Client(Client &&other) noexcept : fd_(other.fd_) {
    other.fd_ = -1;
}

bool Client::connect(uint16_t port) {
    close();
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) < 0) {
        close();
        return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return true;
}

void Client::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

bool Client::send_all(const void *data, size_t len) {
    const char *p = static_cast<const char *>(data);
    while (len) {
        ssize_t n = ::send(fd_, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        len -= size_t(n);
    }
    return true;
}

std::string frame(const std::string &payload) {
    uint32_t total = uint32_t(payload.size() + 4);
    std::string out(4, '\0');
    out[0] = char(total >> 24);
    out[1] = char(total >> 16);
    out[2] = char(total >> 8);
    out[3] = char(total);
    return out + payload;
}

bool Client::send_frame(const std::string &payload) {
    std::string f = frame(payload);
    return send_all(f.data(), f.size());
}

bool Client::recv_exact(void *buf, size_t len, std::chrono::milliseconds deadline) {
    auto end = Clock::now() + deadline;
    char *p = static_cast<char *>(buf);
    while (len) {
        struct pollfd pfd = {fd_, POLLIN, 0};
        int r = poll(&pfd, 1, ms_left(end));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        ssize_t n = ::recv(fd_, p, len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        len -= size_t(n);
    }
    return true;
}

bool Client::recv_frame(std::string *payload, std::chrono::milliseconds deadline) {
    unsigned char hdr[4];
    if (!recv_exact(hdr, 4, deadline)) return false;
    uint32_t total = (uint32_t(hdr[0]) << 24) | (uint32_t(hdr[1]) << 16) | (uint32_t(hdr[2]) << 8) |
                     uint32_t(hdr[3]);
    if (total < 4) return false;
    payload->assign(total - 4, '\0');
    return total == 4 || recv_exact(&(*payload)[0], total - 4, deadline);
}

bool Client::wait_closed(std::chrono::milliseconds deadline) {
    return read_to_close(nullptr, deadline);
}

bool Client::read_to_close(std::string *out, std::chrono::milliseconds deadline) {
    auto end = Clock::now() + deadline;
    char buf[4096];
    for (;;) {
        struct pollfd pfd = {fd_, POLLIN, 0};
        int r = poll(&pfd, 1, ms_left(end));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0 && out) out->append(buf, size_t(n));
        if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
        if (n < 0 && errno != EINTR) return true;
    }
}

std::string Client::call(const std::string &payload) {
    std::string out;
    if (!send_frame(payload) || !recv_frame(&out)) return "<no answer>";
    return out;
}

std::string chromium_command(const std::string &dir) {
    for (const char *b : {"chromium", "chromium-browser", "google-chrome"}) {
        if (have_tool(b)) {
            return std::string("timeout 90 ") + b +
                   " --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run "
                   "--virtual-time-budget=4000 --window-size=1000,1500 --user-data-dir=" +
                   shell_quote(dir + "/chromium");
        }
    }
    return "";
}

bool dump_dom(const std::string &browser, const std::string &url, std::string *dom) {
    dom->clear();
    return run_shell(browser + " --dump-dom " + url + " 2>/dev/null", dom, 100) == 0;
}

}  // namespace asyncd::test
