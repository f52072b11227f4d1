// Messages over a link's byte stream: the writer cuts a message into frames of at most
// max_frame body bytes (one at a time, so that other streams' frames can go between its
// parts), and the reader gathers frames back into whole messages, per stream, within
// bounds. A peer that breaks a rule gets kBad with the rule: the link is closed, nothing is
// trusted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cluster/wire.h"

namespace asyncd::cluster {

// One message being written: call next() until done(), each time appending one frame.
class MessageWriter {
  public:
    // h: the first frame's header (type CALL, SEND or REPLY; length and flags are set here).
    MessageWriter(const FrameHeader &h, std::string service, std::string payload, size_t max_frame);
    bool done() const { return done_; }
    void next(std::string *out);
    size_t frames() const { return frames_; }

  private:
    FrameHeader h_;
    std::string service_, payload_;
    size_t max_frame_;
    size_t sent_ = 0;  // payload bytes written
    size_t frames_ = 0;
    bool done_ = false;
};

// A whole message as the reader hands it over: views into the reader, valid until the next
// call of next() or feed().
struct Message {
    FrameHeader h;  // the first frame's (flags cleared, length of the first frame)
    std::string_view service;
    std::string_view payload;
};

class FrameReader {
  public:
    // max_frame: a frame's body bound; max_message: a message's; max_pending: the bytes of
    // every message being gathered on this link together.
    FrameReader(size_t max_frame, size_t max_message, size_t max_pending);

    // Where to put received bytes: at least `want` bytes of room.
    char *room(size_t want);
    void wrote(size_t n);
    void feed(const void *data, size_t len);  // the same, copying

    enum class Next { kMessage, kNeedMore, kControl, kBad };
    // kMessage: *out is a whole message. kControl: *out is a frame of another type (HELLO,
    // PING, ...), its payload the body. kBad: *why says what the peer did.
    Next next(Message *out, const char **why);

    // Until the handshake passed, only control frames (HELLO, PING, ...) are taken: a CALL,
    // SEND, REPLY or PART is kBad at once, so a peer that has not proved who it is cannot
    // make the link gather anything.
    void set_control_only(bool on) { control_only_ = on; }

    size_t pending_bytes() const { return pending_; }
    size_t buffered() const { return end_ - start_; }

  private:
    struct Assembly {
        FrameHeader first;
        std::string service, data;
        size_t total = 0;
    };
    std::string buf_;
    size_t start_ = 0, end_ = 0;
    size_t max_frame_, max_message_, max_pending_;
    size_t pending_ = 0;
    bool control_only_ = false;
    std::unordered_map<uint16_t, Assembly> streams_;
    Assembly done_;  // the last message gathered from parts, handed out by view
};

}  // namespace asyncd::cluster
