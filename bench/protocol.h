// What asyncd-bench sends and how it checks what comes back. Each connection has one
// ReplyChecker; it consumes the bytes that arrived and says how many whole replies they
// held and how many of those were wrong. A wrong reply is always an error, never skipped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace asyncd::bench {

enum class Proto { kEcho32be, kEcho32le, kResp, kHttp };

[[nodiscard]] bool parse_proto(const std::string &name, Proto *out);
const char *proto_name(Proto p);

// Writes request number `seq` of connection `conn` into out (cleared first). Echo requests
// carry conn and seq in their first 16 payload bytes (when the payload has room), so that a
// reply that belongs to another request or connection does not pass as right.
void build_request(Proto p, size_t payload, uint32_t conn, uint64_t seq, std::string *out);
// In a request build_request made, rewrites only what depends on conn and seq (the first 12
// payload bytes of an echo request; nothing for the others): the per-request cost of a
// request is then a copy and two stores, not a fill of the payload.
void patch_request(Proto p, size_t payload, uint32_t conn, uint64_t seq, char *request);

class ReplyChecker {
  public:
    ReplyChecker(Proto p, size_t payload, uint32_t conn)
        : proto_(p), payload_(payload), conn_(conn) {}

    // Consumes whole replies from data; *used is how many bytes that was (a partial reply is
    // left for the next call). Each whole reply is checked against the request it answers
    // (request next_seq(), then the next). Returns replies found; *errors gets the wrong
    // ones. *fatal is set when the stream cannot be followed any more (the connection
    // should be dropped).
    size_t consume(const char *data, size_t len, size_t *used, uint64_t *errors, bool *fatal);

    uint64_t next_seq() const { return seq_; }
    const std::string &last_error() const { return last_error_; }

  private:
    size_t echo(const char *data, size_t len, size_t *used, uint64_t *errors, bool *fatal);
    size_t resp(const char *data, size_t len, size_t *used, uint64_t *errors, bool *fatal);
    size_t http(const char *data, size_t len, size_t *used, uint64_t *errors, bool *fatal);

    Proto proto_;
    size_t payload_;
    uint32_t conn_;
    uint64_t seq_ = 0;
    std::string expect_;
    std::string last_error_;
};

}  // namespace asyncd::bench
