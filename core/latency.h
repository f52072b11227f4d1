// How long the plugin's callbacks take, and how long packets wait in the ring: log-linear
// histograms (core/log_linear.h, the error bound of asyncd-bench's) in the stats mapping,
// one writer each (the worker), read by anyone. Times are taken with the CPU's time-stamp
// counter where it has one (x86-64: about 7 ns a read, against 30 for clock_gettime), and
// turned into nanoseconds with the rate the supervisor measured at start.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/clock.h"
#include "core/log_linear.h"
#include "core/stats.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace asyncd {

inline uint64_t ticks() {
#if defined(__x86_64__) || defined(__i386__)
    return __rdtsc();
#else
    return monotonic_ns();
#endif
}

// Nanoseconds per tick, times 2^32. Measures the tick rate against CLOCK_MONOTONIC.
uint64_t measure_ns_per_tick_q32();

inline uint64_t ticks_to_ns(uint64_t t, uint64_t ns_per_tick_q32) {
    return uint64_t((unsigned __int128)t * ns_per_tick_q32 >> 32);
}

// Up to 2^34 ns (17 s): a longer time lands in the last bucket (max_ns keeps it).
inline constexpr uint64_t kLatencyCapNs = (uint64_t(1) << 34) - 1;
inline constexpr size_t kLatencyBuckets = log_linear_index(kLatencyCapNs) + 1;

struct LatencyHist {
    Counter count, sum_ns, max_ns;
    Counter buckets[kLatencyBuckets];
};

inline void record(LatencyHist &h, uint64_t ns) {
    if (ns > kLatencyCapNs) {
        if (ns > get(h.max_ns)) set(h.max_ns, ns);
        ns = kLatencyCapNs;
    } else if (ns > get(h.max_ns)) {
        set(h.max_ns, ns);
    }
    bump(h.buckets[log_linear_index(ns)]);
    bump(h.sum_ns, ns);
    bump(h.count);
}

// Which of a stream of events are timed: about one in `every`, at random gaps from 1 to
// 2 * every - 1, so that traffic with a period of its own (pipelined batches of 16, say)
// cannot always put the same one of its packets in front of the clock, and a new process's
// first events are not always the ones timed. every 0: none; 1: all.
struct Sampler {
    uint32_t every = 0;
    uint32_t countdown = 1;
    uint64_t rng = 1;

    void reset(uint32_t n, uint64_t seed) {
        every = n;
        rng = seed | 1;
        countdown = gap();
    }
    uint32_t gap() {
        if (every <= 1) return 1;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return 1 + uint32_t(rng % (2 * uint64_t(every) - 1));
    }
    bool due() {
        if (!every || --countdown) return false;
        countdown = gap();
        return true;
    }
};

// What each worker times. Callbacks not named here (init_service, fini_service) are not.
enum TimingKind {
    kTimePacket,
    kTimeNode,
    kTimeTimer,
    kTimeEvents,
    kTimeCallDone,
    kTimeLink,
    kTimeRingWait,
    kTimingKinds
};
inline constexpr int kHandlerKinds = kTimeRingWait;   // the kinds that are plugin callbacks
extern const char *const kTimingNames[kTimingKinds];  // "packet", ..., "ring_wait"

struct WorkerTiming {
    LatencyHist kinds[kTimingKinds];
};

// The worker slot's histograms: they follow the Stats struct in its mapping.
inline WorkerTiming *worker_timing(Stats *s, int w) {
    return reinterpret_cast<WorkerTiming *>(reinterpret_cast<char *>(s) + sizeof(Stats)) + w;
}
inline const WorkerTiming *worker_timing(const Stats *s, int w) {
    return worker_timing(const_cast<Stats *>(s), w);
}

// A histogram read once: its buckets copied, and the figures from them.
struct LatencySummary {
    uint64_t count = 0, sum_ns = 0, max_ns = 0, p50_ns = 0, p99_ns = 0;
};
// The value at percentile p of these buckets (the highest value of the bucket holding that
// rank), 0 when empty.
uint64_t percentile_of(const uint64_t *buckets, size_t n, uint64_t total, double p);
LatencySummary summarize(const LatencyHist &h);
// Buckets as a copy (for diffs), and their total.
uint64_t copy_buckets(const LatencyHist &h, uint64_t *out);

}  // namespace asyncd
