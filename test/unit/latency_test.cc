// The handler-time histograms' parts: buckets, percentiles, the tick clock and the packet
// stamp conn writes in a record's seq.
#include <gtest/gtest.h>

#include <string.h>

#include <vector>

#include "core/latency.h"
#include "core/records.h"

namespace asyncd {
namespace {

TEST(Latency, EveryValueIsInABucketAtMostOneIn128High) {
    for (uint64_t v : std::vector<uint64_t>{0, 1, 255, 256, 257, 1000, 123456789, kLatencyCapNs}) {
        size_t i = log_linear_index(v);
        ASSERT_LT(i, kLatencyBuckets) << v;
        uint64_t high = log_linear_highest(i);
        EXPECT_GE(high, v);
        EXPECT_LE(double(high - v), double(v) / 128 + 1e-9) << v;
        if (i) {
            EXPECT_LT(log_linear_highest(i - 1), v) << v;
        }
    }
}

TEST(Latency, RecordAndSummarize) {
    std::vector<LatencyHist> keep(1);  // zeroed, and large: not on the stack
    LatencyHist &h = keep[0];
    for (int i = 0; i < 98; i++)
        record(h, 100);
    record(h, 50000);
    record(h, uint64_t(1) << 40);  // past the cap: in the last bucket, max kept
    LatencySummary s = summarize(h);
    EXPECT_EQ(s.count, 100u);
    EXPECT_EQ(s.p50_ns, 100u);
    EXPECT_GE(s.p99_ns, 50000u);
    EXPECT_LE(s.p99_ns, 50000u + 50000u / 128);
    EXPECT_EQ(s.max_ns, uint64_t(1) << 40);
    EXPECT_EQ(s.sum_ns, 98u * 100 + 50000 + kLatencyCapNs);
    std::vector<uint64_t> none(kLatencyBuckets, 0);
    EXPECT_EQ(percentile_of(none.data(), none.size(), 0, 99), 0u);
}

TEST(Latency, TicksBecomeNanoseconds) {
    uint64_t q32 = measure_ns_per_tick_q32();
    ASSERT_GT(q32, 0u);
    uint64_t t0 = ticks(), n0 = monotonic_ns();
    while (monotonic_ns() - n0 < 20000000) {
    }
    uint64_t ns = ticks_to_ns(ticks() - t0, q32), real = monotonic_ns() - n0;
    EXPECT_NEAR(double(ns), double(real), double(real) * 0.05) << "within 5% over 20 ms";
    EXPECT_EQ(ticks_to_ns(uint64_t(1) << 50, uint64_t(1) << 32), uint64_t(1) << 50)
        << "no overflow";
}

TEST(Latency, APacketSeqCarriesItsCountAndStamp) {
    uint64_t now = 0x123456789abcdefull;
    uint64_t seq = packet_seq(0x1000005, now - 500);
    EXPECT_EQ(packet_count(seq), 5u) << "the count's low 24 bits";
    EXPECT_EQ(ticks_since_stamp(packet_stamp(seq), now), 500u);
    // The counter's 40 low bits wrapped between the stamp and now.
    uint64_t before_wrap = (uint64_t(1) << 40) - 100;
    EXPECT_EQ(ticks_since_stamp(packet_stamp(packet_seq(0, before_wrap)), before_wrap + 300), 300u);
    EXPECT_EQ(ticks_since_stamp(packet_stamp(packet_seq(0, now + 50)), now), 0u)
        << "a stamp ahead (another CPU's counter) is no wait";
    EXPECT_EQ(ticks_since_stamp(0, now), 0u) << "no stamp";
}

TEST(StatusJson, StringsAreEscapedAndStayUtf8) {
    EXPECT_EQ(json_escape("a\tb\"c\\d"), "a\\u0009b\\\"c\\\\d");
    EXPECT_EQ(json_escape("caf\xc3\xa9"), "caf\xc3\xa9") << "UTF-8 is kept";
    EXPECT_EQ(json_escape("x\xff\xc3y"), "x\\ufffd\\ufffdy") << "what is not UTF-8 is replaced";
    EXPECT_EQ(json_escape("abcdef", 3), "abc") << "no further than the field";
}

// One in 16 of each kind on average, and with traffic of period 16 every position of it is
// timed about as often: a plain countdown would time the same one every time.
TEST(Latency, SamplingHasNoPeriod) {
    Sampler t;
    t.reset(16, 12345);
    int by_position[16] = {};
    int timed = 0;
    for (int i = 0; i < 160000; i++) {
        if (t.due()) {
            by_position[i % 16]++;
            timed++;
        }
    }
    EXPECT_NEAR(timed, 10000, 600);
    for (int p = 0; p < 16; p++)
        EXPECT_NEAR(by_position[p], 625, 200) << "position " << p;
    Sampler every, none;
    every.reset(1, 7);
    none.reset(0, 7);
    for (int i = 0; i < 100; i++) {
        EXPECT_TRUE(every.due());
        EXPECT_FALSE(none.due());
    }
}

}  // namespace
}  // namespace asyncd
