// Marks the time a plugin callback started for the supervisor's hang detector, and clears
// it when the callback returns; and records how long it took, for one callback in
// handler_timing of each kind: two reads of the time-stamp counter and a histogram's update
// cost about 35 ns here, where a worker spends 40 ns of CPU on an echo request at full load.
#pragma once

#include "core/channels.h"
#include "core/clock.h"
#include "core/latency.h"
#include "core/records.h"

namespace asyncd::work {

// The worker's handler timing (null when handler_timing is off).
struct CallbackTimer {
    WorkerTiming *timing = nullptr;
    uint64_t ns_per_tick_q32 = 0;
    uint64_t paused = 0;  // ticks the callback under way waited for conn: not its own time
    // One sampler per kind (handler_timing). A packet's callback is timed when conn
    // stamped it, conn's sampler having picked it: the ring wait needs conn's stamp, and
    // conn then reads the counter for those packets only.
    Sampler sample[kTimingKinds];

    void seed(uint32_t every, uint64_t s) {
        for (Sampler &k : sample)
            k.reset(every, s += 0x9e3779b97f4a7c15ull);
    }

    // A packet conn stamped when it read it (packet_stamp of its seq) and handed to the
    // plugin at `started` (0: not timed).
    void waited(uint64_t started, uint64_t stamp) {
        if (!started || !stamp) return;
        record(timing->kinds[kTimeRingWait],
               ticks_to_ns(ticks_since_stamp(stamp, started), ns_per_tick_q32));
    }
};

inline constexpr int kTimingOf[] = {
    -1,            // kNone
    -1,            // kInit
    kTimePacket,   // kPacket
    kTimeLink,     // kLinkUp
    kTimeLink,     // kLinkDown
    kTimeEvents,   // kEvents
    kTimeTimer,    // kTimer
    -1,            // kFini
    kTimeNode,     // kNode
    kTimeLink,     // kNodeLink
    kTimeCallDone  // kCallDone
};
static_assert(sizeof kTimingOf / sizeof kTimingOf[0] == size_t(Callback::kCallDone) + 1,
              "a timing kind for every callback");

// One per callback: a loop of short callbacks (link_down_cli for every connection at a
// stop, timers due together) is many short ones, never one long one.
class InCallback {
  public:
    // timed: whether to time this one (a packet: conn decided), or -1: the kind's sampler.
    InCallback(WorkerState *s, Callback cb, CallbackTimer *t, int timed = -1) : s_(s) {
        s_->callback.store(uint32_t(cb), std::memory_order_relaxed);
        s_->busy_since_ms.store(coarse_ms(), std::memory_order_relaxed);
        int kind = kTimingOf[size_t(cb)];
        if (t && kind >= 0 && (timed < 0 ? t->sample[kind].due() : timed > 0)) {
            timer_ = t;
            hist_ = &t->timing->kinds[kind];
            t->paused = 0;
            started_ = ticks();
        }
    }
    ~InCallback() {
        s_->busy_since_ms.store(0, std::memory_order_relaxed);
        if (!hist_) return;
        uint64_t took = ticks() - started_;
        // Another CPU's counter a hair behind (the worker moved): no time, not 2^64 ticks.
        if (int64_t(took) < 0) took = 0;
        took = took > timer_->paused ? took - timer_->paused : 0;
        record(*hist_, ticks_to_ns(took, timer_->ns_per_tick_q32));
    }
    InCallback(const InCallback &) = delete;
    InCallback &operator=(const InCallback &) = delete;

    uint64_t started() const { return started_; }  // 0 when this one is not timed

  private:
    WorkerState *s_;
    CallbackTimer *timer_ = nullptr;
    LatencyHist *hist_ = nullptr;
    uint64_t started_ = 0;
};

}  // namespace asyncd::work
