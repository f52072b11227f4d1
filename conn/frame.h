// The frame decoder: given the bytes buffered for one connection, says whether a whole
// packet is there, how long it is, or why the stream is bad. It knows nothing about
// sockets and can be driven by tests and fuzzers alone.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/config.h"

namespace asyncd::conn {

enum class Frame {
    kNeedMore,  // no whole packet yet
    kPacket,    // a whole packet of *len bytes starts at data
    kError      // the stream is bad: *why says how; close the connection
};

using GetPkgLenFn = int (*)(uint64_t conn, const void *data, size_t avail);

struct FrameDecoder {
    FrameMode mode = FrameMode::kLen32Be;
    size_t max_pkg_len = size_t(1) << 20;
    GetPkgLenFn get_pkg_len = nullptr;  // for FrameMode::kPlugin

    // Every answer is kNeedMore, kPacket with 4 <= *len <= min(avail, max_pkg_len) (any
    // length >= 1 for plugin framing), or kError. On kNeedMore *len is the whole packet's
    // length when it is already known, else 0. With plugin framing, get_pkg_len still
    // saying "need more" at max_pkg_len buffered bytes is an error: the buffer is bounded.
    Frame decode(uint64_t conn, const uint8_t *data, size_t avail, size_t *len,
                 const char **why) const;
};

}  // namespace asyncd::conn
