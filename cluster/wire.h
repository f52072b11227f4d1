// The cluster's wire format: frames between two nodes' conn processes, in network byte
// order. Pure code (no I/O): every length is checked against the bounds the caller gives
// before it is trusted, and a frame that breaks a rule is reported with the rule it broke.
//
// A frame: u32 length (bytes after it) · u8 type · u8 flags · u16 stream (the sending
// worker; 0xFFFF: conn itself) · u64 session (0 for SEND) · u32 deadline_ms remaining (CALL)
// or i32 status (REPLY) · u16 route · u16 service_len · u64 key · service name · payload.
//
// A message longer than max_frame travels in parts: its first frame is the CALL, SEND or
// REPLY with kFlagMore and a payload that starts with the message's total length (u32); the
// rest follow as PART frames of the same stream, kFlagMore on all but the last.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace asyncd::cluster {

enum class FrameType : uint8_t {
    kHello = 1,
    kHelloAck = 2,
    kCall = 3,
    kSend = 4,
    kReply = 5,
    kPing = 6,
    kPong = 7,
    kGoaway = 8,
    kPart = 9,
};
const char *frame_type_name(FrameType t);

constexpr uint8_t kFlagMore = 1;
constexpr uint16_t kStreamConn = 0xFFFF;
constexpr uint16_t kRouteAny = 0xFFFF;  // ASYNCD_ROUTE_ANY on the wire
constexpr uint16_t kRouteKey = 0xFFFE;  // ASYNCD_ROUTE_KEY
constexpr size_t kFrameHeaderLen = 32;  // with the length field
constexpr size_t kMaxServiceLen = 255;
constexpr uint32_t kHelloMagic = 0x41534344;  // "ASCD"
constexpr uint16_t kProtocolVersion = 1;
constexpr size_t kNonceLen = 16;

struct FrameHeader {
    uint32_t length = 0;  // bytes after the length field: the rest of the header and the body
    FrameType type = FrameType::kPing;
    uint8_t flags = 0;
    uint16_t stream = 0;
    uint64_t session = 0;
    uint32_t word = 0;  // deadline_ms remaining (CALL) or the status as i32 (REPLY)
    uint16_t route = 0;
    uint16_t service_len = 0;
    uint64_t key = 0;

    size_t body_len() const { return length + 4 - kFrameHeaderLen; }  // service + payload
};

// Writes the 32 header bytes; h.length must already count the body.
void encode_header(const FrameHeader &h, uint8_t out[kFrameHeaderLen]);
// One whole frame: h, its length and service_len set from service and body.
std::string encode_frame(FrameHeader h, std::string_view service, std::string_view body);
// The same, appended to *out (a link's output buffer: no copy in between).
void append_frame(FrameHeader h, std::string_view service, std::string_view body, std::string *out);

enum class Decode { kOk, kNeedMore, kBad };

// Decodes a header from the first `avail` bytes of p. kNeedMore until 32 bytes are there;
// kBad (with *why) for an unknown type, a length below the header or whose body is above
// max_body, a service name above kMaxServiceLen or longer than the body, or fields a type
// must leave zero. The body itself may still be arriving.
Decode decode_header(const uint8_t *p, size_t avail, size_t max_body, FrameHeader *h,
                     const char **why);

// HELLO and HELLO_ACK bodies.
struct Hello {
    uint16_t version = kProtocolVersion;
    uint16_t workers = 0;
    uint32_t max_frame = 0;
    uint32_t max_message = 0;
    uint64_t incarnation = 0;
    uint8_t nonce[kNonceLen] = {};
    std::string node;      // the sender's name, 1..kMaxServiceLen bytes
    bool has_mac = false;  // a HELLO_ACK's proof of the shared secret
    uint8_t mac[32] = {};
};

// The whole frame (header and body) of a HELLO or HELLO_ACK.
std::string encode_hello(FrameType type, const Hello &h);
// Parses a HELLO or HELLO_ACK body; false with *why on a short, long or malformed one.
bool decode_hello(const uint8_t *body, size_t len, Hello *out, const char **why);

}  // namespace asyncd::cluster
