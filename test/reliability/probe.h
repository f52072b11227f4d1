// What the reliability tests read off a running asyncd and print: scale of the run, FIGURE
// lines, numbers in the log, and a process's CPU time, fds and memory from /proc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace asyncd::test {

using Clock = std::chrono::steady_clock;

// ASYNCD_TEST_SCALE (default 1); `make reliability` runs with a larger one.
int scale();
bool long_run();

// Prints "FIGURE <scenario> <text>", which `make reliability` tabulates.
void figure(const char *scenario, const std::string &text);

// The numbers that follow each occurrence of `before` in text, in order.
std::vector<uint64_t> numbers_after(const std::string &text, const std::string &before);

double ms_since(Clock::time_point t);
// Milliseconds from now until end (0 once it has passed), for poll().
int ms_left(Clock::time_point end);

// Config lines for `workers` workers running the named plugin, then `extra`.
std::string base(const std::string &plugin, int workers, const std::string &extra = "");

std::string read_text(const std::string &path);

// CPU seconds a process has used (user + system).
double cpu_seconds(pid_t pid);
int fd_count(pid_t pid);
// fds of pid without O_CLOEXEC, described.
std::vector<std::string> inheritable_fds(pid_t pid);
// Gone, or a zombie nobody has reaped yet: either way it runs no more.
bool dead(pid_t pid);
// A status field in KiB: "VmRSS" (all resident memory) or "RssAnon" (private memory: the
// shared rings and tables, whose pages count once touched, left out).
long status_kib(pid_t pid, const char *field);
long rss_kib(pid_t pid);

class Server;

// Files and text the black-box tests share.
// Writes a whole file under a new name and renames it into place: a reader (a reload, a
// dlopen) never sees half a file.
bool spit(const std::string &path, const std::string &text);
// The same, with the bytes of `from` (and `tail` after them); false if `from` is empty.
bool copy_file(const std::string &from, const std::string &to, const std::string &tail = "");
bool ends_with(const std::string &s, const std::string &tail);
// The log lines that contain both a and b.
std::vector<std::string> lines_with(const std::string &log, const std::string &a,
                                    const std::string &b = "");
// The payloads of the whole length-prefixed frames in bytes, in order.
std::vector<std::string> frames_in(const std::string &bytes);

// The admin listener's port, from its "admin: http://HOST:PORT/ ..." line, or 0.
uint16_t admin_port(const Server &s);
// The value of an unlabelled metric from the admin listener's GET /metrics, or -1.
long long metric(uint16_t admin, const std::string &name);

}  // namespace asyncd::test
