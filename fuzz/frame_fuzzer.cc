// libFuzzer target for the frame decoder (reliability scenario R7). `make fuzz` runs it for a
// little while, `make reliability` for a minute. It links conn/frame.cc and nothing else:
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I.
//       fuzz/frame_fuzzer.cc conn/frame.cc -o build/fuzz/frame-fuzzer
//
// An input is a 4-byte header, then the stream (a header cut short reads as zeros):
//   byte 0   bits 0-1: the framing (len32be, len32le, plugin lines, plugin tlv; see
//            fuzz/frame_model.h); bits 2-3: how byte 1 gives max_pkg_len; bits 4-6: how the
//            stream is split
//   byte 1   max_pkg_len, as bits 2-3 of byte 0 say
//   bytes 2-3  the seed of the split points
// The stream is decoded whole, then split as the header says (and in 1-byte chunks too when
// it is short), with every decode() answer checked; the split runs must give what the whole
// run gave. A violation prints what it was and aborts.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "fuzz/frame_model.h"

namespace {

using asyncd::framefuzz::Checker;
using asyncd::framefuzz::Kind;
using asyncd::framefuzz::Outcome;

size_t pick_max(unsigned how, uint8_t p) {
    static const size_t kBig[] = {size_t(1) << 20, size_t(1) << 30, 65535, 65536,
                                  65537,           65538,           4,     5};
    switch (how) {
        case 0:
            return 4 + (p & 15u);  // 4..19
        case 1:
            return 4 + size_t(p);  // 4..259
        case 2:
            return 256 * (size_t(p) + 1);  // 256..65536
        default:
            return kBig[p & 7u];
    }
}

const char *const kStyles[] = {"whole only",
                               "1-byte chunks",
                               "2-byte chunks",
                               "1..4-byte chunks",
                               "1..16-byte chunks",
                               "chunks of any size",
                               "cuts around packet boundaries",
                               "1..64-byte chunks"};

[[noreturn]] void die(const std::string &what, Kind k, size_t max, const char *style, size_t n) {
    fprintf(stderr, "frame_fuzzer: %s\n  (%s, max_pkg_len %zu, %zu-byte stream, split: %s)\n",
            what.c_str(), asyncd::framefuzz::kind_name(k), max, n, style);
    abort();
}

// xorshift32: the split points, from a 16-bit seed.
struct Split {
    uint32_t s;
    uint32_t next() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        return s;
    }
    size_t upto(size_t n) { return 1 + next() % n; }  // 1..n
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t head[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < 4 && i < size; i++)
        head[i] = data[i];
    const uint8_t *stream = size > 4 ? data + 4 : data + size;
    const size_t n = size > 4 ? size - 4 : 0;

    const Kind kind = Kind(head[0] & 3u);
    const size_t max = pick_max((head[0] >> 2) & 3u, head[1]);
    const unsigned style = (head[0] >> 4) & 7u;
    const uint32_t seed = (uint32_t(head[2]) << 8 | head[3]) * 2654435761u | 1u;

    Checker c(kind, max, 0x0123456789abcdefull ^ seed);
    Outcome whole;
    if (!asyncd::framefuzz::feed_whole(c, stream, n, &whole)) die(c.failure, kind, max, "whole", n);
    std::string diff = asyncd::framefuzz::compare(kind, stream, n, whole, whole);
    if (!diff.empty()) die(diff, kind, max, "whole", n);

    std::vector<unsigned> styles;
    if (style != 0) styles.push_back(style);
    if (style != 1 && n <= 1024) styles.push_back(1);
    for (unsigned st : styles) {
        Split sp{seed};
        std::vector<size_t> cuts;  // style 6: around the whole run's packet boundaries
        if (st == 6) {
            size_t at = 0;
            for (size_t len : whole.packets) {
                at += len;
                size_t cut = at + sp.next() % 3 - 1;
                if (cut > 0 && cut < n && (cuts.empty() || cut > cuts.back())) cuts.push_back(cut);
            }
        }
        size_t next_cut = 0;
        auto chunk = [&](size_t left) -> size_t {
            switch (st) {
                case 1:
                    return 1;
                case 2:
                    return 2;
                case 3:
                    return sp.upto(4);
                case 4:
                    return sp.upto(16);
                case 5:
                    return sp.upto(left);
                case 6: {
                    size_t at = n - left;
                    while (next_cut < cuts.size() && cuts[next_cut] <= at)
                        next_cut++;
                    return next_cut < cuts.size() ? cuts[next_cut] - at : left;
                }
                default:
                    return sp.upto(64);
            }
        };
        Outcome split;
        if (!asyncd::framefuzz::feed(c, stream, n, chunk, &split))
            die(c.failure, kind, max, kStyles[st], n);
        diff = asyncd::framefuzz::compare(kind, stream, n, whole, split);
        if (!diff.empty()) die(diff, kind, max, kStyles[st], n);
    }
    return 0;
}
