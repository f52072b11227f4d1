// core/cpu_contention: busy polling is allowed while what would sit idle without it (the
// box's idle time plus the pollers' polling time) reaches a whole CPU, and refused below.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

#include "core/clock.h"
#include "core/cpu_contention.h"
#include "core/loop.h"
#include "test/unit/unit_util.h"

#include <fcntl.h>
#include <sys/epoll.h>

namespace asyncd {
namespace {

class FakeStat {
  public:
    FakeStat() {
        char tmpl[] = "/tmp/asyncd-stat-XXXXXX";
        int fd = mkstemp(tmpl);
        EXPECT_GE(fd, 0);
        close(fd);
        path_ = tmpl;
        set_idle_ticks(0);
    }
    ~FakeStat() { unlink(path_.c_str()); }
    // user nice system idle iowait irq softirq steal: idle and iowait both count as idle.
    void set_idle_ticks(uint64_t idle, uint64_t iowait = 0) {
        FILE *f = fopen(path_.c_str(), "w");
        ASSERT_NE(f, nullptr);
        fprintf(f, "cpu  100 0 50 %llu %llu 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n",
                (unsigned long long)idle, (unsigned long long)iowait);
        fclose(f);
    }
    const char *path() const { return path_.c_str(); }

  private:
    std::string path_;
};

using unittest::Pipe;

uint64_t ticks_in(uint64_t ns) {
    return ns / (1000000000 / uint64_t(sysconf(_SC_CLK_TCK)));
}

constexpr uint64_t kWindow = CpuContention::kWindowNs;
constexpr uint64_t kT0 = 1000000000;

TEST(CpuContention, NothingIdleAndNobodyPollingMeansContended) {
    FakeStat stat;
    CpuContention gate(stat.path());
    EXPECT_FALSE(gate.high(kT0)) << "no window seen yet: poll as configured";
    EXPECT_TRUE(gate.high(kT0 + kWindow));
}

TEST(CpuContention, ACpuIdleAllowsPolling) {
    FakeStat stat;
    CpuContention gate(stat.path());
    gate.high(kT0);
    stat.set_idle_ticks(ticks_in(kWindow));
    EXPECT_FALSE(gate.high(kT0 + kWindow));
    stat.set_idle_ticks(ticks_in(kWindow) + ticks_in(kWindow * 3 / 4));
    EXPECT_TRUE(gate.high(kT0 + 2 * kWindow)) << "three quarters of a CPU idle is too little";
    stat.set_idle_ticks(ticks_in(kWindow * 2), ticks_in(kWindow * 3 / 4));
    EXPECT_FALSE(gate.high(kT0 + 3 * kWindow)) << "iowait is idle too";
}

TEST(CpuContention, PollingTimeCountsAsWhatWouldSitIdle) {
    FakeStat stat;
    std::atomic<uint64_t> shared{0};
    CpuContention gate(stat.path()), other(stat.path());
    gate.share_poll_time(&shared);
    other.share_poll_time(&shared);
    gate.high(kT0);
    gate.polled(kWindow / 2);
    other.polled(kWindow / 2);  // another process of the server polled as long
    EXPECT_FALSE(gate.high(kT0 + kWindow));
    gate.polled(kWindow / 2);  // only half of that in the next window, and nothing idle
    EXPECT_TRUE(gate.high(kT0 + 2 * kWindow));
}

TEST(CpuContention, TheAnswerHoldsForAWindow) {
    FakeStat stat;
    CpuContention gate(stat.path());
    gate.high(kT0);
    EXPECT_TRUE(gate.high(kT0 + kWindow));
    stat.set_idle_ticks(ticks_in(10 * kWindow));
    EXPECT_TRUE(gate.high(kT0 + kWindow + kWindow / 2)) << "sampled once per window";
    EXPECT_FALSE(gate.high(kT0 + 2 * kWindow));
}

TEST(CpuContention, WithoutProcItNeverRefuses) {
    CpuContention gate("/nonexistent/stat");
    for (uint64_t t = kT0; t < kT0 + 5 * kWindow; t += kWindow)
        EXPECT_FALSE(gate.high(t));
}

// The loop adds its polling stretches to the counter it shares: the other pollers' gates
// count them as time that would sit idle.
TEST(CpuContention, TheLoopAccountsItsPolling) {
    Loop loop;
    std::string err;
    ASSERT_TRUE(loop.open(&err)) << err;
    std::atomic<uint64_t> shared{0};
    loop.cpu().share_poll_time(&shared);
    loop.set_busy_poll_us(2000, 2000);
    loop.add_timer(60000, [] {});  // a bound for every wait
    Pipe p;
    int handled = 0;
    FnHandler h([&](uint32_t) {
        char c;
        while (read(p.fd[0], &c, 1) == 1)
            handled++;
    });
    ASSERT_TRUE(loop.add(p.fd[0], EPOLLIN, &h));
    // Each turn: work just noted, nothing there yet, so it polls; an event written before
    // the turn is found by the poll at once. A turn whose first yield gave the CPU away
    // accounts nothing (that time was another process's), so try a few.
    uint64_t total = 0;
    for (int i = 0; i < 50 && shared.load() == 0; i++) {
        uint64_t before = monotonic_ns();
        loop.note_work(before);
        ASSERT_EQ(write(p.fd[1], "x", 1), 1);
        ASSERT_TRUE(loop.turn());
        total += monotonic_ns() - before;
    }
    EXPECT_GT(handled, 0);
    EXPECT_GT(shared.load(), 0u) << "polling that found the event was accounted";
    EXPECT_LE(shared.load(), total) << "never more than the turns took";
}

}  // namespace
}  // namespace asyncd
