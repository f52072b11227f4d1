// The one clock of asyncd's loops and timers: monotonic milliseconds.
#pragma once

#include <sched.h>
#include <time.h>

#include <cstdint>

namespace asyncd {

inline uint64_t monotonic_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// The same clock at the resolution of a scheduler tick (a few ms), and cheaper to read:
// for stamps that are compared against seconds.
inline uint64_t coarse_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

inline uint64_t monotonic_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// One step of a polling loop: yields the CPU. *now_ns is the time before the yield on entry
// and after it on return. Returns false when the yield handed the CPU to another process for
// a while: the CPU is contended, polling only steals from processes with work, and the
// caller should sleep instead. (On an idle CPU the yield returns at once, and polling costs
// nobody anything.) One clock read per step: at tens of ns a read, a poll that read the
// clock around every step spent more on the clock than on looking.
inline bool poll_yield(uint64_t *now_ns) {
    uint64_t before = *now_ns;
    sched_yield();
    *now_ns = monotonic_ns();
    return *now_ns - before < 5000;
}

}  // namespace asyncd
