#include "cluster/wire.h"

#include <string.h>

namespace asyncd::cluster {

namespace {

inline void put16(uint8_t *p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
inline void put32(uint8_t *p, uint32_t v) {
    put16(p, uint16_t(v >> 16));
    put16(p + 2, uint16_t(v));
}
inline void put64(uint8_t *p, uint64_t v) {
    put32(p, uint32_t(v >> 32));
    put32(p + 4, uint32_t(v));
}
inline uint16_t get16(const uint8_t *p) {
    return uint16_t(p[0] << 8 | p[1]);
}
inline uint32_t get32(const uint8_t *p) {
    return uint32_t(get16(p)) << 16 | get16(p + 2);
}
inline uint64_t get64(const uint8_t *p) {
    return uint64_t(get32(p)) << 32 | get32(p + 4);
}

// HELLO body: magic u32, version u16, workers u16, max_frame u32, max_message u32,
// incarnation u64, nonce[16], name_len u8, name, has_mac u8, [mac 32].
constexpr size_t kHelloFixed = 4 + 2 + 2 + 4 + 4 + 8 + kNonceLen + 1;

}  // namespace

const char *frame_type_name(FrameType t) {
    switch (t) {
        case FrameType::kHello:
            return "HELLO";
        case FrameType::kHelloAck:
            return "HELLO_ACK";
        case FrameType::kCall:
            return "CALL";
        case FrameType::kSend:
            return "SEND";
        case FrameType::kReply:
            return "REPLY";
        case FrameType::kPing:
            return "PING";
        case FrameType::kPong:
            return "PONG";
        case FrameType::kGoaway:
            return "GOAWAY";
        case FrameType::kPart:
            return "PART";
    }
    return "?";
}

void encode_header(const FrameHeader &h, uint8_t out[kFrameHeaderLen]) {
    put32(out, h.length);
    out[4] = uint8_t(h.type);
    out[5] = h.flags;
    put16(out + 6, h.stream);
    put64(out + 8, h.session);
    put32(out + 16, h.word);
    put16(out + 20, h.route);
    put16(out + 22, h.service_len);
    put64(out + 24, h.key);
}

void append_frame(FrameHeader h, std::string_view service, std::string_view body,
                  std::string *out) {
    h.service_len = uint16_t(service.size());
    h.length = uint32_t(kFrameHeaderLen - 4 + service.size() + body.size());
    uint8_t head[kFrameHeaderLen];
    encode_header(h, head);
    out->reserve(out->size() + sizeof head + service.size() + body.size());
    out->append(reinterpret_cast<const char *>(head), sizeof head);
    out->append(service.data(), service.size());
    out->append(body.data(), body.size());
}

std::string encode_frame(FrameHeader h, std::string_view service, std::string_view body) {
    std::string out;
    append_frame(h, service, body, &out);
    return out;
}

Decode decode_header(const uint8_t *p, size_t avail, size_t max_body, FrameHeader *h,
                     const char **why) {
    if (avail < kFrameHeaderLen) return Decode::kNeedMore;
    h->length = get32(p);
    uint8_t type = p[4];
    h->flags = p[5];
    h->stream = get16(p + 6);
    h->session = get64(p + 8);
    h->word = get32(p + 16);
    h->route = get16(p + 20);
    h->service_len = get16(p + 22);
    h->key = get64(p + 24);
    auto bad = [why](const char *w) {
        *why = w;
        return Decode::kBad;
    };
    if (type < uint8_t(FrameType::kHello) || type > uint8_t(FrameType::kPart))
        return bad("unknown frame type");
    h->type = FrameType(type);
    if (h->length < kFrameHeaderLen - 4) return bad("frame length below its header");
    if (h->body_len() > max_body) return bad("frame longer than max_frame");
    if (h->flags & ~kFlagMore) return bad("unknown frame flags");
    if (h->service_len > kMaxServiceLen) return bad("service name too long");
    if (h->service_len > h->body_len()) return bad("service name longer than the frame");
    bool carries_service = h->type == FrameType::kCall || h->type == FrameType::kSend;
    if (!carries_service && h->service_len) return bad("service name on a frame without one");
    if (carries_service && !h->service_len) return bad("call or send without a service");
    bool may_continue = h->type == FrameType::kCall || h->type == FrameType::kSend ||
                        h->type == FrameType::kReply || h->type == FrameType::kPart;
    if (!may_continue && (h->flags & kFlagMore)) return bad("MORE on a frame that has no parts");
    if (h->type == FrameType::kSend && h->session) return bad("send with a session");
    if ((h->type == FrameType::kCall || h->type == FrameType::kReply) && !h->session)
        return bad("call or reply without a session");
    return Decode::kOk;
}

std::string encode_hello(FrameType type, const Hello &h) {
    size_t name_len = h.node.size() > kMaxServiceLen ? kMaxServiceLen : h.node.size();
    size_t body = kHelloFixed + name_len + 1 + (h.has_mac ? sizeof h.mac : 0);
    std::string out(kFrameHeaderLen + body, '\0');
    auto *p = reinterpret_cast<uint8_t *>(&out[0]);
    FrameHeader fh;
    fh.length = uint32_t(kFrameHeaderLen - 4 + body);
    fh.type = type;
    fh.stream = kStreamConn;
    encode_header(fh, p);
    uint8_t *b = p + kFrameHeaderLen;
    put32(b, kHelloMagic);
    put16(b + 4, h.version);
    put16(b + 6, h.workers);
    put32(b + 8, h.max_frame);
    put32(b + 12, h.max_message);
    put64(b + 16, h.incarnation);
    memcpy(b + 24, h.nonce, kNonceLen);
    b[24 + kNonceLen] = uint8_t(name_len);
    memcpy(b + kHelloFixed, h.node.data(), name_len);
    b[kHelloFixed + name_len] = h.has_mac ? 1 : 0;
    if (h.has_mac) memcpy(b + kHelloFixed + name_len + 1, h.mac, sizeof h.mac);
    return out;
}

bool decode_hello(const uint8_t *b, size_t len, Hello *out, const char **why) {
    if (len < kHelloFixed) {
        *why = "hello too short";
        return false;
    }
    if (get32(b) != kHelloMagic) {
        *why = "not an asyncd node (bad magic)";
        return false;
    }
    out->version = get16(b + 4);
    out->workers = get16(b + 6);
    out->max_frame = get32(b + 8);
    out->max_message = get32(b + 12);
    out->incarnation = get64(b + 16);
    memcpy(out->nonce, b + 24, kNonceLen);
    size_t name_len = b[24 + kNonceLen];
    if (name_len == 0 || len < kHelloFixed + name_len + 1) {
        *why = name_len ? "hello shorter than its node name" : "hello without a node name";
        return false;
    }
    out->node.assign(reinterpret_cast<const char *>(b + kHelloFixed), name_len);
    uint8_t has_mac = b[kHelloFixed + name_len];
    size_t want = kHelloFixed + name_len + 1 + (has_mac ? sizeof out->mac : 0);
    if (has_mac > 1 || len != want) {
        *why = has_mac > 1 ? "bad proof flag in hello" : "hello of the wrong length";
        return false;
    }
    out->has_mac = has_mac == 1;
    if (out->has_mac) memcpy(out->mac, b + kHelloFixed + name_len + 1, sizeof out->mac);
    return true;
}

}  // namespace asyncd::cluster
