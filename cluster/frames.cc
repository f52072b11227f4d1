#include "cluster/frames.h"

#include <string.h>

namespace asyncd::cluster {

namespace {

inline void put32(char *p, uint32_t v) {
    p[0] = char(v >> 24);
    p[1] = char(v >> 16);
    p[2] = char(v >> 8);
    p[3] = char(v);
}

inline uint32_t get32(const char *p) {
    auto *u = reinterpret_cast<const uint8_t *>(p);
    return uint32_t(u[0]) << 24 | uint32_t(u[1]) << 16 | uint32_t(u[2]) << 8 | uint32_t(u[3]);
}

bool carries_message(FrameType t) {
    return t == FrameType::kCall || t == FrameType::kSend || t == FrameType::kReply;
}

void append_frame(const FrameHeader &h, std::string_view service, std::string_view prefix,
                  std::string_view body, std::string *out) {
    uint8_t head[kFrameHeaderLen];
    encode_header(h, head);
    out->append(reinterpret_cast<const char *>(head), sizeof head);
    out->append(service.data(), service.size());
    out->append(prefix.data(), prefix.size());
    out->append(body.data(), body.size());
}

}  // namespace

MessageWriter::MessageWriter(const FrameHeader &h, std::string service, std::string payload,
                             size_t max_frame)
    : h_(h), service_(std::move(service)), payload_(std::move(payload)), max_frame_(max_frame) {
    h_.service_len = uint16_t(service_.size());
    if (max_frame_ < service_.size() + 8) max_frame_ = service_.size() + 8;
}

void MessageWriter::next(std::string *out) {
    if (done_) return;
    frames_++;
    if (sent_ == 0) {
        size_t room = max_frame_ - service_.size();
        if (payload_.size() <= room) {  // the whole message in one frame
            FrameHeader h = h_;
            h.flags = 0;
            h.length = uint32_t(kFrameHeaderLen - 4 + service_.size() + payload_.size());
            append_frame(h, service_, {}, payload_, out);
            done_ = true;
            return;
        }
        // The first part: the total length, then as much of the payload as fits.
        size_t take = room - 4;
        char total[4];
        put32(total, uint32_t(payload_.size()));
        FrameHeader h = h_;
        h.flags = kFlagMore;
        h.length = uint32_t(kFrameHeaderLen - 4 + service_.size() + 4 + take);
        append_frame(h, service_, std::string_view(total, 4),
                     std::string_view(payload_).substr(0, take), out);
        sent_ = take;
        return;
    }
    size_t take = std::min(max_frame_, payload_.size() - sent_);
    FrameHeader h;
    h.type = FrameType::kPart;
    h.stream = h_.stream;
    h.session = h_.session;
    h.flags = sent_ + take < payload_.size() ? kFlagMore : 0;
    h.length = uint32_t(kFrameHeaderLen - 4 + take);
    append_frame(h, {}, {}, std::string_view(payload_).substr(sent_, take), out);
    sent_ += take;
    done_ = sent_ == payload_.size();
}

FrameReader::FrameReader(size_t max_frame, size_t max_message, size_t max_pending)
    : max_frame_(max_frame), max_message_(max_message), max_pending_(max_pending) {}

char *FrameReader::room(size_t want) {
    if (start_ == end_) start_ = end_ = 0;
    if (buf_.size() - end_ < want) {
        if (start_) {  // slide what is left to the front
            memmove(&buf_[0], &buf_[start_], end_ - start_);
            end_ -= start_;
            start_ = 0;
        }
        if (buf_.size() - end_ < want) buf_.resize(end_ + want);
    }
    return &buf_[end_];
}

void FrameReader::wrote(size_t n) {
    end_ += n;
}

void FrameReader::feed(const void *data, size_t len) {
    memcpy(room(len), data, len);
    wrote(len);
}

FrameReader::Next FrameReader::next(Message *out, const char **why) {
    for (;;) {
        const char *p = buf_.data() + start_;
        size_t avail = end_ - start_;
        FrameHeader h;
        Decode d = decode_header(reinterpret_cast<const uint8_t *>(p), avail, max_frame_, &h, why);
        if (d == Decode::kNeedMore) return Next::kNeedMore;
        if (d == Decode::kBad) return Next::kBad;
        size_t whole = kFrameHeaderLen + h.body_len();
        if (avail < whole) return Next::kNeedMore;
        if (control_only_ && (carries_message(h.type) || h.type == FrameType::kPart)) {
            static thread_local std::string reason;
            reason = std::string("a ") + frame_type_name(h.type) + " before the handshake";
            *why = reason.c_str();
            return Next::kBad;
        }
        start_ += whole;
        const char *body = p + kFrameHeaderLen;
        std::string_view service(body, h.service_len);
        std::string_view rest(body + h.service_len, h.body_len() - h.service_len);
        auto it = streams_.find(h.stream);
        if (h.type == FrameType::kPart) {
            if (it == streams_.end()) {
                *why = "part of no message";
                return Next::kBad;
            }
            Assembly &a = it->second;
            if (h.session != a.first.session) {
                *why = "part of another session";
                return Next::kBad;
            }
            if (a.data.size() + rest.size() > a.total) {
                *why = "parts longer than their message";
                return Next::kBad;
            }
            a.data.append(rest.data(), rest.size());
            bool last = !(h.flags & kFlagMore);
            if (last != (a.data.size() == a.total)) {
                *why = last ? "last part before the message's end" : "part past the message's end";
                return Next::kBad;
            }
            if (!last) continue;
            pending_ -= a.total;
            done_ = std::move(a);
            streams_.erase(it);
            out->h = done_.first;
            out->service = done_.service;
            out->payload = done_.data;
            return Next::kMessage;
        }
        if (!carries_message(h.type)) {
            out->h = h;
            out->service = {};
            out->payload = rest;
            return Next::kControl;
        }
        if (it != streams_.end()) {
            *why = "a message inside another of the same stream";
            return Next::kBad;
        }
        if (!(h.flags & kFlagMore)) {
            out->h = h;
            out->service = service;
            out->payload = rest;
            return Next::kMessage;
        }
        if (rest.size() < 4) {
            *why = "first part without the message's length";
            return Next::kBad;
        }
        size_t total = get32(rest.data());
        rest.remove_prefix(4);
        if (total > max_message_) {
            *why = "message longer than max_message";
            return Next::kBad;
        }
        if (total <= rest.size()) {
            *why = "parted message that fits in its first frame";
            return Next::kBad;
        }
        if (pending_ + total > max_pending_) {
            *why = "too many bytes of unfinished messages on the link";
            return Next::kBad;
        }
        Assembly &a = streams_[h.stream];
        a.first = h;
        a.first.flags = 0;
        a.service.assign(service.data(), service.size());
        a.total = total;
        a.data.assign(rest.data(), rest.size());  // grows as parts come, not as claimed
        pending_ += total;
    }
}

}  // namespace asyncd::cluster
