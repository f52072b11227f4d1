#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

namespace asyncd {

namespace {

const char *const kLevelNames[] = {"DEBUG", "INFO", "WARN", "ERROR", "CRIT", "ALERT"};

}  // namespace

bool parse_log_level(const std::string &name, LogLevel *out) {
    for (int i = 0; i <= int(LogLevel::kAlert); i++) {
        if (strcasecmp(name.c_str(), kLevelNames[i]) == 0) {
            *out = LogLevel(i);
            return true;
        }
    }
    return false;
}

const char *log_level_name(LogLevel level) {
    return kLevelNames[int(level)];
}

Log::~Log() {
    if (fd_ > 2) close(fd_);
}

bool Log::open(const std::string &path, LogLevel level, std::string *err) {
    level_ = level;
    path_ = (path == "-") ? "" : path;
    return reopen(err);
}

bool Log::reopen(std::string *err) {
    if (path_.empty()) {
        if (fd_ > 2) close(fd_);
        fd_ = 2;
        return true;
    }
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (err) *err = "open(\"" + path_ + "\"): " + strerror(errno);
        return false;
    }
    if (fd_ > 2) close(fd_);
    fd_ = fd;
    return true;
}

void Log::set_role(const char *role, int index) {
    if (index >= 0) {
        snprintf(role_, sizeof role_, "%s%d", role, index);
    } else {
        snprintf(role_, sizeof role_, "%s", role);
    }
}

void Log::write(LogLevel level, const char *fmt, ...) {
    if (!enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    vwrite(level, fmt, ap);
    va_end(ap);
}

void Log::write_limited(LogLimit *limit, uint64_t now_ms, LogLevel level, const char *fmt, ...) {
    uint64_t suppressed = 0;
    if (!enabled(level) || !limit->allow(now_ms, &suppressed)) return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (suppressed) {
        write(level, "%s (%llu similar lines suppressed)", text, (unsigned long long)suppressed);
    } else {
        write(level, "%s", text);
    }
}

void Log::vwrite(LogLevel level, const char *fmt, va_list ap) {
    if (!enabled(level)) return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02d %02d:%02d:%02d.%03d [%s] %s %d: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     int(tv.tv_usec / 1000), kLevelNames[int(level)], role_, int(getpid()));
    int room = int(sizeof line) - n - 1;
    int m = vsnprintf(line + n, size_t(room), fmt, ap);
    n += m < 0 ? 0 : (m >= room ? room - 1 : m);
    line[n++] = '\n';
    ssize_t unused = ::write(fd_, line, size_t(n));  // a lost log line is not worth a retry
    (void)unused;
}

}  // namespace asyncd
