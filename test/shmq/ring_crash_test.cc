// kill -9 on either side of a ring in the middle of a stream, then a replacement on the same
// ring: the consumer side delivers everything after the last commit and nothing before it
// twice but the message in flight; the producer side never hands over a partial message.
#include <gtest/gtest.h>
#include <sched.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "shmq/ring.h"
#include "shmq/waker.h"
#include "test/shmq/test_util.h"

namespace asyncd::shmq {
namespace {

using test::checksum;
using test::splitmix64;

constexpr size_t kMaxLog = 1 << 20;

// What the consumer processes write down, in shared memory.
struct DeliveryLog {
    std::atomic<uint64_t> count{0};
    uint64_t seq[kMaxLog];
    uint64_t attempts[kMaxLog];
};

struct ProducerState {
    std::atomic<uint64_t> next_seq{0};  // the first seq not yet fully pushed
    std::atomic<uint64_t> delivered{0};
};

size_t crash_size(uint64_t seq, size_t max_record, size_t big) {
    uint64_t r = splitmix64(seq * 31 + 1);
    if (r % 50 == 0) return max_record + (r >> 16) % big;  // parted
    return 8 + (r >> 16) % 300;
}

RecordMeta build(std::vector<uint8_t> &buf, uint64_t seq, size_t len) {
    buf.resize(len);
    test::fill_pattern(buf.data(), len, seq);
    memcpy(buf.data(), &seq, 8);
    RecordMeta m;
    m.type = 2;
    m.seq = seq;
    m.conn_id = checksum(buf.data(), len);
    return m;
}

bool whole(const Message &m, size_t want_len) {
    uint64_t seq_field;
    if (m.len != want_len || m.len < 8) return false;
    memcpy(&seq_field, m.data, 8);
    return seq_field == m.seq && checksum(m.data, m.len) == m.conn_id;
}

// Pushes messages from state->next_seq up to n, recording progress after each.
int produce(Ring *ring, Waker *waker, ProducerState *state, uint64_t n, size_t big) {
    Producer p(ring, waker);
    std::vector<uint8_t> buf;
    for (uint64_t seq = state->next_seq.load(); seq < n; seq++) {
        RecordMeta meta = build(buf, seq, crash_size(seq, ring->max_record(), big));
        size_t done = 0;
        PushStatus s;
        while ((s = p.try_push_stream(meta, buf.data(), buf.size(), &done)) == PushStatus::kFull) {
            p.flush();
            sched_yield();
        }
        if (s != PushStatus::kOk) return 3;
        p.flush();  // published: from here on it survives this process
        state->next_seq.store(seq + 1);
    }
    return 0;
}

// Consumes until it has processed seq n-1, logging each message between marking it in
// flight and committing it.
int consume_logged(Ring *ring, Waker *waker, DeliveryLog *log, uint64_t n, size_t big) {
    Consumer c(ring, waker);
    for (;;) {
        Message m;
        PopStatus s = c.peek(&m);
        if (s == PopStatus::kCorrupt) return 4;
        if (s == PopStatus::kEmpty) {
            c.wait(100);
            continue;
        }
        if (!whole(m, crash_size(m.seq, ring->max_record(), big))) return 5;
        uint64_t attempts = c.mark_in_flight();
        uint64_t i = log->count.load();
        if (i >= kMaxLog) return 6;
        log->seq[i] = m.seq;
        log->attempts[i] = attempts;
        log->count.store(i + 1);
        // Some work between logging and committing, so kills land inside it too.
        volatile uint64_t sink = checksum(m.data, m.len);
        (void)sink;
        c.commit();
        if (m.seq == n - 1) return 0;
    }
}

TEST(RingCrash, ConsumerKilledMidStreamResumesAtLastCommit) {
    test::RingFixture f(16 << 10, 1024, 64 << 10);
    Ring &ring = f.ring;
    Waker &waker = f.waker;
    const uint64_t n = test::scaled(300000);
    const size_t big = 20000;
    const int kills = 8;
    auto *log = test::shared_new<DeliveryLog>();
    auto *state = test::shared_new<ProducerState>();

    pid_t producer = test::spawn([&] { return produce(&ring, &waker, state, n, big); });
    std::vector<uint64_t> boundaries;  // log index of the first entry of each new consumer
    for (int k = 0; k < kills; k++) {
        pid_t consumer = test::spawn([&] { return consume_logged(&ring, &waker, log, n, big); });
        uint64_t target = (k + 1) * n / (kills + 1);
        ASSERT_TRUE(test::wait_until([&] { return log->count.load() >= target; },
                                     std::chrono::seconds(120)))
            << "consumer " << k << " stopped at " << log->count.load();
        kill(consumer, SIGKILL);
        ASSERT_EQ(test::reap(consumer), 128 + SIGKILL);
        boundaries.push_back(log->count.load());
    }
    pid_t last = test::spawn([&] { return consume_logged(&ring, &waker, log, n, big); });
    EXPECT_EQ(test::reap(last), 0);
    EXPECT_EQ(test::reap(producer), 0);

    // Walk the log: every seq in order; a repeat only as the first entry after a kill, and
    // then the new consumer knew it was the second to start on it.
    uint64_t expect = 0, dups = 0, total = log->count.load();
    size_t b = 0;
    for (uint64_t i = 0; i < total; i++) {
        bool at_boundary = b < boundaries.size() && i == boundaries[b];
        if (at_boundary) b++;
        uint64_t seq = log->seq[i];
        if (seq == expect) {
            expect++;
            if (!at_boundary) {
                ASSERT_EQ(log->attempts[i], 1u) << "at log entry " << i;
            }
            continue;
        }
        ASSERT_TRUE(at_boundary && expect > 0 && seq == expect - 1)
            << "log entry " << i << " is seq " << seq << ", expected " << expect;
        EXPECT_GE(log->attempts[i], 2u) << "a repeat must be the in-flight message";
        dups++;
    }
    EXPECT_EQ(expect, n) << "every message after the last commit was delivered";
    EXPECT_LE(dups, uint64_t(kills));
    printf("consumer kills=%d msgs=%llu duplicates=%llu\n", kills, (unsigned long long)n,
           (unsigned long long)dups);
    test::shared_delete(log);
    test::shared_delete(state);
}

TEST(RingCrash, ProducerKilledMidWriteNeverYieldsAPartialMessage) {
    test::RingFixture f(16 << 10, 1024, 256 << 10);
    Ring &ring = f.ring;
    Waker &waker = f.waker;
    const uint64_t n = test::scaled(100000);
    const size_t big = 100000;  // parted messages up to six times the ring
    const int kills = 10;
    auto *state = test::shared_new<ProducerState>();

    Consumer c(&ring, &waker);
    pid_t producer = test::spawn([&] { return produce(&ring, &waker, state, n, big); });
    uint64_t received = 0, dups = 0, last_seq = UINT64_MAX;
    int killed = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    while (last_seq != n - 1) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "stuck at seq " << last_seq;
        if (killed < kills && received >= (killed + 1) * n / (kills + 1)) {
            kill(producer, SIGKILL);
            ASSERT_EQ(test::reap(producer), 128 + SIGKILL);
            killed++;
            producer = test::spawn([&] { return produce(&ring, &waker, state, n, big); });
        }
        Message m;
        PopStatus s = c.peek(&m);
        ASSERT_NE(s, PopStatus::kCorrupt) << c.error();
        if (s == PopStatus::kEmpty) {
            c.wait(100);
            continue;
        }
        ASSERT_TRUE(whole(m, crash_size(m.seq, ring.max_record(), big)))
            << "partial or damaged message seq " << m.seq << " len " << m.len;
        if (last_seq != UINT64_MAX && m.seq == last_seq) {
            dups++;  // pushed whole, killed before it could record that
        } else {
            ASSERT_EQ(m.seq, last_seq + 1) << "a message was lost";
        }
        last_seq = m.seq;
        received++;
        c.commit();
    }
    EXPECT_EQ(test::reap(producer), 0);
    EXPECT_LE(dups, uint64_t(kills));
    printf("producer kills=%d msgs=%llu partial_messages_dropped=%llu duplicates=%llu\n", killed,
           (unsigned long long)n, (unsigned long long)ring.abandoned(), (unsigned long long)dups);
    test::shared_delete(state);
}

}  // namespace
}  // namespace asyncd::shmq
