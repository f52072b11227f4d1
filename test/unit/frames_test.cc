// cluster/frames: messages of every size survive being cut into frames and gathered again,
// streams interleave without mixing, any split of the byte stream gives the same messages,
// and a peer that breaks a rule of parts is refused with the rule.
#include "cluster/frames.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace asyncd::cluster {
namespace {

constexpr size_t kMaxFrame = 1024;

FrameHeader call_header(uint16_t stream, uint64_t session) {
    FrameHeader h;
    h.type = FrameType::kCall;
    h.stream = stream;
    h.session = session;
    h.word = 2500;
    h.route = kRouteAny;
    h.key = 42;
    return h;
}

std::string payload_of(size_t n, int seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++)
        s[i] = char((i * 31 + size_t(seed) * 7) & 0xff);
    return s;
}

std::string all_frames(MessageWriter &w) {
    std::string out;
    while (!w.done())
        w.next(&out);
    return out;
}

TEST(Frames, EverySizeRoundTrips) {
    for (size_t n : {size_t(0), size_t(1), size_t(1000), kMaxFrame - 4, kMaxFrame - 3, kMaxFrame,
                     kMaxFrame + 1, 3 * kMaxFrame, 3 * kMaxFrame + 17, size_t(100000)}) {
        std::string p = payload_of(n, int(n));
        MessageWriter w(call_header(2, 7), "echo", p, kMaxFrame);
        std::string bytes = all_frames(w);
        FrameReader r(kMaxFrame, 1 << 20, 4 << 20);
        r.feed(bytes.data(), bytes.size());
        Message m;
        const char *why = "";
        ASSERT_EQ(r.next(&m, &why), FrameReader::Next::kMessage) << n << ": " << why;
        EXPECT_EQ(m.h.type, FrameType::kCall);
        EXPECT_EQ(m.h.stream, 2);
        EXPECT_EQ(m.h.session, 7u);
        EXPECT_EQ(m.h.word, 2500u);
        EXPECT_EQ(m.h.key, 42u);
        EXPECT_EQ(m.h.flags, 0);
        EXPECT_EQ(m.service, "echo");
        EXPECT_EQ(m.payload, p) << n;
        EXPECT_EQ(r.next(&m, &why), FrameReader::Next::kNeedMore);
        EXPECT_EQ(r.pending_bytes(), 0u);
        EXPECT_EQ(w.frames(), n + 4 <= kMaxFrame ? 1u : 1 + (n + 4 - 1) / kMaxFrame) << n;
    }
}

TEST(Frames, StreamsInterleaveWithoutMixingAtAnySplit) {
    // Three streams, each with a large and a small message, their frames taken in turn.
    std::vector<MessageWriter> writers;
    std::vector<std::string> want[3];
    for (uint16_t s = 0; s < 3; s++) {
        for (int k = 0; k < 2; k++) {
            std::string p = payload_of(k == 0 ? 5000 + s * 100 : 10 + s, s * 10 + k);
            want[s].push_back(p);
            writers.emplace_back(call_header(s, uint64_t(s * 10 + k + 1)), "svc", p, kMaxFrame);
        }
    }
    std::string bytes;
    // Round-robin over streams; within a stream, its messages in order.
    size_t at[3] = {0, 0, 0};
    for (bool any = true; any;) {
        any = false;
        for (uint16_t s = 0; s < 3; s++) {
            if (at[s] == 2) continue;
            MessageWriter &w = writers[s * 2 + at[s]];
            w.next(&bytes);
            if (w.done()) at[s]++;
            any = true;
        }
    }
    for (size_t chunk :
         {size_t(1), size_t(7), size_t(32), size_t(33), size_t(1000), bytes.size()}) {
        FrameReader r(kMaxFrame, 1 << 20, 4 << 20);
        std::vector<std::string> got[3];
        const char *why = "";
        for (size_t off = 0; off < bytes.size(); off += chunk) {
            size_t n = std::min(chunk, bytes.size() - off);
            memcpy(r.room(n), bytes.data() + off, n);
            r.wrote(n);
            Message m;
            FrameReader::Next x;
            while ((x = r.next(&m, &why)) == FrameReader::Next::kMessage)
                got[m.h.stream].push_back(std::string(m.payload));
            ASSERT_EQ(x, FrameReader::Next::kNeedMore) << why;
        }
        for (int s = 0; s < 3; s++)
            EXPECT_EQ(got[s], want[s]) << "stream " << s << ", chunks of " << chunk;
    }
}

TEST(Frames, ControlFramesComeThroughAsTheyAre) {
    FrameHeader h;
    h.type = FrameType::kPing;
    h.stream = kStreamConn;
    h.session = 99;
    h.length = uint32_t(kFrameHeaderLen - 4 + 8);
    uint8_t head[kFrameHeaderLen];
    encode_header(h, head);
    std::string bytes(reinterpret_cast<char *>(head), sizeof head);
    bytes += "12345678";
    FrameReader r(kMaxFrame, 1 << 20, 4 << 20);
    r.feed(bytes.data(), bytes.size());
    Message m;
    const char *why = "";
    ASSERT_EQ(r.next(&m, &why), FrameReader::Next::kControl) << why;
    EXPECT_EQ(m.h.type, FrameType::kPing);
    EXPECT_EQ(m.h.session, 99u);
    EXPECT_EQ(m.payload, "12345678");
}

std::string frame(FrameType t, uint16_t stream, uint64_t session, uint8_t flags,
                  const std::string &service, const std::string &body) {
    FrameHeader h;
    h.type = t;
    h.stream = stream;
    h.session = session;
    h.flags = flags;
    return encode_frame(h, service, body);
}

std::string be32(uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

void expect_refused(const std::string &bytes, const char *reason, size_t max_message = 1 << 20,
                    size_t max_pending = 4 << 20) {
    FrameReader r(kMaxFrame, max_message, max_pending);
    r.feed(bytes.data(), bytes.size());
    Message m;
    const char *why = "";
    FrameReader::Next x;
    while ((x = r.next(&m, &why)) == FrameReader::Next::kMessage) {
    }
    EXPECT_EQ(x, FrameReader::Next::kBad) << reason;
    EXPECT_STREQ(why, reason);
}

TEST(Frames, BrokenPartRulesAreRefused) {
    const std::string first = frame(FrameType::kCall, 1, 5, kFlagMore, "s", be32(3000) + "abc");
    expect_refused(frame(FrameType::kPart, 1, 5, 0, "", "x"), "part of no message");
    expect_refused(first + frame(FrameType::kPart, 1, 6, kFlagMore, "", "x"),
                   "part of another session");
    expect_refused(first + frame(FrameType::kPart, 1, 5, 0, "", "xyz"),
                   "last part before the message's end");
    expect_refused(first + frame(FrameType::kPart, 1, 5, kFlagMore, "", std::string(1000, 'x')) +
                       frame(FrameType::kPart, 1, 5, kFlagMore, "", std::string(1000, 'x')) +
                       frame(FrameType::kPart, 1, 5, kFlagMore, "", std::string(997, 'x')),
                   "part past the message's end");
    expect_refused(first + frame(FrameType::kPart, 1, 5, kFlagMore, "", std::string(1000, 'x')) +
                       frame(FrameType::kPart, 1, 5, kFlagMore, "", std::string(1000, 'x')) +
                       frame(FrameType::kPart, 1, 5, 0, "", std::string(1000, 'x')),
                   "parts longer than their message");
    expect_refused(first + frame(FrameType::kCall, 1, 8, 0, "s", "new"),
                   "a message inside another of the same stream");
    expect_refused(frame(FrameType::kCall, 1, 5, kFlagMore, "s", "ab"),
                   "first part without the message's length");
    expect_refused(frame(FrameType::kCall, 1, 5, kFlagMore, "s", be32(2000) + "abc"),
                   "message longer than max_message", 1000);
    expect_refused(frame(FrameType::kCall, 1, 5, kFlagMore, "s", be32(3) + "abc"),
                   "parted message that fits in its first frame");
    expect_refused(frame(FrameType::kCall, 1, 5, kFlagMore, "s", be32(3000) + "abc") +
                       frame(FrameType::kCall, 2, 6, kFlagMore, "s", be32(3000) + "abc"),
                   "too many bytes of unfinished messages on the link", 1 << 20, 5000);
    expect_refused(frame(FrameType::kCall, 1, 5, 0, "s", std::string(kMaxFrame, 'x')),
                   "frame longer than max_frame");
}

TEST(Frames, OtherStreamsFlowWhileOneIsUnfinished) {
    // Stream 1's big message is half sent; stream 2's small ones are whole already.
    std::string bytes = frame(FrameType::kCall, 1, 5, kFlagMore, "s", be32(3000) + "abc");
    for (int i = 0; i < 5; i++)
        bytes += frame(FrameType::kSend, 2, 0, 0, "s", "m" + std::to_string(i));
    FrameReader r(kMaxFrame, 1 << 20, 4 << 20);
    r.feed(bytes.data(), bytes.size());
    Message m;
    const char *why = "";
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(r.next(&m, &why), FrameReader::Next::kMessage) << why;
        EXPECT_EQ(m.payload, "m" + std::to_string(i));
    }
    EXPECT_EQ(r.next(&m, &why), FrameReader::Next::kNeedMore);
    EXPECT_EQ(r.pending_bytes(), 3000u);
}

}  // namespace
}  // namespace asyncd::cluster
