#include "test/reliability/probe.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "test/blackbox/harness.h"

namespace asyncd::test {

int scale() {
    const char *s = getenv("ASYNCD_TEST_SCALE");
    int v = s ? atoi(s) : 1;
    return v < 1 ? 1 : v;
}
bool long_run() {
    return scale() >= 10;
}

void figure(const char *scenario, const std::string &text) {
    printf("FIGURE %s %s\n", scenario, text.c_str());
    fflush(stdout);
}

// The numbers that follow each occurrence of `before` in text, in order. (Plain string
// search: std::regex trips GCC 12's uninitialized-use warnings in the sanitizer build.)
std::vector<uint64_t> numbers_after(const std::string &text, const std::string &before) {
    std::vector<uint64_t> out;
    for (size_t at = text.find(before); at != std::string::npos; at = text.find(before, at + 1)) {
        const char *p = text.c_str() + at + before.size();
        if (*p >= '0' && *p <= '9') out.push_back(strtoull(p, nullptr, 10));
    }
    return out;
}

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int ms_left(Clock::time_point end) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    return left < 0 ? 0 : int(left);
}

std::string base(const std::string &plugin, int workers, const std::string &extra) {
    return "workers " + std::to_string(workers) + "\nplugin " + plugin_path(plugin) + "\n" + extra;
}

std::string read_text(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// CPU seconds a process has used (user + system).
double cpu_seconds(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    size_t rp = stat.rfind(')');
    if (rp == std::string::npos) return 0;
    std::istringstream rest(stat.substr(rp + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; i++) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

int fd_count(pid_t pid) {
    int n = 0;
    DIR *d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
    if (!d) return -1;
    while (struct dirent *e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

// fds of pid without O_CLOEXEC, described.
std::vector<std::string> inheritable_fds(pid_t pid) {
    std::vector<std::string> out;
    std::string dir = "/proc/" + std::to_string(pid) + "/fdinfo";
    DIR *d = opendir(dir.c_str());
    if (!d) return out;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd <= 2) continue;  // stdin/out/err are inherited on purpose
        std::string info = read_text(dir + "/" + e->d_name);
        size_t at = info.find("flags:");
        if (at == std::string::npos) continue;
        unsigned long flags = strtoul(info.c_str() + at + 6, nullptr, 8);
        if (!(flags & 02000000)) out.push_back("pid " + std::to_string(pid) + " fd " + e->d_name);
    }
    closedir(d);
    return out;
}

// Gone, or a zombie nobody has reaped yet: either way it runs no more.
bool dead(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    size_t rp = stat.rfind(')');
    return rp == std::string::npos || stat[rp + 2] == 'Z' || stat[rp + 2] == 'X';
}

// A status field in KiB: "VmRSS" (all resident memory) or "RssAnon" (private memory: the
// shared rings and tables, whose pages count once touched, left out).
long status_kib(pid_t pid, const char *field) {
    std::string s = read_text("/proc/" + std::to_string(pid) + "/status");
    size_t at = s.find(std::string(field) + ":");
    return at == std::string::npos ? -1 : atol(s.c_str() + at + strlen(field) + 1);
}

long rss_kib(pid_t pid) {
    return status_kib(pid, "VmRSS");
}

bool spit(const std::string &path, const std::string &text) {
    std::ofstream out(path + ".tmp", std::ios::binary);
    out << text;
    out.close();
    return out && rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

bool copy_file(const std::string &from, const std::string &to, const std::string &tail) {
    std::string bytes = read_text(from);
    return !bytes.empty() && spit(to, bytes + tail);
}

bool ends_with(const std::string &s, const std::string &tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::vector<std::string> lines_with(const std::string &log, const std::string &a,
                                    const std::string &b) {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
        if (line.find(a) != std::string::npos && line.find(b) != std::string::npos)
            out.push_back(line);
    }
    return out;
}

std::vector<std::string> frames_in(const std::string &bytes) {
    std::vector<std::string> out;
    for (size_t at = 0; bytes.size() - at >= 4;) {
        const auto *h = reinterpret_cast<const unsigned char *>(bytes.data() + at);
        uint32_t total = (uint32_t(h[0]) << 24) | (uint32_t(h[1]) << 16) | (uint32_t(h[2]) << 8) |
                         uint32_t(h[3]);
        if (total < 4 || total > bytes.size() - at) break;
        out.push_back(bytes.substr(at + 4, total - 4));
        at += total;
    }
    return out;
}

uint16_t admin_port(const Server &s) {
    std::string log = s.log();
    size_t at = log.find("admin: http://");
    if (at == std::string::npos) return 0;
    size_t slash = log.find('/', at + strlen("admin: http://"));
    size_t colon = log.rfind(':', slash);
    return uint16_t(atoi(log.substr(colon + 1, slash - colon - 1).c_str()));
}

long long metric(uint16_t admin, const std::string &name) {
    Client c;
    if (!c.connect(admin)) return -1;
    std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string resp;
    if (!c.send_all(req.data(), req.size()) || !c.read_to_close(&resp, std::chrono::seconds(2))) {
        return -1;
    }
    size_t at = resp.find("\n" + name + " ");
    return at == std::string::npos ? -1 : atoll(resp.c_str() + at + name.size() + 2);
}

}  // namespace asyncd::test
