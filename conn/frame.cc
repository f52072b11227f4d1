#include "conn/frame.h"

namespace asyncd::conn {

namespace {

constexpr size_t kPrefix = 4;

}  // namespace

Frame FrameDecoder::decode(uint64_t conn, const uint8_t *data, size_t avail, size_t *len,
                           const char **why) const {
    *len = 0;
    size_t n;
    if (mode == FrameMode::kPlugin) {
        if (avail == 0) return Frame::kNeedMore;
        int r = get_pkg_len(conn, data, avail);
        if (r < 0) {
            *why = "get_pkg_len rejected the stream";
            return Frame::kError;
        }
        if (r == 0) {
            if (avail >= max_pkg_len) {
                *why = "no packet end within max_pkg_len";
                return Frame::kError;
            }
            return Frame::kNeedMore;
        }
        n = size_t(r);
    } else {
        if (avail < kPrefix) return Frame::kNeedMore;
        if (mode == FrameMode::kLen32Be) {
            n = (size_t(data[0]) << 24) | (size_t(data[1]) << 16) | (size_t(data[2]) << 8) |
                size_t(data[3]);
        } else {
            n = (size_t(data[3]) << 24) | (size_t(data[2]) << 16) | (size_t(data[1]) << 8) |
                size_t(data[0]);
        }
        if (n < kPrefix) {
            *why = "length below the 4-byte prefix";
            return Frame::kError;
        }
    }
    if (n > max_pkg_len) {
        *why = "length above max_pkg_len";
        return Frame::kError;
    }
    *len = n;
    return n <= avail ? Frame::kPacket : Frame::kNeedMore;
}

}  // namespace asyncd::conn
