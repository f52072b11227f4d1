// The fds every process loop starts with: an epoll set, and a signalfd for the signals the
// loop handles (blocked first, so they arrive only through it), both close-on-exec.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

namespace asyncd {

struct LoopFds {
    int ep = -1;
    int sig = -1;
};

// Watches each (fd, tag) of `watch` for input, and the signalfd under `sig_tag`. On failure
// returns false with the failed call and errno text in *err.
[[nodiscard]] bool open_loop_fds(std::initializer_list<int> signals, uint64_t sig_tag,
                                 std::initializer_list<std::pair<int, uint64_t>> watch,
                                 LoopFds *out, std::string *err);

// Blocks `signals` and returns a non-blocking, close-on-exec signalfd for them, or -1 with
// the failed call and errno text in *err.
int open_signal_fd(std::initializer_list<int> signals, std::string *err);

}  // namespace asyncd
