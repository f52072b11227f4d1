// cluster/wire: every frame type round-trips, every truncation asks for more, and every rule
// a frame can break is refused with its reason, never trusted.
#include "cluster/wire.h"

#include <gtest/gtest.h>
#include <string.h>

#include <string>

namespace asyncd::cluster {
namespace {

constexpr size_t kMaxBody = 1 << 20;

FrameHeader make(FrameType t) {
    FrameHeader h;
    h.type = t;
    h.stream = 3;
    if (t == FrameType::kCall || t == FrameType::kReply) h.session = 0x0102030405060708ull;
    if (t == FrameType::kCall || t == FrameType::kSend) h.service_len = 4;
    h.word = t == FrameType::kReply ? uint32_t(-7) : 1500;
    h.route = kRouteKey;
    h.key = 0xfedcba9876543210ull;
    h.length = uint32_t(kFrameHeaderLen - 4 + h.service_len + 10);
    return h;
}

TEST(Wire, EveryTypeRoundTrips) {
    for (int t = int(FrameType::kHello); t <= int(FrameType::kPart); t++) {
        FrameHeader h = make(FrameType(t));
        uint8_t buf[kFrameHeaderLen];
        encode_header(h, buf);
        FrameHeader d;
        const char *why = "";
        ASSERT_EQ(decode_header(buf, sizeof buf, kMaxBody, &d, &why), Decode::kOk)
            << frame_type_name(FrameType(t)) << ": " << why;
        EXPECT_EQ(d.length, h.length);
        EXPECT_EQ(d.type, h.type);
        EXPECT_EQ(d.stream, h.stream);
        EXPECT_EQ(d.session, h.session);
        EXPECT_EQ(d.word, h.word);
        EXPECT_EQ(d.route, h.route);
        EXPECT_EQ(d.service_len, h.service_len);
        EXPECT_EQ(d.key, h.key);
        EXPECT_EQ(d.body_len(), size_t(h.service_len) + 10);
    }
}

TEST(Wire, TheHeaderIsInNetworkOrder) {
    FrameHeader h = make(FrameType::kCall);
    uint8_t buf[kFrameHeaderLen];
    encode_header(h, buf);
    EXPECT_EQ(buf[0], 0);
    EXPECT_EQ(buf[3], uint8_t(h.length));
    EXPECT_EQ(buf[4], uint8_t(FrameType::kCall));
    EXPECT_EQ(buf[8], 0x01);
    EXPECT_EQ(buf[15], 0x08);
    EXPECT_EQ(buf[24], 0xfe);
}

TEST(Wire, EveryTruncationAsksForMore) {
    FrameHeader h = make(FrameType::kReply);
    uint8_t buf[kFrameHeaderLen];
    encode_header(h, buf);
    for (size_t n = 0; n < kFrameHeaderLen; n++) {
        FrameHeader d;
        const char *why = "";
        EXPECT_EQ(decode_header(buf, n, kMaxBody, &d, &why), Decode::kNeedMore) << n;
    }
}

void expect_bad(const FrameHeader &h, const char *reason, size_t max_body = kMaxBody) {
    uint8_t buf[kFrameHeaderLen];
    encode_header(h, buf);
    FrameHeader d;
    const char *why = "";
    EXPECT_EQ(decode_header(buf, sizeof buf, max_body, &d, &why), Decode::kBad) << reason;
    EXPECT_STREQ(why, reason);
}

TEST(Wire, BrokenRulesAreRefusedWithTheirReason) {
    FrameHeader h = make(FrameType::kCall);
    uint8_t buf[kFrameHeaderLen];
    for (uint8_t t : {uint8_t(0), uint8_t(10), uint8_t(255)}) {
        encode_header(h, buf);
        buf[4] = t;
        FrameHeader d;
        const char *why = "";
        EXPECT_EQ(decode_header(buf, sizeof buf, kMaxBody, &d, &why), Decode::kBad);
        EXPECT_STREQ(why, "unknown frame type");
    }
    h = make(FrameType::kPing);
    h.length = kFrameHeaderLen - 5;
    expect_bad(h, "frame length below its header");
    h = make(FrameType::kCall);
    h.length = uint32_t(kFrameHeaderLen - 4 + 101);
    expect_bad(h, "frame longer than max_frame", 100);
    h.length = 0xFFFFFFFFu;
    expect_bad(h, "frame longer than max_frame");
    h = make(FrameType::kCall);
    h.flags = 2;
    expect_bad(h, "unknown frame flags");
    h = make(FrameType::kCall);
    h.service_len = 256;
    h.length = uint32_t(kFrameHeaderLen - 4 + 300);
    expect_bad(h, "service name too long");
    h = make(FrameType::kCall);
    h.service_len = 20;
    h.length = uint32_t(kFrameHeaderLen - 4 + 19);
    expect_bad(h, "service name longer than the frame");
    h = make(FrameType::kReply);
    h.service_len = 1;
    expect_bad(h, "service name on a frame without one");
    h = make(FrameType::kSend);
    h.service_len = 0;
    expect_bad(h, "call or send without a service");
    h = make(FrameType::kPing);
    h.flags = kFlagMore;
    expect_bad(h, "MORE on a frame that has no parts");
    h = make(FrameType::kSend);
    h.session = 9;
    expect_bad(h, "send with a session");
    h = make(FrameType::kReply);
    h.session = 0;
    expect_bad(h, "call or reply without a session");
}

Hello sample_hello(bool mac) {
    Hello h;
    h.workers = 4;
    h.max_frame = 256 * 1024;
    h.max_message = 16 << 20;
    h.incarnation = 0x1122334455667788ull;
    for (size_t i = 0; i < kNonceLen; i++)
        h.nonce[i] = uint8_t(i * 9);
    h.node = "game1";
    h.has_mac = mac;
    for (size_t i = 0; i < sizeof h.mac; i++)
        h.mac[i] = uint8_t(255 - i);
    return h;
}

TEST(Wire, HelloRoundTripsWithAndWithoutAProof) {
    for (bool mac : {false, true}) {
        Hello h = sample_hello(mac);
        std::string f = encode_hello(mac ? FrameType::kHelloAck : FrameType::kHello, h);
        FrameHeader fh;
        const char *why = "";
        auto *p = reinterpret_cast<const uint8_t *>(f.data());
        ASSERT_EQ(decode_header(p, f.size(), kMaxBody, &fh, &why), Decode::kOk) << why;
        ASSERT_EQ(fh.body_len(), f.size() - kFrameHeaderLen);
        EXPECT_EQ(fh.stream, kStreamConn);
        Hello d;
        ASSERT_TRUE(decode_hello(p + kFrameHeaderLen, fh.body_len(), &d, &why)) << why;
        EXPECT_EQ(d.version, kProtocolVersion);
        EXPECT_EQ(d.workers, 4);
        EXPECT_EQ(d.max_frame, h.max_frame);
        EXPECT_EQ(d.max_message, h.max_message);
        EXPECT_EQ(d.incarnation, h.incarnation);
        EXPECT_EQ(memcmp(d.nonce, h.nonce, kNonceLen), 0);
        EXPECT_EQ(d.node, "game1");
        EXPECT_EQ(d.has_mac, mac);
        if (mac) {
            EXPECT_EQ(memcmp(d.mac, h.mac, sizeof h.mac), 0);
        }
    }
}

TEST(Wire, EveryTruncatedOrPaddedHelloIsRefused) {
    for (bool mac : {false, true}) {
        std::string f = encode_hello(FrameType::kHello, sample_hello(mac));
        std::string body = f.substr(kFrameHeaderLen);
        for (size_t n = 0; n < body.size(); n++) {
            Hello d;
            const char *why = "";
            EXPECT_FALSE(decode_hello(reinterpret_cast<const uint8_t *>(body.data()), n, &d, &why))
                << n << " of " << body.size();
        }
        std::string longer = body + "x";
        Hello d;
        const char *why = "";
        EXPECT_FALSE(decode_hello(reinterpret_cast<const uint8_t *>(longer.data()), longer.size(),
                                  &d, &why));
        EXPECT_STREQ(why, "hello of the wrong length");
    }
    std::string body = encode_hello(FrameType::kHello, sample_hello(false)).substr(kFrameHeaderLen);
    body[0] = 'X';
    Hello d;
    const char *why = "";
    EXPECT_FALSE(
        decode_hello(reinterpret_cast<const uint8_t *>(body.data()), body.size(), &d, &why));
    EXPECT_STREQ(why, "not an asyncd node (bad magic)");
}

}  // namespace
}  // namespace asyncd::cluster
