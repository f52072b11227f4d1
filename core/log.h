// One log per process: time, level, process role and index, pid, message, one write() per
// line. The level says who is at fault: a client's bad input is INFO, a limit tripped or a
// restart WARN, resource exhaustion CRIT, a broken invariant ALERT (tests fail on ALERT).
#pragma once

#include <stdarg.h>

#include <cstdint>

#include <string>

namespace asyncd {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kCrit, kAlert };

[[nodiscard]] bool parse_log_level(const std::string &name, LogLevel *out);
const char *log_level_name(LogLevel level);

// Lets one kind of log line through at most `per_second` times a second and counts the
// rest, so that a flood of bad clients cannot become a flood of log lines.
class LogLimit {
  public:
    explicit LogLimit(int per_second) : per_second_(per_second) {}
    // True if a line may go out now; *suppressed is how many were held back before it.
    bool allow(uint64_t now_ms, uint64_t *suppressed) {
        if (now_ms - window_ms_ >= 1000) {
            window_ms_ = now_ms;
            used_ = 0;
        }
        if (used_ >= per_second_) {
            suppressed_++;
            return false;
        }
        used_++;
        *suppressed = suppressed_;
        suppressed_ = 0;
        return true;
    }

  private:
    int per_second_;
    int used_ = 0;
    uint64_t window_ms_ = 0;
    uint64_t suppressed_ = 0;
};

class Log {
  public:
    Log() = default;
    ~Log();
    Log(const Log &) = delete;
    Log &operator=(const Log &) = delete;

    // path "-" or empty: stderr. Otherwise appended to, created 0644. On failure returns
    // false with the call and errno text in *err and keeps logging to stderr.
    [[nodiscard]] bool open(const std::string &path, LogLevel level, std::string *err);
    // Reopens the file (after logrotate moved it). Returns false if that failed.
    bool reopen(std::string *err);
    void set_level(LogLevel level) { level_ = level; }
    // "sup", "conn", "work" plus an index for workers (-1: none).
    void set_role(const char *role, int index);

    bool enabled(LogLevel level) const { return level >= level_; }
    void write(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    void vwrite(LogLevel level, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
    // write() through a LogLimit: a line that gets through says how many like it did not.
    void write_limited(LogLimit *limit, uint64_t now_ms, LogLevel level, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

  private:
    int fd_ = 2;
    std::string path_;
    LogLevel level_ = LogLevel::kInfo;
    char role_[24] = "asyncd";
};

}  // namespace asyncd
