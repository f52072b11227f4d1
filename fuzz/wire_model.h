// What the cluster's frame reader must do with any byte stream (C10), shared by the
// libFuzzer target (fuzz/wire_fuzzer.cc) and the deterministic test in make test:
// - the same stream gives the same messages, control frames and verdict however it is cut;
// - a message never exceeds max_message, unfinished ones never exceed max_pending;
// - every message it hands over, written again by MessageWriter, reads back the same.
// check_wire_stream returns "" or what went wrong.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

#include "cluster/frames.h"

namespace asyncd::wirefuzz {

constexpr size_t kMaxFrame = 1024, kMaxMessage = 16384, kMaxPending = 32768;

inline std::string describe(const cluster::Message &m) {
    return std::to_string(int(m.h.type)) + "/" + std::to_string(m.h.stream) + "/" +
           std::to_string(m.h.session) + "/" + std::string(m.service) + "/" +
           std::string(m.payload);
}

// Feeds `data` in pieces whose sizes come from `cuts` (cycled; 0 means all the rest) and
// returns the outcomes, or sets *err.
inline std::vector<std::string> read_all(const uint8_t *data, size_t len,
                                         const std::vector<size_t> &cuts, std::string *err) {
    cluster::FrameReader r(kMaxFrame, kMaxMessage, kMaxPending);
    std::vector<std::string> out;
    size_t at = 0, k = 0;
    bool bad = false;
    while (at < len && !bad) {
        size_t n = cuts.empty() || cuts[k % cuts.size()] == 0 ? len - at : cuts[k % cuts.size()];
        k++;
        if (n > len - at) n = len - at;
        r.feed(data + at, n);
        at += n;
        cluster::Message m;
        const char *why = "";
        for (;;) {
            auto x = r.next(&m, &why);
            if (r.pending_bytes() > kMaxPending) *err = "pending bytes above the bound";
            if (x == cluster::FrameReader::Next::kNeedMore) break;
            if (x == cluster::FrameReader::Next::kBad) {
                out.push_back(std::string("bad: ") + why);
                bad = true;
                break;
            }
            if (x == cluster::FrameReader::Next::kMessage && m.payload.size() > kMaxMessage)
                *err = "a message above max_message";
            out.push_back((x == cluster::FrameReader::Next::kControl ? "ctl " : "msg ") +
                          describe(m));
            if (x != cluster::FrameReader::Next::kMessage) continue;
            // Written again, it reads back the same.
            std::string again;
            cluster::MessageWriter w(m.h, std::string(m.service), std::string(m.payload),
                                     kMaxFrame);
            while (!w.done())
                w.next(&again);
            cluster::FrameReader r2(kMaxFrame, kMaxMessage, kMaxPending);
            r2.feed(again.data(), again.size());
            cluster::Message m2;
            const char *why2 = "";
            if (r2.next(&m2, &why2) != cluster::FrameReader::Next::kMessage ||
                describe(m2) != describe(m)) {
                *err = "a message written again did not read back the same";
            }
        }
    }
    return out;
}

inline std::string check_wire_stream(const uint8_t *data, size_t len) {
    std::string err;
    std::vector<std::string> whole = read_all(data, len, {}, &err);
    if (!err.empty()) return err;
    uint32_t seed = len >= 2 ? uint32_t(data[0] | data[1] << 8) : 1;
    std::vector<size_t> cuts;
    for (int i = 0; i < 16; i++) {
        seed = seed * 1103515245u + 12345u;
        cuts.push_back(1 + (seed >> 16) % 97);
    }
    for (const auto &c : {std::vector<size_t>{1}, cuts}) {
        std::vector<std::string> split = read_all(data, len, c, &err);
        if (!err.empty()) return err;
        if (split != whole) return "a split stream read differently from the whole one";
    }
    return "";
}

}  // namespace asyncd::wirefuzz
