#include "shmq/waker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

namespace asyncd::shmq {

bool parse_waker_kind(const char *name, WakerKind *out) {
    if (strcmp(name, "pipe") == 0) {
        *out = WakerKind::kPipe;
        return true;
    }
    if (strcmp(name, "eventfd") == 0) {
        *out = WakerKind::kEventfd;
        return true;
    }
    return false;
}

const char *waker_kind_name(WakerKind kind) {
    return kind == WakerKind::kPipe ? "pipe" : "eventfd";
}

Waker::~Waker() {
    close();
}

Waker::Waker(Waker &&other) noexcept {
    *this = std::move(other);
}

Waker &Waker::operator=(Waker &&other) noexcept {
    if (this != &other) {
        close();
        kind_ = other.kind_;
        read_fd_ = std::exchange(other.read_fd_, -1);
        write_fd_ = std::exchange(other.write_fd_, -1);
    }
    return *this;
}

bool Waker::open(WakerKind kind, std::string *err) {
    close();
    kind_ = kind;
    if (kind == WakerKind::kEventfd) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            *err = std::string("eventfd: ") + strerror(errno);
            return false;
        }
        read_fd_ = write_fd_ = fd;
        return true;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        *err = std::string("pipe2: ") + strerror(errno);
        return false;
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    return true;
}

void Waker::close() {
    if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
    if (read_fd_ >= 0) ::close(read_fd_);
    read_fd_ = write_fd_ = -1;
}

bool Waker::signal() const {
    for (;;) {
        ssize_t n;
        if (kind_ == WakerKind::kEventfd) {
            uint64_t one = 1;
            n = ::write(write_fd_, &one, sizeof one);
        } else {
            char byte = 1;
            n = ::write(write_fd_, &byte, 1);
        }
        if (n > 0) return true;
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && errno == EAGAIN;
    }
}

void Waker::drain() const {
    char buf[256];
    for (;;) {
        ssize_t n = ::read(read_fd_, buf, sizeof buf);
        if (n > 0 && kind_ == WakerKind::kPipe && n == ssize_t(sizeof buf)) continue;
        if (n < 0 && errno == EINTR) continue;
        return;  // an eventfd resets in one read; a short pipe read means it is empty
    }
}

bool Waker::wait(int timeout_ms) const {
    struct pollfd p = {read_fd_, POLLIN, 0};
    for (;;) {
        int n = ::poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        return n > 0;
    }
}

}  // namespace asyncd::shmq
