// Marks the time a plugin callback started for the supervisor's hang detector, and clears
// it when the callback returns.
#pragma once

#include "core/channels.h"
#include "core/clock.h"

namespace asyncd::work {

// One per callback: a loop of short callbacks (link_down_cli for every connection at a
// stop, timers due together) is many short ones, never one long one.
class InCallback {
  public:
    InCallback(WorkerState *s, Callback cb) : s_(s) {
        s_->callback.store(uint32_t(cb), std::memory_order_relaxed);
        s_->busy_since_ms.store(coarse_ms(), std::memory_order_relaxed);
    }
    ~InCallback() { s_->busy_since_ms.store(0, std::memory_order_relaxed); }
    InCallback(const InCallback &) = delete;
    InCallback &operator=(const InCallback &) = delete;

  private:
    WorkerState *s_;
};

}  // namespace asyncd::work
