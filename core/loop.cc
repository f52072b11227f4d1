#include "core/loop.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>

#include "core/clock.h"

namespace asyncd {

Loop::~Loop() {
    if (ep_ >= 0) close(ep_);
}

bool Loop::open(std::string *err) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ >= 0) return true;
    *err = std::string("epoll_create1: ") + strerror(errno);
    return false;
}

bool Loop::add(int fd, uint32_t events, FdHandler *handler) {
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.ptr = handler;
    return epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool Loop::modify(int fd, uint32_t events, FdHandler *handler) {
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.ptr = handler;
    return epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Loop::remove(int fd) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
}

uint64_t Loop::schedule(uint32_t delay_ms, uint32_t every_ms, TimerFn fn) {
    auto e = std::make_unique<TimerEntry>();
    e->loop = this;
    e->id = ++last_timer_id_;
    e->every_ms = every_ms;
    e->fn = std::move(fn);
    e->timers_id = timers_.add(monotonic_ms(), delay_ms, &Loop::fire, e.get());
    uint64_t id = e->id;
    timer_entries_.emplace(id, std::move(e));
    return id;
}

uint64_t Loop::add_timer(uint32_t delay_ms, TimerFn fn) {
    return schedule(delay_ms, 0, std::move(fn));
}

uint64_t Loop::add_periodic(uint32_t every_ms, TimerFn fn) {
    return schedule(every_ms, std::max<uint32_t>(every_ms, 1), std::move(fn));
}

bool Loop::cancel_timer(uint64_t id) {
    auto it = timer_entries_.find(id);
    if (it == timer_entries_.end()) return false;
    timers_.cancel(it->second->timers_id);
    timer_entries_.erase(it);
    return true;
}

// A periodic timer is re-armed before its callback runs, so that the callback may cancel
// it; a one-shot one is forgotten after it ran (it may have cancelled itself: no-op then).
void Loop::fire(void *arg) {
    auto *e = static_cast<TimerEntry *>(arg);
    Loop *loop = e->loop;
    uint64_t id = e->id;
    if (e->every_ms) {
        e->timers_id = loop->timers_.add(monotonic_ms(), e->every_ms, &Loop::fire, e);
        TimerFn fn = e->fn;  // the entry may go if the callback cancels it
        fn();
        return;
    }
    TimerFn fn = std::move(e->fn);
    loop->timer_entries_.erase(id);
    fn();
}

int Loop::next_timeout() {
    int64_t in = timers_.next_in(monotonic_ms());
    return in < 0 ? -1 : int(std::min<int64_t>(in, 60000));
}

bool Loop::ready() {
    for (auto &fn : ready_) {
        if (fn()) return true;
    }
    return false;
}

// Right after a turn that did work, polls (the fds and the ready hooks, no sleep) for the
// busy-poll window first: under load the next event is usually that close, and sleeping
// would cost the other side a wakeup write and us a wakeup.
int Loop::wait(int timeout) {
    uint64_t start = monotonic_ns();
    int n = 0;
    // Under contention a short window still pays: the next event usually comes within a
    // few microseconds, and a sleep and a wakeup cost more than that.
    uint64_t window = cpu_.window(start, last_work_ns_, poll_ns_, contended_ns_);
    if (!more_ && cpu_.poll(start, last_work_ns_, window, [&] {
            n = epoll_wait(ep_, events_, kMaxEvents, 0);
            return n != 0 || ready();
        })) {
        return n;
    }
    if (more_) timeout = 0;
    if (timeout != 0) {
        for (auto &fn : may_sleep_) {
            if (!fn(timeout)) timeout = 0;  // every hook still announces: after_wake undoes all
        }
    }
    n = epoll_wait(ep_, events_, kMaxEvents, timeout);
    for (auto &fn : after_wake_)
        fn();
    return n;
}

bool Loop::turn() {
    int n = wait(next_timeout());
    if (n < 0 && errno != EINTR) return false;
    now_ms_ = monotonic_ms();
    for (int i = 0; i < n; i++)
        static_cast<FdHandler *>(events_[i].data.ptr)->on_events(events_[i].events);
    for (auto &fn : after_events_)
        fn();
    timers_.run(monotonic_ms());
    for (auto &fn : end_of_turn_)
        fn();
    return true;
}

}  // namespace asyncd
