// An event loop in the spirit of redis's ae: an epoll set whose watches carry their handler,
// one-shot and periodic timers (the Timers of core/timers.h, the worker's facility too), and
// named hooks around the wait. The loop knows none of its users: a client connection, a
// worker's rings, the signalfd and the supervisor's pipes each register a watch or a hook,
// and nothing reaches into another's fds.
//
// One turn: wait (after a busy-poll window, and only once every may_sleep hook agreed),
// dispatch the events, after_events, the timers that are due, end_of_turn.
#pragma once

#include <sys/epoll.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/cpu_contention.h"
#include "core/timers.h"

namespace asyncd {

// What an fd watch calls. Long-lived users (a client connection) derive from it, so that a
// watch costs no allocation; the rest use FnHandler.
class FdHandler {
  public:
    virtual void on_events(uint32_t events) = 0;

  protected:
    ~FdHandler() = default;
};

class FnHandler final : public FdHandler {
  public:
    explicit FnHandler(std::function<void(uint32_t)> fn) : fn_(std::move(fn)) {}
    void on_events(uint32_t events) override { fn_(events); }

  private:
    std::function<void(uint32_t)> fn_;
};

class Loop {
  public:
    Loop() = default;
    ~Loop();
    Loop(const Loop &) = delete;
    Loop &operator=(const Loop &) = delete;

    // Makes the epoll set. False with the call and errno in *err.
    [[nodiscard]] bool open(std::string *err);
    int fd() const { return ep_; }

    // Fd watches. The handler must outlive the watch, and a watch removed during a turn may
    // still see the events that turn's wait returned for it: free a handler at the end of
    // a turn (the way conn reaps a connection), never from inside a callback. False with
    // errno set when epoll_ctl refuses.
    [[nodiscard]] bool add(int fd, uint32_t events, FdHandler *handler);
    [[nodiscard]] bool modify(int fd, uint32_t events, FdHandler *handler);
    void remove(int fd);

    // Timers, in milliseconds of core/clock.h's monotonic clock. A periodic timer runs every
    // `every_ms` from its first run until it is cancelled. Ids are never 0.
    using TimerFn = std::function<void()>;
    uint64_t add_timer(uint32_t delay_ms, TimerFn fn);
    uint64_t add_periodic(uint32_t every_ms, TimerFn fn);
    bool cancel_timer(uint64_t id);

    // Hooks, each called in the order added. may_sleep: the loop is about to block for
    // `timeout` ms (-1: until an event); a hook announces its sleep (a ring's
    // prepare_sleep) and returns false when what it waits for is there already, which makes
    // the wait a poll. after_wake: after a blocking wait, to withdraw those announcements.
    // ready: in the busy-poll window, whether something outside the fds (a ring) has work.
    void on_after_events(std::function<void()> fn) { after_events_.push_back(std::move(fn)); }
    void on_end_of_turn(std::function<void()> fn) { end_of_turn_.push_back(std::move(fn)); }
    void on_may_sleep(std::function<bool(int)> fn) { may_sleep_.push_back(std::move(fn)); }
    void on_after_wake(std::function<void()> fn) { after_wake_.push_back(std::move(fn)); }
    void on_ready(std::function<bool()> fn) { ready_.push_back(std::move(fn)); }

    // Busy polling: for poll_us after a turn that did work (note_work()), the loop polls
    // the fds and the ready hooks instead of sleeping; for contended_us (at most poll_us)
    // while no CPU would sit idle (see CpuContention).
    void set_busy_poll_us(int poll_us, int contended_us = 0) {
        poll_ns_ = uint64_t(poll_us) * 1000;
        contended_ns_ = std::min(poll_ns_, uint64_t(contended_us) * 1000);
    }
    CpuContention &cpu() { return cpu_; }
    void note_work(uint64_t now_ns) { last_work_ns_ = now_ns; }
    // Something is left to do without waiting (a batch limit was hit): the next wait polls.
    void set_more(bool more) { more_ = more; }

    // One turn. False when epoll_wait failed with something other than EINTR (errno set).
    bool turn();
    // The turn's time, read once after the wait.
    uint64_t now_ms() const { return now_ms_; }

  private:
    int wait(int timeout);
    int next_timeout();
    bool ready();

    int ep_ = -1;
    // Timers holds plain function pointers and an argument: each timer's argument is its
    // entry here, under the id the loop gave out (a periodic timer's Timers id changes at
    // every run; its loop id does not).
    struct TimerEntry {
        Loop *loop;
        uint64_t id;
        uint64_t timers_id;
        uint32_t every_ms;  // 0: one-shot
        TimerFn fn;
    };
    static void fire(void *arg);
    uint64_t schedule(uint32_t delay_ms, uint32_t every_ms, TimerFn fn);

    Timers timers_;
    std::unordered_map<uint64_t, std::unique_ptr<TimerEntry>> timer_entries_;
    uint64_t last_timer_id_ = 0;
    std::vector<std::function<void()>> after_events_, end_of_turn_, after_wake_;
    std::vector<std::function<bool(int)>> may_sleep_;
    std::vector<std::function<bool()>> ready_;
    uint64_t poll_ns_ = 0, contended_ns_ = 0;
    uint64_t last_work_ns_ = 0;
    uint64_t now_ms_ = 0;
    bool more_ = false;
    CpuContention cpu_;
    static constexpr int kMaxEvents = 512;
    struct epoll_event events_[kMaxEvents];
};

}  // namespace asyncd
