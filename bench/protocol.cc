#include "bench/protocol.h"

#include <string.h>
#include <strings.h>

#include <cstdlib>

namespace asyncd::bench {

namespace {

const char kPing[] = "*1\r\n$4\r\nPING\r\n";
const char kPong[] = "+PONG\r\n";
const char kGet[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

void put_len(char *p, uint32_t v, bool big_endian) {
    for (int i = 0; i < 4; i++) {
        int shift = big_endian ? 24 - 8 * i : 8 * i;
        p[i] = char(v >> shift);
    }
}

uint32_t get_len(const char *p, bool big_endian) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int shift = big_endian ? 24 - 8 * i : 8 * i;
        v |= uint32_t(uint8_t(p[i])) << shift;
    }
    return v;
}

}  // namespace

bool parse_proto(const std::string &name, Proto *out) {
    if (name == "echo" || name == "len32be") {
        *out = Proto::kEcho32be;
    } else if (name == "len32le") {
        *out = Proto::kEcho32le;
    } else if (name == "resp" || name == "ping") {
        *out = Proto::kResp;
    } else if (name == "http") {
        *out = Proto::kHttp;
    } else {
        return false;
    }
    return true;
}

const char *proto_name(Proto p) {
    switch (p) {
        case Proto::kEcho32be:
            return "len32be";
        case Proto::kEcho32le:
            return "len32le";
        case Proto::kResp:
            return "resp";
        case Proto::kHttp:
            return "http";
    }
    return "?";
}

void build_request(Proto p, size_t payload, uint32_t conn, uint64_t seq, std::string *out) {
    out->clear();
    if (p == Proto::kResp) {
        out->assign(kPing, sizeof kPing - 1);
        return;
    }
    if (p == Proto::kHttp) {
        out->assign(kGet, sizeof kGet - 1);
        return;
    }
    out->resize(4 + payload);
    char *b = &(*out)[0];
    put_len(b, uint32_t(4 + payload), p == Proto::kEcho32be);
    for (size_t i = 0; i < payload; i++)
        b[4 + i] = char('a' + (i % 26));
    if (payload >= 12) {
        memcpy(b + 4, &conn, 4);
        memcpy(b + 8, &seq, 8);
    }
}

void patch_request(Proto p, size_t payload, uint32_t conn, uint64_t seq, char *request) {
    if (p == Proto::kResp || p == Proto::kHttp || payload < 12) return;
    memcpy(request + 4, &conn, 4);
    memcpy(request + 8, &seq, 8);
}

size_t ReplyChecker::consume(const char *data, size_t len, size_t *used, uint64_t *errors,
                             bool *fatal) {
    *used = 0;
    switch (proto_) {
        case Proto::kEcho32be:
        case Proto::kEcho32le:
            return echo(data, len, used, errors, fatal);
        case Proto::kResp:
            return resp(data, len, used, errors, fatal);
        case Proto::kHttp:
            return http(data, len, used, errors, fatal);
    }
    return 0;
}

size_t ReplyChecker::echo(const char *data, size_t len, size_t *used, uint64_t *errors,
                          bool *fatal) {
    size_t n = 0;
    size_t want = 4 + payload_;
    while (len - *used >= 4) {
        const char *r = data + *used;
        uint32_t got = get_len(r, proto_ == Proto::kEcho32be);
        if (got != want) {
            (*errors)++;
            *fatal = true;  // the length is wrong: nothing after it can be trusted
            last_error_ =
                "reply length " + std::to_string(got) + ", expected " + std::to_string(want);
            return n;
        }
        if (len - *used < want) break;
        if (expect_.size() != want) build_request(proto_, payload_, conn_, seq_, &expect_);
        patch_request(proto_, payload_, conn_, seq_, &expect_[0]);
        if (memcmp(r, expect_.data(), want) != 0) {
            (*errors)++;
            last_error_ = "reply bytes differ from request " + std::to_string(seq_);
        }
        seq_++;
        n++;
        *used += want;
    }
    return n;
}

size_t ReplyChecker::resp(const char *data, size_t len, size_t *used, uint64_t *errors,
                          bool *fatal) {
    size_t n = 0;
    while (*used < len) {
        const char *r = data + *used;
        size_t left = len - *used;
        const char *crlf = static_cast<const char *>(memmem(r, left, "\r\n", 2));
        if (!crlf) {
            if (left > 4096) {
                (*errors)++;
                *fatal = true;
                last_error_ = "no reply end within 4096 bytes";
            }
            break;
        }
        size_t line = size_t(crlf - r) + 2;
        if (r[0] == '$' || r[0] == '*') {  // not a PONG; a bulk reply we cannot follow cheaply
            (*errors)++;
            *fatal = true;
            last_error_ = "unexpected reply type '" + std::string(1, r[0]) + "'";
            return n;
        }
        if (line != sizeof kPong - 1 || memcmp(r, kPong, line) != 0) {
            (*errors)++;
            last_error_ = "reply '" + std::string(r, line - 2) + "', expected +PONG";
        }
        seq_++;
        n++;
        *used += line;
    }
    return n;
}

size_t ReplyChecker::http(const char *data, size_t len, size_t *used, uint64_t *errors,
                          bool *fatal) {
    size_t n = 0;
    while (*used < len) {
        const char *r = data + *used;
        size_t left = len - *used;
        const char *end = static_cast<const char *>(memmem(r, left, "\r\n\r\n", 4));
        if (!end) {
            if (left > 65536) {
                (*errors)++;
                *fatal = true;
                last_error_ = "no header end within 64 KiB";
            }
            break;
        }
        size_t head = size_t(end - r) + 4;
        if (left < 12 || strncmp(r, "HTTP/1.", 7) != 0) {
            (*errors)++;
            *fatal = true;
            last_error_ = "not an HTTP/1.x response";
            return n;
        }
        int status = atoi(r + 9);
        size_t body = 0;
        bool have_length = false;
        for (const char *h = r; h < end;) {
            const char *eol = static_cast<const char *>(memmem(h, size_t(end - h) + 2, "\r\n", 2));
            if (!eol) break;
            if (eol - h > 15 && strncasecmp(h, "Content-Length:", 15) == 0) {
                body = size_t(strtoull(h + 15, nullptr, 10));
                have_length = true;
            }
            if (eol - h > 18 && strncasecmp(h, "Transfer-Encoding:", 18) == 0) {
                (*errors)++;
                *fatal = true;
                last_error_ = "chunked responses are not followed";
                return n;
            }
            h = eol + 2;
        }
        if (!have_length && status != 204 && status != 304) {
            (*errors)++;
            *fatal = true;
            last_error_ = "response without Content-Length";
            return n;
        }
        if (left < head + body) break;
        if (status != 200) {
            (*errors)++;
            last_error_ = "status " + std::to_string(status);
        }
        seq_++;
        n++;
        *used += head + body;
    }
    return n;
}

}  // namespace asyncd::bench
