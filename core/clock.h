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

// One step of a polling loop: yields the CPU. *now_ns is the time the step began (before
// its look) on entry, and the time after the yield on return: one clock read per step, as a
// read costs about 34 ns here. Returns false when the step took long enough that the yield
// must have handed the CPU to another process: the CPU is contended, polling only steals
// from processes with work, and the caller should sleep instead. (On an idle CPU the yield
// returns at once, and polling costs nobody anything.)
inline bool poll_yield(uint64_t *now_ns) {
    uint64_t before = *now_ns;
    sched_yield();
    *now_ns = monotonic_ns();
    return *now_ns - before < 5000;
}

}  // namespace asyncd
