#include "core/loop_fds.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

namespace asyncd {

namespace {

bool watch_fd(int ep, int fd, uint64_t tag, std::string *err) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0) return true;
    *err = std::string("epoll_ctl(ADD): ") + strerror(errno);
    return false;
}

}  // namespace

int open_signal_fd(std::initializer_list<int> signals, std::string *err) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : signals)
        sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) *err = std::string("signalfd: ") + strerror(errno);
    return fd;
}

bool open_loop_fds(std::initializer_list<int> signals, uint64_t sig_tag,
                   std::initializer_list<std::pair<int, uint64_t>> watch, LoopFds *out,
                   std::string *err) {
    out->sig = open_signal_fd(signals, err);
    if (out->sig < 0) return false;
    out->ep = epoll_create1(EPOLL_CLOEXEC);
    if (out->ep < 0) {
        *err = std::string("epoll_create1: ") + strerror(errno);
        return false;
    }
    if (!watch_fd(out->ep, out->sig, sig_tag, err)) return false;
    for (const auto &w : watch) {
        if (!watch_fd(out->ep, w.first, w.second, err)) return false;
    }
    return true;
}

}  // namespace asyncd
