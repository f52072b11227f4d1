// Helpers shared by the shmq tests: a shared scratch mapping, deterministic payloads with
// checksums, child processes, and waiting for a condition with a deadline.
#pragma once

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd::test {

// Fewer iterations under the sanitizers, which run several times slower.
inline constexpr bool kSanitized =
#if defined(__SANITIZE_ADDRESS__)
    true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    true;
#else
    false;
#endif
#else
    false;
#endif

// The count a long loop runs: `full` normally, a quarter under the sanitizers, scaled by
// ASYNCD_TEST_SCALE (a factor) when set, for the longer runs.
inline uint64_t scaled(uint64_t full) {
    double factor = kSanitized ? 0.25 : 1.0;
    if (const char *s = getenv("ASYNCD_TEST_SCALE")) factor *= atof(s);
    uint64_t n = uint64_t(double(full) * factor);
    return n ? n : 1;
}

// A ring and its waker, created as a test asks; a failure fails the test.
struct RingFixture {
    shmq::Ring ring;
    shmq::Waker waker;
    explicit RingFixture(size_t capacity, size_t max_record = 0, size_t max_msg = size_t(1) << 20,
                         shmq::WakerKind kind = shmq::WakerKind::kEventfd) {
        std::string err;
        shmq::RingParams p;
        p.capacity = capacity;
        p.max_record = max_record;
        p.max_msg = max_msg;
        if (!ring.create(p, &err)) ADD_FAILURE() << err;
        if (!waker.open(kind, &err)) ADD_FAILURE() << err;
    }
};

inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// FNV-1a, 64 bits.
inline uint64_t checksum(const void *data, size_t len) {
    const uint8_t *p = static_cast<const uint8_t *>(data);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// Fills buf with bytes that depend on seed.
inline void fill_pattern(uint8_t *buf, size_t len, uint64_t seed) {
    uint64_t x = seed;
    for (size_t i = 0; i < len; i += 8) {
        x = splitmix64(x);
        for (size_t j = 0; j < 8 && i + j < len; j++)
            buf[i + j] = uint8_t(x >> (8 * j));
    }
}

inline uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// A zeroed MAP_SHARED anonymous mapping that outlives fork, for results children report.
template <typename T>
T *shared_new() {
    void *p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    return new (p) T();
}

template <typename T>
void shared_delete(T *p) {
    p->~T();
    munmap(p, sizeof(T));
}

// Runs fn in a child process that exits with fn's return value and never returns into
// the test framework. The child dies with the test process.
inline pid_t spawn(const std::function<int()> &fn) {
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // a failed test leaves no child spinning
        int rc = fn();
        _exit(rc);
    }
    return pid;
}

// Waits for a child and returns its exit code, 128+signal when killed, -1 on error.
inline int reap(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

// Polls cond until it holds or the deadline passes; returns whether it held.
inline bool wait_until(const std::function<bool()> &cond, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (!cond()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

}  // namespace asyncd::test
