#include "core/cpu_contention.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace asyncd {

CpuContention::CpuContention(const char *stat_path) {
    fd_ = open(stat_path, O_RDONLY | O_CLOEXEC);
    long hz = sysconf(_SC_CLK_TCK);
    if (hz > 0) tick_ns_ = uint64_t(1000000000 / hz);
}

CpuContention::~CpuContention() {
    if (fd_ >= 0) close(fd_);
}

// The first line: "cpu  user nice system idle iowait irq softirq steal ...", in clock ticks.
bool CpuContention::read_idle_ns(uint64_t *idle_ns) {
    char buf[256];
    ssize_t n = pread(fd_, buf, sizeof buf - 1, 0);
    if (n <= 0) return false;
    buf[n] = 0;
    if (strncmp(buf, "cpu ", 4) != 0) return false;
    char *p = buf + 4;
    uint64_t v[5];
    for (uint64_t &x : v) {
        char *end;
        x = strtoull(p, &end, 10);
        if (end == p) return false;
        p = end;
    }
    *idle_ns = (v[3] + v[4]) * tick_ns_;
    return true;
}

bool CpuContention::high(uint64_t now_ns) {
    if (fd_ < 0) return false;  // no /proc: poll as configured
    if (now_ns < next_ns_) return high_;
    uint64_t idle;
    if (!read_idle_ns(&idle)) {
        next_ns_ = now_ns + kWindowNs;  // not again before the next window
        return high_;
    }
    uint64_t polled = polled_->load(std::memory_order_relaxed);
    if (sampled_ && now_ns > last_ns_) {
        // Counters that went back (a restarted peer's shared counter is not reset, but be
        // safe) count as nothing idle.
        uint64_t free_ns = (idle >= last_idle_ns_ ? idle - last_idle_ns_ : 0) +
                           (polled >= last_polled_ ? polled - last_polled_ : 0);
        high_ = free_ns < (now_ns - last_ns_);
    }
    sampled_ = true;
    last_ns_ = now_ns;
    last_idle_ns_ = idle;
    last_polled_ = polled;
    next_ns_ = now_ns + kWindowNs;
    return high_;
}

}  // namespace asyncd
