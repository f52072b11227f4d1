// cluster/calls: every call completes exactly once, from run() or a result, never twice;
// late and foreign results are dropped and counted; deadlines and node failures end the
// right calls, in the order they were made.
#include "cluster/calls.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace asyncd::cluster {
namespace {

constexpr int kTimeout = 2, kLinkLost = 5, kUnknown = 3;

struct Seen {
    std::vector<std::string> log;
};

void record(void *arg, uint64_t call, int status, int code, const void *reply, size_t len) {
    auto *s = static_cast<Seen *>(arg);
    s->log.push_back(std::to_string(call) + ":" + std::to_string(status) + ":" +
                     std::to_string(code) + ":" +
                     std::string(static_cast<const char *>(reply ? reply : ""), len));
}

TEST(Calls, IdsAreNeverZeroNorReused) {
    Seen s;
    CallTable t(0, 100);
    uint64_t a = t.add("db", 100, record, &s);
    uint64_t b = t.add("db", 100, record, &s);
    uint64_t c = t.add_failed(kUnknown, record, &s);
    EXPECT_NE(a, 0u);
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    CallTable u(uint64_t(7) << 40, 100);  // a replacement worker's range
    EXPECT_EQ(u.add("db", 1, record, &s), uint64_t(7) << 40);
}

TEST(Calls, AResultCompletesOnceAndALateOneIsDropped) {
    Seen s;
    CallTable t(1, 100);
    uint64_t a = t.add("db", 1000, record, &s);
    EXPECT_EQ(t.pending(), 1u);
    EXPECT_TRUE(t.complete(a, 0, 0, "pong", 4));
    EXPECT_EQ(s.log, std::vector<std::string>{std::to_string(a) + ":0:0:pong"});
    EXPECT_FALSE(t.complete(a, 0, 0, "again", 5)) << "twice";
    EXPECT_FALSE(t.complete(999, 0, 0, nullptr, 0)) << "never ours";
    EXPECT_EQ(t.dropped(), 2u);
    EXPECT_EQ(t.run(5000, kTimeout), 0u) << "no timeout for a completed call";
    EXPECT_EQ(s.log.size(), 1u);
    uint64_t at;
    EXPECT_FALSE(t.next_deadline_ms(&at));
}

TEST(Calls, DeadlinesEndCallsWithTimeoutAndALaterAnswerIsDropped) {
    Seen s;
    CallTable t(1, 100);
    uint64_t late = t.add("db", 300, record, &s);
    uint64_t early = t.add("db", 100, record, &s);
    uint64_t at;
    ASSERT_TRUE(t.next_deadline_ms(&at));
    EXPECT_EQ(at, 100u);
    EXPECT_EQ(t.run(99, kTimeout), 0u);
    EXPECT_EQ(t.run(100, kTimeout), 1u);
    EXPECT_EQ(s.log, std::vector<std::string>{std::to_string(early) + ":2:0:"});
    ASSERT_TRUE(t.next_deadline_ms(&at));
    EXPECT_EQ(at, 300u);
    EXPECT_EQ(t.run(1000, kTimeout), 1u);
    EXPECT_EQ(s.log.back(), std::to_string(late) + ":2:0:");
    EXPECT_FALSE(t.complete(late, 0, 0, "too late", 8));
    EXPECT_EQ(t.dropped(), 1u);
}

TEST(Calls, ImmediateFailuresRunFromTheLoopNotFromAdd) {
    Seen s;
    CallTable t(1, 100);
    uint64_t a = t.add_failed(kUnknown, record, &s);
    EXPECT_TRUE(s.log.empty()) << "not from inside node_call";
    uint64_t at = 99;
    ASSERT_TRUE(t.next_deadline_ms(&at));
    EXPECT_EQ(at, 0u) << "due at once";
    EXPECT_EQ(t.run(0, kTimeout), 1u);
    EXPECT_EQ(s.log, std::vector<std::string>{std::to_string(a) + ":3:0:"});
    EXPECT_EQ(t.run(0, kTimeout), 0u) << "once";
}

// A call whose record could not be written ends from the loop too, once, and its deadline
// and a late answer find nothing.
TEST(Calls, AFailureDecidedAfterAddRunsFromTheLoop) {
    Seen s;
    CallTable t(1, 100);
    uint64_t a = t.add("db", 50, record, &s);
    EXPECT_TRUE(t.fail_later(a, 6));
    EXPECT_TRUE(s.log.empty());
    EXPECT_FALSE(t.fail_later(a, 6)) << "not pending any more";
    EXPECT_EQ(t.run(100, kTimeout), 1u) << "past its deadline: still only the failure";
    EXPECT_EQ(s.log, std::vector<std::string>{std::to_string(a) + ":6:0:"});
    EXPECT_FALSE(t.complete(a, 0, 0, "x", 1));
    EXPECT_EQ(t.run(200, kTimeout), 0u);
}

TEST(Calls, ANodeFailureEndsItsCallsInTheOrderTheyWereMade) {
    Seen s;
    CallTable t(1, 100);
    uint64_t a = t.add("game2", 1000, record, &s);
    uint64_t other = t.add("db", 1000, record, &s);
    uint64_t b = t.add("game2", 500, record, &s);
    EXPECT_EQ(t.fail_node("game2", kLinkLost), 2u);
    EXPECT_EQ(s.log,
              (std::vector<std::string>{std::to_string(a) + ":5:0:", std::to_string(b) + ":5:0:"}));
    EXPECT_EQ(t.pending(), 1u);
    EXPECT_EQ(t.run(2000, kTimeout), 1u);
    EXPECT_EQ(s.log.back(), std::to_string(other) + ":2:0:");
}

struct Ender {
    CallTable *t;
    uint64_t other = 0;
    int ran = 0;
};

void end_other(void *arg, uint64_t, int, int, const void *, size_t) {
    auto *e = static_cast<Ender *>(arg);
    e->ran++;
    uint64_t other = e->other;
    e->other = 0;
    if (other) e->t->complete(other, 0, 0, "ok", 2);  // ends a call due in the same run
}

TEST(Calls, ACallbackThatEndsAnotherDueCallIsNoDrop) {
    CallTable t(1, 100);
    Ender e{&t};
    t.add("db", 10, end_other, &e);
    e.other = t.add("db", 10, end_other, &e);
    EXPECT_EQ(t.run(10, kTimeout), 1u) << "the second ended inside the first's callback";
    EXPECT_EQ(e.ran, 2);
    EXPECT_EQ(t.dropped(), 0u);
    EXPECT_EQ(t.pending(), 0u);
}

TEST(Calls, TheTableIsBounded) {
    Seen s;
    CallTable t(1, 2);
    EXPECT_NE(t.add("db", 10, record, &s), 0u);
    EXPECT_NE(t.add("db", 10, record, &s), 0u);
    EXPECT_EQ(t.add("db", 10, record, &s), 0u) << "full: the caller answers QUEUE_FULL";
    t.run(10, kTimeout);
    EXPECT_NE(t.add("db", 10, record, &s), 0u) << "room again";
}

struct Again {
    CallTable *t;
    int calls = 0;
};

void call_again(void *arg, uint64_t, int, int, const void *, size_t) {
    auto *a = static_cast<Again *>(arg);
    a->calls++;
    a->t->add("db", 0, call_again, a);  // already due: waits for the next run
}

TEST(Calls, ACallbackThatCallsAgainCannotSpinTheLoop) {
    CallTable t(1, 100);
    Again a{&t};
    t.add("db", 5, call_again, &a);
    EXPECT_EQ(t.run(10, kTimeout), 1u);
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(t.run(10, kTimeout), 1u);
    EXPECT_EQ(a.calls, 2);
}

}  // namespace
}  // namespace asyncd::cluster
