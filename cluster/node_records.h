// The payloads of the cluster's ring records between conn and a worker (core/records.h
// names the types). Little-endian fixed fields, then the names, then the message: conn and
// its workers are one machine and one build. Pure: both ends and the tests share it.
//
//   worker -> conn kNodeCall:    conn_id call (0: a send), seq deadline_ms (0: none);
//                                i32 route · u64 key · u8 node_len · u8 service_len · node ·
//                                service · msg
//   worker -> conn kNodeReply:   conn_id req, seq status (i32); the reply
//   conn -> worker kNodeRequest: conn_id req (0: a send), seq deadline_ms (0: none);
//                                u8 from_len · u8 service_len · from · service · msg
//   conn -> worker kNodeResult:  conn_id call, seq status | code << 32; the reply
//   conn -> worker kNodeLink:    seq 0 (up) or the status it went down with; the node's name
#pragma once

#include <string.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace asyncd::cluster {

constexpr size_t kCallHeadLen = 14;
constexpr size_t kRequestHeadLen = 2;

struct CallHead {
    int32_t route = 0;
    uint64_t key = 0;
    std::string_view node, service, msg;
};

// The head of a kNodeCall payload; the message follows it.
inline std::string encode_call_head(int32_t route, uint64_t key, std::string_view node,
                                    std::string_view service) {
    std::string s(kCallHeadLen, '\0');
    memcpy(&s[0], &route, 4);
    memcpy(&s[4], &key, 8);
    s[12] = char(uint8_t(node.size()));
    s[13] = char(uint8_t(service.size()));
    s.append(node);
    s.append(service);
    return s;
}

inline bool decode_call(const uint8_t *p, size_t len, CallHead *out) {
    if (len < kCallHeadLen) return false;
    memcpy(&out->route, p, 4);
    memcpy(&out->key, p + 4, 8);
    size_t nl = p[12], sl = p[13];
    if (len < kCallHeadLen + nl + sl) return false;
    const char *c = reinterpret_cast<const char *>(p);
    out->node = std::string_view(c + kCallHeadLen, nl);
    out->service = std::string_view(c + kCallHeadLen + nl, sl);
    out->msg = std::string_view(c + kCallHeadLen + nl + sl, len - kCallHeadLen - nl - sl);
    return true;
}

struct RequestHead {
    std::string_view from, service, msg;
};

inline std::string encode_request_head(std::string_view from, std::string_view service) {
    std::string s(kRequestHeadLen, '\0');
    s[0] = char(uint8_t(from.size()));
    s[1] = char(uint8_t(service.size()));
    s.append(from);
    s.append(service);
    return s;
}

inline bool decode_request(const uint8_t *p, size_t len, RequestHead *out) {
    if (len < kRequestHeadLen) return false;
    size_t fl = p[0], sl = p[1];
    if (len < kRequestHeadLen + fl + sl) return false;
    const char *c = reinterpret_cast<const char *>(p);
    out->from = std::string_view(c + kRequestHeadLen, fl);
    out->service = std::string_view(c + kRequestHeadLen + fl, sl);
    out->msg = std::string_view(c + kRequestHeadLen + fl + sl, len - kRequestHeadLen - fl - sl);
    return true;
}

inline uint64_t result_seq(int status, int code) {
    return uint64_t(uint32_t(status)) | (uint64_t(uint32_t(code)) << 32);
}
inline int result_status(uint64_t seq) {
    return int(int32_t(uint32_t(seq)));
}
inline int result_code(uint64_t seq) {
    return int(int32_t(uint32_t(seq >> 32)));
}

}  // namespace asyncd::cluster
