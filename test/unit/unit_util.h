// Small helpers the unit tests share.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace asyncd::unittest {

// A non-blocking pipe, closed at the end of the scope.
struct Pipe {
    int fd[2] = {-1, -1};
    Pipe() { EXPECT_EQ(pipe2(fd, O_NONBLOCK | O_CLOEXEC), 0); }
    ~Pipe() {
        close(fd[0]);
        close(fd[1]);
    }
    Pipe(const Pipe &) = delete;
    Pipe &operator=(const Pipe &) = delete;
};

}  // namespace asyncd::unittest
