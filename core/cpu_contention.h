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

namespace asyncd {

class CpuContention {
  public:
    explicit CpuContention(const char *stat_path = "/proc/stat");
    ~CpuContention();
    CpuContention(const CpuContention &) = delete;
    CpuContention &operator=(const CpuContention &) = delete;

    // The server-wide polling counter, in ns (nullptr: this process's own).
    void share_poll_time(std::atomic<uint64_t> *counter) { polled_ = counter ? counter : &own_; }
    // A stretch of polling that just ended.
    void polled(uint64_t ns) { polled_->fetch_add(ns, std::memory_order_relaxed); }
    bool high(uint64_t now_ns);

    static constexpr uint64_t kWindowNs = 100000000;

  private:
    bool read_idle_ns(uint64_t *idle_ns);

    int fd_ = -1;
    uint64_t tick_ns_ = 10000000;
    uint64_t next_ns_ = 0;  // 0: no sample taken yet
    uint64_t last_ns_ = 0, last_idle_ns_ = 0, last_polled_ = 0;
    bool high_ = false;
    std::atomic<uint64_t> own_{0};
    std::atomic<uint64_t> *polled_ = &own_;
};

}  // namespace asyncd
