// The restart back-off of one child slot (OTP, systemd, nginx): 100 ms, doubling to 30 s
// (or the cap given), back to 100 ms once a child has run for a minute. Pure arithmetic on times
// passed in, so tests drive it with their own clock.
#pragma once

#include <algorithm>
#include <cstdint>

namespace asyncd {

class Backoff {
  public:
    static constexpr uint64_t kFirstMs = 100;
    static constexpr uint64_t kCapMs = 30000;
    static constexpr uint64_t kHealthyMs = 60000;

    explicit Backoff(uint64_t cap_ms = kCapMs) : cap_ms_(cap_ms) {}

    // A child that started at started_ms died at died_ms: the delay before the next start.
    uint64_t next_delay(uint64_t started_ms, uint64_t died_ms) {
        if (died_ms - started_ms >= kHealthyMs || delay_ms_ == 0) {
            delay_ms_ = kFirstMs;
        } else {
            delay_ms_ = std::min(delay_ms_ * 2, cap_ms_);
        }
        return delay_ms_;
    }

    uint64_t current_ms() const { return delay_ms_; }

  private:
    uint64_t cap_ms_;
    uint64_t delay_ms_ = 0;
};

}  // namespace asyncd
