// What the frame decoder is checked against, shared by the FrameFuzz tests
// (test/unit/frame_fuzz_test.cc) and the libFuzzer target (fuzz/frame_fuzzer.cc):
//
//  - two plugin framings of our own, so that FrameMode::kPlugin is driven too;
//  - an answer-by-answer oracle: every decode() answer is checked against the contract in
//    conn/frame.h and against what the framing says the answer must be;
//  - a model of conn's read loop (ConnServer::feed): a stream arrives in chunks, each chunk
//    is appended to a buffer, and decode() runs on the buffered bytes until it says
//    kNeedMore or kError. The buffered bytes are copied into a heap block of exactly their
//    size first, so that under ASan a read past `avail` is caught.
//
// Whatever the split points, a stream must give the same packets and the same end (an error
// after the same packets, or need-more with the same bytes left) as the whole stream at once.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <memory>
#include <string>
#include <vector>

#include "conn/frame.h"

namespace asyncd::framefuzz {

// The framings under test: the two length prefixes, then two plugin framings.
enum class Kind : uint8_t { kLen32Be, kLen32Le, kLines, kTlv };
inline constexpr int kKinds = 4;

inline const char *kind_name(Kind k) {
    switch (k) {
        case Kind::kLen32Be:
            return "len32be";
        case Kind::kLen32Le:
            return "len32le";
        case Kind::kLines:
            return "plugin-lines";
        case Kind::kTlv:
            return "plugin-tlv";
    }
    return "?";
}

inline bool is_plugin(Kind k) {
    return k == Kind::kLines || k == Kind::kTlv;
}

// The smallest packet a framing can give.
inline size_t min_packet(Kind k) {
    return is_plugin(k) ? 1 : 4;
}

// A byte the plugin framings declare bad: get_pkg_len answers -1 when it meets it.
inline constexpr uint8_t kForbidden = 0xFE;

// The conn id the plugin framings expect to be handed (decode passes its own through), and
// how many times they were handed another.
inline uint64_t g_expect_conn = 0;
inline uint64_t g_wrong_conn = 0;

// Plugin framing "lines": a packet is the bytes up to and including '\n'; a kForbidden
// byte before it makes the stream bad. It never knows a length before the whole line is in.
inline int lines_pkg_len(uint64_t conn, const void *data, size_t avail) {
    if (conn != g_expect_conn) g_wrong_conn++;
    const uint8_t *p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < avail; i++) {
        if (p[i] == '\n') return int(i + 1);
        if (p[i] == kForbidden) return -1;
    }
    return 0;
}

// Plugin framing "tlv": a type byte (kForbidden is bad), a 16-bit big-endian payload
// length, the payload. It knows the whole length from the third byte on, so it hands the
// decoder lengths beyond avail and beyond max_pkg_len.
inline int tlv_pkg_len(uint64_t conn, const void *data, size_t avail) {
    if (conn != g_expect_conn) g_wrong_conn++;
    const uint8_t *p = static_cast<const uint8_t *>(data);
    if (avail >= 1 && p[0] == kForbidden) return -1;
    if (avail < 3) return 0;
    return 3 + ((int(p[1]) << 8) | int(p[2]));
}

inline conn::FrameDecoder make_decoder(Kind k, size_t max_pkg_len) {
    conn::FrameDecoder d;
    d.max_pkg_len = max_pkg_len;
    switch (k) {
        case Kind::kLen32Be:
            d.mode = FrameMode::kLen32Be;
            break;
        case Kind::kLen32Le:
            d.mode = FrameMode::kLen32Le;
            break;
        case Kind::kLines:
            d.mode = FrameMode::kPlugin;
            d.get_pkg_len = lines_pkg_len;
            break;
        case Kind::kTlv:
            d.mode = FrameMode::kPlugin;
            d.get_pkg_len = tlv_pkg_len;
            break;
    }
    return d;
}

inline const char *frame_name(conn::Frame f) {
    switch (f) {
        case conn::Frame::kNeedMore:
            return "kNeedMore";
        case conn::Frame::kPacket:
            return "kPacket";
        case conn::Frame::kError:
            return "kError";
    }
    return "(not a Frame)";
}

// One decoder and the checks on each of its answers. The first violation is kept in
// `failure`; every call after it fails at once.
class Checker {
  public:
    Checker(Kind kind, size_t max_pkg_len, uint64_t conn)
        : kind_(kind), max_(max_pkg_len), conn_(conn), d_(make_decoder(kind, max_pkg_len)) {}

    uint64_t calls = 0;   // decode() calls made
    std::string failure;  // the first contract violation; empty while there is none
    const char *last_why = nullptr;

    // decode() on [data, data + avail), the answer checked. False on a violation.
    bool decode(const uint8_t *data, size_t avail, conn::Frame *f, size_t *len) {
        if (!failure.empty()) return false;
        const size_t kUnset = ~size_t(0) - 7;
        size_t n = kUnset;
        const char *why = nullptr;
        g_expect_conn = conn_;
        uint64_t wrong_before = g_wrong_conn;
        conn::Frame got = d_.decode(conn_, data, avail, &n, &why);
        calls++;
        *f = got;
        *len = n;
        last_why = why;
        if (g_wrong_conn != wrong_before)
            return fail(data, avail, got, n, "get_pkg_len was handed another conn id");
        if (got != conn::Frame::kNeedMore && got != conn::Frame::kPacket &&
            got != conn::Frame::kError)
            return fail(data, avail, got, n, "answer is none of the three");
        if (got == conn::Frame::kPacket) {
            if (n == kUnset) return fail(data, avail, got, n, "kPacket without setting *len");
            if (n < min_packet(kind_))
                return fail(data, avail, got, n, "kPacket below the minimum length");
            if (n > avail) return fail(data, avail, got, n, "kPacket longer than avail");
            if (n > max_) return fail(data, avail, got, n, "kPacket longer than max_pkg_len");
        } else if (got == conn::Frame::kNeedMore) {
            if (n == kUnset) return fail(data, avail, got, n, "kNeedMore without setting *len");
            if (n != 0 && (n <= avail || n > max_))
                return fail(data, avail, got, n,
                            "kNeedMore with a length not in (avail, max_pkg_len]");
        } else {
            if (!why || !why[0]) return fail(data, avail, got, n, "kError without a reason");
        }

        // What the framing says the answer is.
        conn::Frame want;
        size_t want_len = 0;
        if (!is_plugin(kind_)) {
            if (avail < 4) {
                want = conn::Frame::kNeedMore;
            } else {
                size_t v = kind_ == Kind::kLen32Be
                               ? (size_t(data[0]) << 24 | size_t(data[1]) << 16 |
                                  size_t(data[2]) << 8 | size_t(data[3]))
                               : (size_t(data[3]) << 24 | size_t(data[2]) << 16 |
                                  size_t(data[1]) << 8 | size_t(data[0]));
                if (v < 4 || v > max_) {
                    want = conn::Frame::kError;
                } else {
                    want = v <= avail ? conn::Frame::kPacket : conn::Frame::kNeedMore;
                    want_len = v;
                }
            }
        } else if (avail == 0) {
            want = conn::Frame::kNeedMore;
        } else {
            int r = kind_ == Kind::kLines ? lines_pkg_len(conn_, data, avail)
                                          : tlv_pkg_len(conn_, data, avail);
            if (r < 0 || size_t(r) > max_) {
                want = conn::Frame::kError;
            } else if (r == 0) {
                // No length yet. With max_pkg_len bytes in and no end among them, the packet
                // can only be too long: the decoder must give up rather than buffer more.
                want = avail >= max_ ? conn::Frame::kError : conn::Frame::kNeedMore;
            } else {
                want = size_t(r) <= avail ? conn::Frame::kPacket : conn::Frame::kNeedMore;
                want_len = size_t(r);
            }
        }
        if (got != want || (got != conn::Frame::kError && n != want_len)) {
            char what[160];
            snprintf(what, sizeof what, "the framing wants %s len %zu", frame_name(want), want_len);
            return fail(data, avail, got, n, what);
        }
        return true;
    }

  private:
    bool fail(const uint8_t *data, size_t avail, conn::Frame got, size_t n, const char *what) {
        char head[320];
        snprintf(head, sizeof head,
                 "%s: %s max_pkg_len=%zu avail=%zu -> %s len=%zu why=%s; bytes:", what,
                 kind_name(kind_), max_, avail, frame_name(got), n, last_why ? last_why : "(null)");
        failure = head;
        for (size_t i = 0; i < avail && i < 32; i++) {
            char b[4];
            snprintf(b, sizeof b, " %02x", data[i]);
            failure += b;
        }
        if (avail > 32) failure += " ...";
        return false;
    }

    Kind kind_;
    size_t max_;
    uint64_t conn_;
    conn::FrameDecoder d_;
};

// What came out of a stream.
struct Outcome {
    std::vector<size_t> packets;  // lengths, in order; they tile the stream from its start
    std::vector<uint8_t> bytes;   // the packets' bytes as the decoder's caller saw them
    size_t consumed = 0;          // sum of packets
    bool error = false;           // the stream ended in kError (else in kNeedMore)
    std::string why;              // with error
};

// Feeds stream[0, n) to c in chunks as conn does; next_chunk(left) says how many of the
// `left` bytes still to come arrive next (1..left). False on a contract violation
// (c.failure says which).
template <class NextChunk>
bool feed(Checker &c, const uint8_t *stream, size_t n, NextChunk &&next_chunk, Outcome *out) {
    *out = Outcome();
    std::vector<uint8_t> buf;  // conn's input buffer: the bytes not yet in a packet
    size_t fed = 0;
    while (fed < n) {
        size_t k = next_chunk(n - fed);
        if (k == 0 || k > n - fed) k = n - fed;
        buf.insert(buf.end(), stream + fed, stream + fed + k);
        fed += k;
        // The buffered bytes in a block that ends where they end. Each packet taken leaves
        // the rest at the same end, so one block serves the whole decode loop.
        const size_t have = buf.size();
        std::unique_ptr<uint8_t[]> view(new uint8_t[have]);
        memcpy(view.get(), buf.data(), have);
        size_t used = 0;
        while (used < have) {
            conn::Frame f;
            size_t len;
            if (!c.decode(view.get() + used, have - used, &f, &len)) return false;
            if (f == conn::Frame::kNeedMore) break;
            if (f == conn::Frame::kError) {
                out->error = true;
                out->why = c.last_why;
                return true;  // conn closes the connection: nothing more is read
            }
            out->packets.push_back(len);
            out->bytes.insert(out->bytes.end(), view.get() + used, view.get() + used + len);
            out->consumed += len;
            used += len;
        }
        buf.erase(buf.begin(), buf.begin() + ptrdiff_t(used));
    }
    return true;
}

// The whole stream in one chunk.
inline bool feed_whole(Checker &c, const uint8_t *stream, size_t n, Outcome *out) {
    return feed(
        c, stream, n, [](size_t left) { return left; }, out);
}

// Empty when `got` (the stream split somewhere) says the same as `want` (the stream whole)
// and both agree with the stream itself; else what differs.
inline std::string compare(Kind kind, const uint8_t *stream, size_t n, const Outcome &want,
                           const Outcome &got) {
    char msg[200];
    if (want.consumed > n || want.bytes.size() != want.consumed ||
        (want.consumed && memcmp(want.bytes.data(), stream, want.consumed) != 0))
        return "whole stream: packets are not the stream's bytes";
    if (got.packets != want.packets) {
        size_t i = 0;
        while (i < got.packets.size() && i < want.packets.size() &&
               got.packets[i] == want.packets[i])
            i++;
        snprintf(msg, sizeof msg,
                 "split stream: %zu packets, whole: %zu; first difference at packet %zu "
                 "(split %zu bytes, whole %zu)",
                 got.packets.size(), want.packets.size(), i,
                 i < got.packets.size() ? got.packets[i] : 0,
                 i < want.packets.size() ? want.packets[i] : 0);
        return msg;
    }
    if (got.bytes != want.bytes) return "split stream: packet bytes differ from the whole stream's";
    if (got.error != want.error) {
        snprintf(msg, sizeof msg, "split stream ends in %s, whole in %s (after %zu packets)",
                 got.error ? "kError" : "kNeedMore", want.error ? "kError" : "kNeedMore",
                 want.packets.size());
        return msg;
    }
    // A length prefix is wrong the same way however it arrived. (With plugin framing the
    // reason may differ: a line too long is "no end within max_pkg_len" while it arrives,
    // "length above max_pkg_len" when it is in whole.)
    if (got.error && !is_plugin(kind) && got.why != want.why)
        return "split stream: error '" + got.why + "', whole: '" + want.why + "'";
    return std::string();
}

}  // namespace asyncd::framefuzz
