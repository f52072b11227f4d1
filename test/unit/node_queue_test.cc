// cluster/node_queue: what waits for a node's link is bounded in frames and bytes, leaves
// in order, and what outlives its deadline is taken out, never sent late.
#include "cluster/node_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace asyncd::cluster {
namespace {

QueuedFrame frame(uint64_t call, uint64_t deadline, size_t n) {
    QueuedFrame f;
    f.call = call;
    f.deadline_ms = deadline;
    f.bytes.assign(n, char('a' + call % 26));
    return f;
}

std::vector<uint64_t> calls(const std::vector<QueuedFrame> &v) {
    std::vector<uint64_t> out;
    for (const auto &f : v)
        out.push_back(f.call);
    return out;
}

TEST(NodeQueue, BoundedInFramesAndBytes) {
    NodeQueue q(3, 100);
    EXPECT_TRUE(q.push(frame(1, 0, 40)));
    EXPECT_TRUE(q.push(frame(2, 0, 60)));
    EXPECT_FALSE(q.push(frame(3, 0, 1))) << "100 bytes are there already";
    EXPECT_EQ(q.frames(), 2u);
    EXPECT_EQ(q.bytes(), 100u);
    EXPECT_EQ(q.refused(), 1u);
    q.take_all();
    EXPECT_TRUE(q.push(frame(4, 0, 1)));
    EXPECT_TRUE(q.push(frame(5, 0, 1)));
    EXPECT_TRUE(q.push(frame(6, 0, 1)));
    EXPECT_FALSE(q.push(frame(7, 0, 1))) << "3 frames at most";
    EXPECT_FALSE(q.push(frame(8, 0, 1000))) << "nor one above the byte bound";
    EXPECT_EQ(q.refused(), 3u);
}

TEST(NodeQueue, LeavesInOrder) {
    NodeQueue q(100, 1 << 20);
    for (uint64_t c = 1; c <= 5; c++)
        ASSERT_TRUE(q.push(frame(c, 0, 10)));
    EXPECT_EQ(calls(q.take_all()), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
    EXPECT_EQ(q.frames(), 0u);
    EXPECT_EQ(q.bytes(), 0u);
}

TEST(NodeQueue, WhatOutlivesItsDeadlineIsTakenOut) {
    NodeQueue q(100, 1 << 20);
    q.push(frame(1, 300, 10));
    q.push(frame(2, 100, 10));
    q.push(frame(3, 0, 10));  // a send: no deadline
    q.push(frame(4, 100, 10));
    EXPECT_EQ(q.next_deadline_ms(), 100u);
    EXPECT_TRUE(q.expire(99).empty());
    EXPECT_EQ(calls(q.expire(100)), (std::vector<uint64_t>{2, 4}));
    EXPECT_EQ(q.bytes(), 20u);
    EXPECT_EQ(q.next_deadline_ms(), 300u);
    EXPECT_EQ(calls(q.expire(1000)), (std::vector<uint64_t>{1}));
    EXPECT_EQ(calls(q.take_all()), (std::vector<uint64_t>{3})) << "the send stays until sent";
    EXPECT_EQ(q.next_deadline_ms(), 0u);
}

}  // namespace
}  // namespace asyncd::cluster
