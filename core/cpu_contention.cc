#include "core/cpu_contention.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace asyncd {

namespace {

constexpr uint64_t kSampleNs = 2000000;

}  // namespace

CpuContention::CpuContention() {
    fd_ = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    ncpu_ = n > 0 ? int(n) : 1;
}

CpuContention::~CpuContention() {
    if (fd_ >= 0) close(fd_);
}

bool CpuContention::high(uint64_t now_ns) {
    if (fd_ < 0) return false;  // no /proc: poll as configured
    if (now_ns < next_ns_) return high_;
    next_ns_ = now_ns + kSampleNs;
    char buf[128];
    ssize_t n = pread(fd_, buf, sizeof buf - 1, 0);
    if (n <= 0) return high_;
    buf[n] = 0;
    // "0.50 0.40 0.30 3/250 12345": the fourth field counts runnable tasks, us included.
    const char *p = buf;
    for (int field = 0; field < 3 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    if (!p) return high_;
    high_ = atoi(p) > ncpu_;
    return high_;
}

}  // namespace asyncd
