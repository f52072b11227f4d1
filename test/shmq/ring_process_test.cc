// The ring between two real processes: millions of records of random sizes, random pauses
// on both sides, both wake channels. Order kept, nothing lost or duplicated, every byte
// checked, and no record waits while its consumer sleeps.
#include <gtest/gtest.h>
#include <sched.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "shmq/ring.h"
#include "shmq/waker.h"
#include "test/shmq/test_util.h"

namespace asyncd::shmq {
namespace {

using test::checksum;
using test::now_ns;
using test::splitmix64;

constexpr size_t kStampBytes = 16;  // seq, then the time the producer pushed it

// Sizes: mostly small, some up to a few KiB, a few larger than max_record (parts).
size_t size_for(uint64_t seq, size_t max_record) {
    uint64_t r = splitmix64(seq ^ 0x5eed);
    size_t len;
    if (r % 500 == 0) {
        len = max_record + (r >> 20) % (3 * max_record);
    } else if (r % 10 == 0) {
        len = (r >> 20) % 4000;
    } else {
        len = (r >> 20) % 200;
    }
    return std::max(len, kStampBytes);
}

// Builds message `seq`: [seq][stamp][pattern]; the checksum of the pattern goes in conn_id.
RecordMeta build(std::vector<uint8_t> &buf, uint64_t seq, size_t len) {
    buf.resize(len);
    memcpy(buf.data(), &seq, 8);
    test::fill_pattern(buf.data() + kStampBytes, len - kStampBytes, seq);
    RecordMeta m;
    m.type = 1;
    m.seq = seq;
    m.conn_id = checksum(buf.data() + kStampBytes, len - kStampBytes);
    return m;
}

void stamp(std::vector<uint8_t> &buf) {
    uint64_t t = now_ns();
    memcpy(buf.data() + 8, &t, 8);
}

// The producer process: pushes n messages, notifying after random batches and always
// before it pauses or waits for room.
int produce(Ring *ring, Waker *waker, uint64_t n) {
    Producer p(ring, waker);
    std::vector<uint8_t> buf;
    uint64_t rng = 42;
    uint64_t batch = 0;
    for (uint64_t seq = 0; seq < n; seq++) {
        RecordMeta meta = build(buf, seq, size_for(seq, ring->max_record()));
        size_t done = 0;
        for (;;) {
            stamp(buf);
            PushStatus s = p.try_push_stream(meta, buf.data(), buf.size(), &done);
            if (s == PushStatus::kOk) break;
            if (s != PushStatus::kFull) return 3;
            p.flush();
            sched_yield();
        }
        rng = splitmix64(rng);
        if (++batch >= 1 + rng % 32) {
            p.flush();
            batch = 0;
        }
        if (rng % 4096 == 0) {
            p.flush();
            usleep(useconds_t(rng >> 54));  // up to about 1 ms
        }
    }
    p.flush();
    return 0;
}

struct TwoProcessResult {
    uint64_t received = 0;
    uint64_t stalls = 0;  // woke by timeout with a record waiting: a lost wakeup
    uint64_t max_residency_ns = 0;
    std::string failure;
};

TwoProcessResult consume(Ring *ring, Waker *waker, uint64_t n, pid_t producer) {
    TwoProcessResult r;
    Consumer c(ring, waker);
    uint64_t rng = 7;
    uint64_t deadline = now_ns() + 300ull * 1000000000ull;
    std::vector<uint8_t> expect;
    while (r.received < n) {
        Message m;
        PopStatus s = c.peek(&m);
        if (s == PopStatus::kCorrupt) {
            r.failure = std::string("corrupt: ") + c.error();
            return r;
        }
        if (s == PopStatus::kEmpty) {
            if (now_ns() > deadline) {
                r.failure = "deadline passed";
                return r;
            }
            if (!c.prepare_sleep()) continue;
            bool woke = waker->wait(5000);
            c.finish_sleep();
            if (!woke && !c.empty()) r.stalls++;
            if (!woke && waitpid(producer, nullptr, WNOHANG) == producer) {
                r.failure = "producer died";
                return r;
            }
            continue;
        }
        uint64_t t = now_ns(), pushed_at = 0, seq_field = 0;
        size_t want = size_for(r.received, ring->max_record());
        if (m.seq != r.received || m.len != want) {
            r.failure = "got seq " + std::to_string(m.seq) + " len " + std::to_string(m.len) +
                        ", want seq " + std::to_string(r.received) + " len " + std::to_string(want);
            return r;
        }
        memcpy(&seq_field, m.data, 8);
        memcpy(&pushed_at, m.data + 8, 8);
        if (seq_field != m.seq ||
            checksum(m.data + kStampBytes, m.len - kStampBytes) != m.conn_id) {
            r.failure = "bad payload for seq " + std::to_string(m.seq);
            return r;
        }
        if (t > pushed_at) r.max_residency_ns = std::max(r.max_residency_ns, t - pushed_at);
        c.commit();
        r.received++;
        rng = splitmix64(rng);
        if (rng % 4096 == 0) usleep(useconds_t(rng >> 54));
    }
    return r;
}

class TwoProcess : public ::testing::TestWithParam<WakerKind> {};

TEST_P(TwoProcess, RandomSizesAndPausesLoseNothingAndNeverStall) {
    test::RingFixture f(64 << 10, 4096, 64 << 10, GetParam());
    Ring &ring = f.ring;
    Waker &waker = f.waker;
    uint64_t n = test::scaled(2000000);

    pid_t pid = test::spawn([&] { return produce(&ring, &waker, n); });
    ASSERT_GT(pid, 0);
    uint64_t start = now_ns();
    TwoProcessResult r = consume(&ring, &waker, n, pid);
    double secs = double(now_ns() - start) / 1e9;
    if (!r.failure.empty()) kill(pid, SIGKILL);
    EXPECT_EQ(test::reap(pid), r.failure.empty() ? 0 : 128 + SIGKILL);
    ASSERT_EQ(r.failure, "");
    EXPECT_EQ(r.received, n);
    EXPECT_EQ(r.stalls, 0u) << "a record waited while its consumer slept";
    Message m;
    Consumer c(&ring, &waker);
    EXPECT_EQ(c.peek(&m), PopStatus::kEmpty) << "nothing duplicated after the last";
    printf(
        "FIGURE R20 waker=%s msgs=%llu secs=%.2f stalls=%llu max_residency_us=%.0f sleeps=%llu "
        "wakeups=%llu wakeups_per_msg=%.4f\n",
        waker_kind_name(GetParam()), (unsigned long long)n, secs, (unsigned long long)r.stalls,
        double(r.max_residency_ns) / 1e3, (unsigned long long)ring.sleeps(),
        (unsigned long long)ring.wakeups(), double(ring.wakeups()) / double(n));
}

INSTANTIATE_TEST_SUITE_P(Wakers, TwoProcess,
                         ::testing::Values(WakerKind::kPipe, WakerKind::kEventfd),
                         [](const auto &p) { return std::string(waker_kind_name(p.param)); });

}  // namespace
}  // namespace asyncd::shmq
