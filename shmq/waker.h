// A one-way wakeup channel between two processes: the producer of a ring signals it, the
// consumer waits on its fd (alone, or among others in its epoll set). Created before fork
// so that both sides and their replacements inherit it.
//
// Two kinds sit behind the one interface. A pipe is what the design card names; an eventfd
// is one fd instead of two and its read resets it in one call. shmq-bench measures both and
// the README says which one asyncd uses and why.
#pragma once

#include <string>

namespace asyncd::shmq {

enum class WakerKind { kPipe, kEventfd };

// Parses "pipe" or "eventfd"; false for anything else.
[[nodiscard]] bool parse_waker_kind(const char *name, WakerKind *out);
const char *waker_kind_name(WakerKind kind);

class Waker {
  public:
    Waker() = default;
    ~Waker();
    Waker(const Waker &) = delete;
    Waker &operator=(const Waker &) = delete;
    Waker(Waker &&other) noexcept;
    Waker &operator=(Waker &&other) noexcept;

    // Creates the fds, close-on-exec and non-blocking. On failure returns false and puts the
    // failed call and errno text in *err.
    [[nodiscard]] bool open(WakerKind kind, std::string *err);
    void close();

    bool is_open() const { return read_fd_ >= 0; }
    WakerKind kind() const { return kind_; }
    // The fd the consumer waits on for readability.
    int fd() const { return read_fd_; }

    // Producer side: one write. A full pipe or a saturated eventfd already holds a pending
    // wakeup, so EAGAIN is success. Returns false only on an unexpected error.
    bool signal() const;
    // Consumer side: reads until empty so that the next wait blocks.
    void drain() const;
    // Consumer side: blocks until signalled or timeout_ms passes (-1: no limit). Returns
    // true when the fd became readable. It does not drain.
    bool wait(int timeout_ms) const;

  private:
    WakerKind kind_ = WakerKind::kEventfd;
    int read_fd_ = -1;
    int write_fd_ = -1;  // same as read_fd_ for an eventfd
};

}  // namespace asyncd::shmq
