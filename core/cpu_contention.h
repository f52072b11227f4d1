// Whether busy polling would take CPU from someone. Polling pays off only while a CPU would
// otherwise sit idle; on a box where the clients, conn and the workers already want every
// CPU, a poller steals from them and sleeping is cheaper.
//
// What would sit idle if nobody polled is the box's idle time plus the time the server's
// pollers spent polling: every kWindowNs the gate reads the first (idle) from /proc/stat and
// the second from a counter every poller adds its polling stretches to (shared memory when
// the process has it, else its own). A poller holds a whole CPU while it polls: below one CPU
// of it in the last window, polling would steal, and high() says so until a later window
// says otherwise. (Counting runnable tasks, as
// /proc/loadavg does, cannot tell: the pollers are runnable themselves, and a client that is
// waiting for a CPU is as often asleep in the instant of the sample.)
#pragma once

#include <atomic>
#include <cstdint>

#include "core/clock.h"

namespace asyncd {

class CpuContention {
  public:
    explicit CpuContention(const char *stat_path = "/proc/stat");
    ~CpuContention();
    CpuContention(const CpuContention &) = delete;
    CpuContention &operator=(const CpuContention &) = delete;

    // The server-wide polling counter, in ns (nullptr: this process's own).
    void share_poll_time(std::atomic<uint64_t> *counter) { polled_ = counter ? counter : &own_; }
    // This process's own polling total too (a stats counter only it writes), or nullptr.
    void count_own(std::atomic<uint64_t> *counter) { own_stat_ = counter; }
    // A stretch of polling that just ended.
    void polled(uint64_t ns) {
        polled_->fetch_add(ns, std::memory_order_relaxed);
        if (own_stat_) {
            own_stat_->store(own_stat_->load(std::memory_order_relaxed) + ns,
                             std::memory_order_relaxed);
        }
    }
    bool high(uint64_t now_ns);

    // The busy-poll window of a wait that starts at start_ns, work having been done at
    // since_ns: poll_ns while a CPU would sit idle, else contended_ns (at most poll_ns).
    uint64_t window(uint64_t start_ns, uint64_t since_ns, uint64_t poll_ns, uint64_t contended_ns) {
        if (!poll_ns || start_ns - since_ns >= poll_ns || !high(start_ns)) return poll_ns;
        return contended_ns < poll_ns ? contended_ns : poll_ns;
    }

    // The polling itself: calls found() until it says true, window_ns after since_ns has
    // passed, or a yield hands the CPU to another process for a while. The time up to the
    // last yield that came straight back is added as polling (after one that did not, the
    // time was that process's, not idle). True when found() said so.
    template <class Found>
    bool poll(uint64_t start_ns, uint64_t since_ns, uint64_t window_ns, Found found) {
        uint64_t counted = start_ns;
        bool got = false;
        for (uint64_t now = start_ns; now - since_ns < window_ns;) {
            if (found()) {
                got = true;
                counted = monotonic_ns();
                break;
            }
            if (!poll_yield(&now)) break;
            counted = now;
        }
        if (counted > start_ns) polled(counted - start_ns);
        return got;
    }

    static constexpr uint64_t kWindowNs = 100000000;

  private:
    bool read_idle_ns(uint64_t *idle_ns);

    int fd_ = -1;
    uint64_t tick_ns_ = 10000000;
    uint64_t next_ns_ = 0;
    bool sampled_ = false;  // last_* hold a sample
    uint64_t last_ns_ = 0, last_idle_ns_ = 0, last_polled_ = 0;
    bool high_ = false;
    std::atomic<uint64_t> own_{0};
    std::atomic<uint64_t> *polled_ = &own_;
    std::atomic<uint64_t> *own_stat_ = nullptr;
};

}  // namespace asyncd
