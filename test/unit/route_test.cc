// cluster/route: KEY routing is stable and moves few keys when a node grows; conn's session
// records find every call in flight once, and a node's or a worker's failure ends exactly
// theirs, in order.
#include "cluster/route.h"

#include <gtest/gtest.h>

#include <map>
#include <vector>

namespace asyncd::cluster {
namespace {

TEST(Route, KeysSpreadEvenlyAndStay) {
    std::map<int, int> count;
    for (uint64_t k = 0; k < 40000; k++) {
        int w = key_worker(k * 0x9e3779b97f4a7c15ull, 4);
        ASSERT_GE(w, 0);
        ASSERT_LT(w, 4);
        count[w]++;
        EXPECT_EQ(key_worker(k * 0x9e3779b97f4a7c15ull, 4), w) << "the same key, the same worker";
    }
    for (const auto &c : count)
        EXPECT_NEAR(c.second, 10000, 600) << "worker " << c.first;
    EXPECT_EQ(key_worker(12345, 1), 0);
    EXPECT_EQ(key_worker(12345, 0), 0);
}

TEST(Route, GrowingMovesOnlyTheNewWorkersShare) {
    int moved = 0;
    const int n = 20000;
    for (uint64_t k = 0; k < uint64_t(n); k++) {
        int a = key_worker(k, 4), b = key_worker(k, 5);
        if (a != b) {
            moved++;
            EXPECT_EQ(b, 4) << "a key that moves goes to the new worker";
        }
    }
    EXPECT_NEAR(moved, n / 5, n / 50) << "about a fifth of the keys move";
}

TEST(Route, AReplyFindsItsCallOnce) {
    Sessions s;
    uint64_t a = s.open_out({"db", 1, 77, 1000});
    uint64_t b = s.open_out({"db", 2, 78, 1000});
    EXPECT_NE(a, 0u);
    EXPECT_NE(a, b);
    Sessions::Out o;
    ASSERT_TRUE(s.close_out(b, &o));
    EXPECT_EQ(o.worker, 2);
    EXPECT_EQ(o.call, 78u);
    EXPECT_FALSE(s.close_out(b, &o)) << "a second reply is dropped";
    EXPECT_FALSE(s.close_out(999, &o)) << "one for a session never issued too";
    EXPECT_EQ(s.out_pending(), 1u);
}

TEST(Route, ALostLinkEndsTheCallsWrittenOnItInOrder) {
    Sessions s;
    s.open_out({"game2", 0, 1, 0});
    s.open_out({"db", 0, 2, 0});
    s.open_out({"game2", 1, 3, 0});
    auto gone = s.fail_node("game2");
    ASSERT_EQ(gone.size(), 2u);
    EXPECT_EQ(gone[0].call, 1u);
    EXPECT_EQ(gone[1].call, 3u);
    EXPECT_EQ(s.out_pending(), 1u);
}

TEST(Route, IncomingCallsEndWithTheirWorkerOrLink) {
    Sessions s;
    uint64_t r1 = s.open_in({7, 100, 0, 0});
    uint64_t r2 = s.open_in({7, 101, 1, 0});
    uint64_t r3 = s.open_in({8, 5, 0, 0});
    Sessions::In in;
    ASSERT_TRUE(s.close_in(r2, &in));
    EXPECT_EQ(in.peer_session, 101u);
    EXPECT_FALSE(s.close_in(r2, &in)) << "answered once";
    auto died = s.fail_worker(0);
    ASSERT_EQ(died.size(), 2u) << "worker 0 had r1 and r3";
    EXPECT_EQ(died[0].peer_session, 100u);
    EXPECT_EQ(died[1].peer_session, 5u);
    (void)r1;
    (void)r3;
    s.open_in({9, 1, 0, 0});
    s.open_in({9, 2, 1, 0});
    EXPECT_EQ(s.drop_link(9), 2u);
    EXPECT_EQ(s.in_pending(), 0u);
}

}  // namespace
}  // namespace asyncd::cluster
