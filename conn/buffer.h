// A byte buffer for one direction of one connection: allocated when data first has to wait
// in it and freed as soon as it is drained, so an idle connection holds no buffer memory.
#pragma once

#include <stdlib.h>
#include <string.h>

#include <cstddef>
#include <cstdint>

namespace asyncd::conn {

class Buffer {
  public:
    Buffer() = default;
    ~Buffer() { free(buf_); }
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;

    const uint8_t *data() const { return buf_ + start_; }
    size_t size() const { return end_ - start_; }
    bool empty() const { return start_ == end_; }
    size_t allocated() const { return cap_; }

    // Appends n bytes. Returns false (and changes nothing) if memory ran out.
    [[nodiscard]] bool append(const void *p, size_t n) {
        if (n == 0) return true;
        if (end_ + n > cap_ && !make_room(n)) return false;
        memcpy(buf_ + end_, p, n);
        end_ += n;
        return true;
    }

    // Drops n bytes from the front; an emptied buffer gives its memory back.
    void consume(size_t n) {
        start_ += n;
        if (start_ >= end_) release();
    }

    void release() {
        free(buf_);
        buf_ = nullptr;
        start_ = end_ = cap_ = 0;
    }

  private:
    bool make_room(size_t n) {
        size_t used = end_ - start_;
        if (start_) {  // slide down first: often that is room enough
            memmove(buf_, buf_ + start_, used);
            start_ = 0;
            end_ = used;
            if (used + n <= cap_) return true;
        }
        size_t cap = cap_ ? cap_ : 1024;
        while (cap < used + n)
            cap *= 2;
        // realloc: a big (mapped) buffer grows by remapping instead of copying.
        auto *p = static_cast<uint8_t *>(realloc(buf_, cap));
        if (!p) return false;
        buf_ = p;
        cap_ = cap;
        return true;
    }

    uint8_t *buf_ = nullptr;
    size_t start_ = 0, end_ = 0, cap_ = 0;
};

}  // namespace asyncd::conn
