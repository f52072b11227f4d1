// core/loop: fd watches reach their handlers, timers run in deadline order (periodic ones
// until cancelled), and the hooks run in their places around the wait.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include <string>
#include <vector>

#include "core/clock.h"
#include "core/loop.h"
#include "test/unit/unit_util.h"

namespace asyncd {
namespace {

using unittest::Pipe;

// Turns until cond holds, at most `turns` times (each turn blocks at most until its next
// timer, which every test here has).
template <class Cond>
bool turn_until(Loop &loop, Cond cond, int turns = 1000) {
    for (int i = 0; i < turns && !cond(); i++) {
        if (!loop.turn()) return false;
    }
    return cond();
}

TEST(Loop, AWatchCarriesItsHandler) {
    Loop loop;
    std::string err;
    ASSERT_TRUE(loop.open(&err)) << err;
    Pipe a, b;
    std::vector<char> seen;
    FnHandler ha([&](uint32_t) {
        char c;
        while (read(a.fd[0], &c, 1) == 1)
            seen.push_back(c);
    });
    FnHandler hb([&](uint32_t) {
        char c;
        while (read(b.fd[0], &c, 1) == 1)
            seen.push_back(char(c + 1));
    });
    ASSERT_TRUE(loop.add(a.fd[0], EPOLLIN, &ha));
    ASSERT_TRUE(loop.add(b.fd[0], EPOLLIN, &hb));
    ASSERT_EQ(write(a.fd[1], "x", 1), 1);
    ASSERT_EQ(write(b.fd[1], "a", 1), 1);
    loop.add_timer(5000, [] {});  // a bound for every wait
    ASSERT_TRUE(turn_until(loop, [&] { return seen.size() == 2; }));
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(std::string(seen.begin(), seen.end()), "bx");
    loop.remove(a.fd[0]);
    ASSERT_EQ(write(a.fd[1], "y", 1), 1);
    ASSERT_EQ(write(b.fd[1], "c", 1), 1);
    ASSERT_TRUE(turn_until(loop, [&] { return seen.size() == 3; }));
    EXPECT_EQ(seen.back(), 'd') << "the removed watch is not called";
}

TEST(Loop, TimersRunInDeadlineOrderAndPeriodicUntilCancelled) {
    Loop loop;
    std::string err;
    ASSERT_TRUE(loop.open(&err)) << err;
    std::string order;
    uint64_t t0 = monotonic_ms();  // before the timers are armed: they count from here on
    loop.add_timer(30, [&] { order += 'c'; });
    loop.add_timer(10, [&] { order += 'a'; });
    uint64_t never = loop.add_timer(20, [&] { order += 'X'; });
    loop.add_timer(20, [&] { order += 'b'; });
    EXPECT_TRUE(loop.cancel_timer(never));
    EXPECT_FALSE(loop.cancel_timer(never)) << "once";
    int ticks = 0;
    uint64_t tick = 0;
    tick = loop.add_periodic(5, [&] {
        if (++ticks == 4) {
            EXPECT_TRUE(loop.cancel_timer(tick));  // from its own callback
        }
    });
    ASSERT_TRUE(turn_until(loop, [&] { return order.size() == 3 && ticks >= 4; }));
    EXPECT_EQ(order, "abc");
    EXPECT_GE(monotonic_ms() - t0, 30u) << "nothing ran before its time";
    loop.add_timer(20, [] {});
    ASSERT_TRUE(loop.turn());
    EXPECT_EQ(ticks, 4) << "a cancelled periodic timer stays cancelled";
}

TEST(Loop, HooksRunAroundTheWait) {
    Loop loop;
    std::string err;
    ASSERT_TRUE(loop.open(&err)) << err;
    std::string trace;
    bool ready_now = false;
    loop.on_may_sleep([&](int timeout) {
        trace += timeout == 0 ? "p" : "s";
        return !ready_now;  // something it waits for is there: no sleep
    });
    loop.on_after_wake([&] { trace += "w"; });
    loop.on_after_events([&] { trace += "e"; });
    loop.on_end_of_turn([&] { trace += "|"; });
    // A turn that may block (its next timer is a minute away) asks may_sleep first; the fd
    // that is ready already ends the wait at once.
    Pipe p;
    FnHandler h([&](uint32_t) {
        char c;
        while (read(p.fd[0], &c, 1) == 1)
            trace += "r";
    });
    ASSERT_TRUE(loop.add(p.fd[0], EPOLLIN, &h));
    uint64_t far = loop.add_timer(60000, [&] { trace += "t"; });
    ASSERT_EQ(write(p.fd[1], "x", 1), 1);
    ASSERT_TRUE(loop.turn());
    EXPECT_EQ(trace, "swre|");
    // Timers run after the events' hooks.
    ASSERT_TRUE(loop.cancel_timer(far));
    trace.clear();
    loop.add_timer(1, [&] { trace += "t"; });
    ASSERT_TRUE(turn_until(loop, [&] { return trace.find('t') != std::string::npos; }));
    EXPECT_EQ(trace.substr(trace.size() - 4), "wet|") << trace;
    // A hook that finds its work ready makes the wait a poll: the turn does not block.
    trace.clear();
    ready_now = true;
    loop.add_timer(60000, [] {});
    uint64_t t0 = monotonic_ms();
    ASSERT_TRUE(loop.turn());
    EXPECT_LT(monotonic_ms() - t0, 1000u);
    EXPECT_EQ(trace, "swe|");
    // A turn left with more to do polls without asking.
    trace.clear();
    ready_now = false;
    loop.set_more(true);
    ASSERT_TRUE(loop.turn());
    EXPECT_EQ(trace, "we|") << "no may_sleep when there is more to do";
}

}  // namespace
}  // namespace asyncd
