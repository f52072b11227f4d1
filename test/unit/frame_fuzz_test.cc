// R7: the frame decoder under fuzzing. Streams of valid packets in every framing (the two
// length prefixes and two plugin framings of fuzz/frame_model.h) are mutated, then fed to a
// model of conn's read loop split at random points; every decode() answer is checked, and
// the packets and the end of the stream must not depend on where it was split. The checks
// themselves live in fuzz/frame_model.h, which the libFuzzer target (fuzz/frame_fuzzer.cc,
// `make fuzz`) shares.
//
// The seed is fixed and printed; ASYNCD_FRAME_FUZZ_SEED=S repeats a run with seed S.
// ASYNCD_TEST_SCALE multiplies the number of decode() calls (3,000,000 by default).
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "fuzz/frame_model.h"

namespace asyncd {
namespace {

using framefuzz::Checker;
using framefuzz::Kind;
using framefuzz::kKinds;
using framefuzz::Outcome;

constexpr uint64_t kDefaultSeed = 0x5eed0007;
constexpr uint64_t kDecodeCalls = 3000000;

uint64_t fuzz_seed() {
    const char *s = getenv("ASYNCD_FRAME_FUZZ_SEED");
    return s && *s ? strtoull(s, nullptr, 0) : kDefaultSeed;
}

double test_scale() {
    const char *s = getenv("ASYNCD_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

class Rng {
  public:
    explicit Rng(uint64_t seed) : g_(seed) {}
    uint64_t next() { return g_(); }
    size_t below(size_t n) { return n ? size_t(g_() % n) : 0; }
    bool one_in(size_t n) { return below(n) == 0; }
    uint8_t byte() { return uint8_t(g_() >> 17); }

  private:
    std::mt19937_64 g_;
};

const uint8_t kInteresting[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0x04, '\n', framefuzz::kForbidden};

uint8_t interesting_or_random(Rng &r) {
    return r.one_in(2) ? kInteresting[r.below(sizeof kInteresting)] : r.byte();
}

// Tiny limits half the time: they are where off-by-ones live.
size_t pick_max(Rng &r) {
    static const size_t kBig[] = {65535, 65536, 65537, 65538, size_t(1) << 20, size_t(1) << 30};
    switch (r.below(4)) {
        case 0:
            return 4 + r.below(5);  // 4..8
        case 1:
            return 4 + r.below(61);
        case 2:
            return 64 + r.below(4033);
        default:
            return kBig[r.below(sizeof kBig / sizeof kBig[0])];
    }
}

// A stream of valid packets, and where each starts.
struct Stream {
    std::vector<uint8_t> bytes;
    std::vector<size_t> starts;
    std::vector<size_t> lens;
};

void put32(std::vector<uint8_t> *b, size_t at, uint32_t v, bool big_endian) {
    for (int i = 0; i < 4; i++) {
        size_t pos = at + size_t(i);
        if (pos >= b->size()) return;  // a length field cut short by a mutation
        int shift = big_endian ? 24 - 8 * i : 8 * i;
        (*b)[pos] = uint8_t(v >> shift);
    }
}

void add_packet(Kind k, size_t len, Rng &r, Stream *s) {
    std::vector<uint8_t> &b = s->bytes;
    size_t at = b.size();
    s->starts.push_back(at);
    s->lens.push_back(len);
    b.resize(at + len);
    for (size_t i = at; i < at + len; i++)
        b[i] = r.one_in(8) ? kInteresting[r.below(sizeof kInteresting)] : r.byte();
    switch (k) {
        case Kind::kLen32Be:
        case Kind::kLen32Le:
            put32(&b, at, uint32_t(len), k == Kind::kLen32Be);
            break;
        case Kind::kLines:
            for (size_t i = at; i + 1 < at + len; i++)
                if (b[i] == '\n' || b[i] == framefuzz::kForbidden) b[i] = 'a' + b[i] % 26;
            b[at + len - 1] = '\n';
            break;
        case Kind::kTlv:
            if (b[at] == framefuzz::kForbidden) b[at] = 0;
            b[at + 1] = uint8_t((len - 3) >> 8);
            b[at + 2] = uint8_t(len - 3);
            break;
    }
}

Stream make_stream(Kind k, size_t max, Rng &r) {
    Stream s;
    size_t npackets = r.below(13);
    size_t lo = k == Kind::kLines ? 1 : k == Kind::kTlv ? 3 : 4;
    for (size_t i = 0; i < npackets; i++) {
        size_t cap = r.one_in(10) ? 600 : 40;
        size_t hi = std::min(max, cap);
        size_t len = (max <= 600 && r.one_in(8)) ? max : lo + r.below(hi - lo + 1);
        add_packet(k, len, r, &s);
    }
    return s;
}

// A packet's length field set to a value at or past a limit.
void set_length(Kind k, size_t max, size_t start, size_t len, Rng &r, std::vector<uint8_t> *b) {
    if (k == Kind::kLen32Be || k == Kind::kLen32Le) {
        const uint64_t values[] = {
            0,   1,       3,       4,          max,        max + 1,
            2,   5,       max - 1, len - 1,    len + 1,    0xFFFFFFFF,
            len, max + 2, len + 4, 0x7FFFFFFF, 0x80000000, uint64_t(r.next())};
        put32(b, start, uint32_t(values[r.below(sizeof values / sizeof values[0])]),
              k == Kind::kLen32Be);
    } else if (k == Kind::kTlv) {
        if (r.one_in(6)) {
            if (start < b->size()) (*b)[start] = framefuzz::kForbidden;
            return;
        }
        const uint64_t values[] = {0, 1, 0xFFFF, max - 4, max - 3, max - 2, len - 4, len - 2};
        uint64_t v = std::min<uint64_t>(values[r.below(sizeof values / sizeof values[0])], 0xFFFF);
        if (start + 1 < b->size()) (*b)[start + 1] = uint8_t(v >> 8);
        if (start + 2 < b->size()) (*b)[start + 2] = uint8_t(v);
    } else {
        // Lines have no length field: move the end instead, or make the line exactly
        // max_pkg_len, or one longer.
        size_t end = start + len - 1;
        switch (r.below(4)) {
            case 0:
                if (end < b->size()) (*b)[end] = 'x';
                break;
            case 1:
                if (start + len / 2 < b->size()) (*b)[start + len / 2] = '\n';
                break;
            case 2:
                if (start + len / 2 < b->size()) (*b)[start + len / 2] = framefuzz::kForbidden;
                break;
            default: {
                size_t want = max + r.below(2);
                if (want > len && want <= 1000 && start <= b->size())
                    b->insert(b->begin() + ptrdiff_t(std::min(start, b->size())), want - len, 'y');
                break;
            }
        }
    }
}

void mutate(Kind k, size_t max, Rng &r, Stream *s) {
    std::vector<uint8_t> &b = s->bytes;
    size_t n = b.size();
    switch (r.below(9)) {
        case 0:
            if (n) b[r.below(n)] ^= uint8_t(1u << r.below(8));
            break;
        case 1:
            if (n) b[r.below(n)] = kInteresting[r.below(4)];  // 0x00 0xFF 0x7F 0x80
            break;
        case 2:
            if (n) b[r.below(n)] = interesting_or_random(r);
            break;
        case 3: {
            size_t at = r.below(n + 1), count = 1 + r.below(4);
            for (size_t i = 0; i < count; i++)
                b.insert(b.begin() + ptrdiff_t(at), interesting_or_random(r));
            break;
        }
        case 4:
            if (n) {
                size_t at = r.below(n), count = std::min(n - at, 1 + r.below(4));
                b.erase(b.begin() + ptrdiff_t(at), b.begin() + ptrdiff_t(at + count));
            }
            break;
        case 5:
            b.resize(r.below(n + 1));
            break;
        case 6:
            if (n) {  // a slice copied elsewhere: whole packets now and then
                size_t from = r.below(n), count = 1 + r.below(std::min<size_t>(n - from, 64));
                std::vector<uint8_t> slice(b.begin() + ptrdiff_t(from),
                                           b.begin() + ptrdiff_t(from + count));
                b.insert(b.begin() + ptrdiff_t(r.below(n + 1)), slice.begin(), slice.end());
            }
            break;
        default:
            if (!s->starts.empty()) {
                size_t i = r.below(s->starts.size());
                set_length(k, max, s->starts[i], s->lens[i], r, &b);
            }
            break;
    }
}

// Where a stream is split: chunks of one byte, of a few bytes, of any size, a few cuts
// anywhere, or cuts just before, at and after the packet boundaries of the whole stream.
std::vector<size_t> pick_cuts(size_t n, const Outcome &whole, Rng &r, const char **style) {
    std::vector<size_t> cuts;
    switch (r.below(6)) {
        case 0:
            *style = "1-byte chunks";
            for (size_t i = 1; i < n; i++)
                cuts.push_back(i);
            break;
        case 1:
            *style = "1..4-byte chunks";
            for (size_t i = 1 + r.below(4); i < n; i += 1 + r.below(4))
                cuts.push_back(i);
            break;
        case 2:
            *style = "1..32-byte chunks";
            for (size_t i = 1 + r.below(32); i < n; i += 1 + r.below(32))
                cuts.push_back(i);
            break;
        case 3:
            *style = "chunks of any size";
            for (size_t i = 1 + r.below(n); i < n; i += 1 + r.below(n - i))
                cuts.push_back(i);
            break;
        case 4:
            *style = "1 to 3 cuts";
            for (size_t i = 0, k = 1 + r.below(3); i < k && n > 1; i++)
                cuts.push_back(1 + r.below(n - 1));
            break;
        default: {
            *style = "cuts around packet boundaries";
            size_t at = 0;
            for (size_t len : whole.packets) {
                at += len;
                size_t cut = at + r.below(3) - 1;
                if (cut > 0 && cut < n) cuts.push_back(cut);
            }
            break;
        }
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    return cuts;
}

std::string hex(const std::vector<uint8_t> &b, size_t most = 96) {
    std::string out;
    char x[4];
    for (size_t i = 0; i < b.size() && i < most; i++) {
        snprintf(x, sizeof x, "%02x", b[i]);
        out += x;
    }
    if (b.size() > most) out += "...";
    return out;
}

TEST(FrameFuzz, MutatedStreamsGiveTheSamePacketsWhereverTheySplit) {
    const uint64_t seed = fuzz_seed();
    const uint64_t target = uint64_t(double(kDecodeCalls) * test_scale());
    printf("FrameFuzz: seed=%llu (ASYNCD_FRAME_FUZZ_SEED=%llu repeats it), %llu decode calls\n",
           (unsigned long long)seed, (unsigned long long)seed, (unsigned long long)target);
    fflush(stdout);
    Rng r(seed);
    uint64_t calls = 0, streams = 0, packets = 0;
    uint64_t errors[kKinds] = {}, need_more_ends[kKinds] = {}, clean_ends[kKinds] = {};
    auto t0 = std::chrono::steady_clock::now();
    while (calls < target) {
        const uint64_t index = streams++;
        const Kind k = Kind(r.below(kKinds));
        const size_t max = pick_max(r);
        Stream s = make_stream(k, max, r);
        const size_t mutations = r.one_in(4) ? 0 : 1 + r.below(4);
        for (size_t i = 0; i < mutations; i++)
            mutate(k, max, r, &s);
        const std::vector<uint8_t> &b = s.bytes;

        Checker c(k, max, r.next());
        Outcome whole;
        std::string diff;
        const char *style = "whole";
        bool ok = framefuzz::feed_whole(c, b.data(), b.size(), &whole);
        if (ok && mutations == 0 &&
            (whole.error || whole.packets != s.lens || whole.consumed != b.size()))
            diff = "a valid stream did not come out as the packets it was made of";
        for (int t = 0; ok && diff.empty() && t < 2; t++) {
            std::vector<size_t> cuts = pick_cuts(b.size(), whole, r, &style);
            size_t next = 0;
            auto chunk = [&](size_t left) {
                size_t at = b.size() - left;
                while (next < cuts.size() && cuts[next] <= at)
                    next++;
                return next < cuts.size() ? cuts[next] - at : left;
            };
            Outcome split;
            ok = framefuzz::feed(c, b.data(), b.size(), chunk, &split);
            if (ok) diff = framefuzz::compare(k, b.data(), b.size(), whole, split);
        }
        calls += c.calls;
        if (!ok || !diff.empty()) {
            ADD_FAILURE() << "seed " << seed << ", stream #" << index << " ("
                          << framefuzz::kind_name(k) << ", max_pkg_len " << max << ", " << mutations
                          << " mutations, " << b.size() << " bytes, split: " << style << "):\n  "
                          << (ok ? diff : c.failure) << "\n  stream: " << hex(b);
            break;
        }
        packets += whole.packets.size();
        int ki = int(k);
        if (whole.error) {
            errors[ki]++;
        } else if (whole.consumed < b.size()) {
            need_more_ends[ki]++;
        } else {
            clean_ends[ki]++;
        }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("FrameFuzz: %llu streams, %llu packets in the whole streams, %.2f s\n",
           (unsigned long long)streams, (unsigned long long)packets, secs);
    for (int ki = 0; ki < kKinds; ki++) {
        printf("FrameFuzz:   %-13s ends: %llu error, %llu need-more, %llu clean\n",
               framefuzz::kind_name(Kind(ki)), (unsigned long long)errors[ki],
               (unsigned long long)need_more_ends[ki], (unsigned long long)clean_ends[ki]);
        // The mutations must reach every ending in every framing, or the run proves little.
        if (!HasFailure()) {
            EXPECT_GT(errors[ki], 0u) << framefuzz::kind_name(Kind(ki));
            EXPECT_GT(need_more_ends[ki], 0u) << framefuzz::kind_name(Kind(ki));
            EXPECT_GT(clean_ends[ki], 0u) << framefuzz::kind_name(Kind(ki));
        }
    }
    printf("FIGURE R7 decoder_cases=%llu cases_per_s=%.0f seed=%llu\n", (unsigned long long)calls,
           secs > 0 ? double(calls) / secs : 0.0, (unsigned long long)seed);
    fflush(stdout);
}

// decode() on the first `avail` bytes of b, copied into a block of exactly that size.
bool decode_exact(Checker &c, const std::vector<uint8_t> &b, size_t avail) {
    std::unique_ptr<uint8_t[]> view(new uint8_t[avail]);
    if (avail) memcpy(view.get(), b.data(), avail);
    conn::Frame f;
    size_t len;
    return c.decode(view.get(), avail, &f, &len);
}

// Every avail from 0 on (and around the packet's end) for lengths at and around each limit.
void sweep(Kind k, size_t max, uint64_t value, const std::vector<uint8_t> &b) {
    Checker c(k, max, 42);
    std::vector<size_t> avails;
    for (size_t a = 0; a <= std::min<size_t>(b.size(), 300); a++)
        avails.push_back(a);
    for (uint64_t a = value > 0 ? value - 1 : 0; a <= value + 1; a++)
        if (a <= b.size()) avails.push_back(size_t(a));
    for (size_t a : avails)
        ASSERT_TRUE(decode_exact(c, b, a))
            << c.failure << " (length " << value << ", stream of " << b.size() << " bytes)";
}

TEST(FrameFuzz, EveryLengthAroundTheLimitsAtEveryAvail) {
    const size_t maxes[] = {4,
                            5,
                            6,
                            7,
                            8,
                            9,
                            16,
                            255,
                            256,
                            257,
                            65535,
                            65536,
                            65538,
                            size_t(1) << 20,
                            65537,
                            4096,
                            4097,
                            4095,
                            (size_t(1) << 20) + 1,
                            size_t(1) << 30};
    const size_t kLongest = (size_t(1) << 20) + 8;  // streams are cut here
    for (size_t max : maxes) {
        std::vector<uint64_t> values = {0, 1, 2, 3,          4,          5,          6,
                                        7, 8, 9, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF};
        for (uint64_t v = max - 2; v <= max + 2; v++)
            values.push_back(v);
        for (uint64_t v : values) {
            for (Kind k : {Kind::kLen32Be, Kind::kLen32Le}) {
                std::vector<uint8_t> b(v + 2 <= kLongest ? std::max<size_t>(4, v + 2) : 302, 'p');
                put32(&b, 0, uint32_t(v), k == Kind::kLen32Be);
                sweep(k, max, v, b);
                if (HasFatalFailure()) return;
            }
            if (v >= 3 && v - 3 <= 0xFFFF) {  // tlv: the whole packet v bytes long
                std::vector<uint8_t> b(v + 2 <= kLongest ? size_t(v) + 2 : 302, 't');
                b[1] = uint8_t((v - 3) >> 8);
                b[2] = uint8_t(v - 3);
                sweep(Kind::kTlv, max, v, b);
                if (HasFatalFailure()) return;
            }
            if (v >= 1 && v <= kLongest) {  // a line v bytes long, then a bit of the next
                std::vector<uint8_t> b(size_t(v) + 2, 'l');
                b[v - 1] = '\n';
                sweep(Kind::kLines, max, v, b);
                if (HasFatalFailure()) return;
                b[v / 2] = framefuzz::kForbidden;
                sweep(Kind::kLines, max, v, b);
                if (HasFatalFailure()) return;
            }
        }
    }
}

}  // namespace
}  // namespace asyncd
