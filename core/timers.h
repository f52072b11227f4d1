// The worker's one-shot millisecond timers, ordered by deadline.
#pragma once

#include <cstdint>
#include <map>
#include <unordered_map>
#include <utility>

namespace asyncd {

class Timers {
  public:
    using Fn = void (*)(void *);

    // Returns the new timer's id (never 0).
    uint64_t add(uint64_t now_ms, uint32_t delay_ms, Fn fn, void *arg) {
        uint64_t id = ++last_id_;
        uint64_t at = now_ms + delay_ms;
        queue_.emplace(std::make_pair(at, id), Entry{fn, arg});
        deadlines_.emplace(id, at);
        return id;
    }

    bool cancel(uint64_t id) {
        auto it = deadlines_.find(id);
        if (it == deadlines_.end()) return false;
        queue_.erase(std::make_pair(it->second, id));
        deadlines_.erase(it);
        return true;
    }

    // Milliseconds until the next deadline (0 if due), or -1 with no timer.
    int64_t next_in(uint64_t now_ms) const {
        if (queue_.empty()) return -1;
        uint64_t at = queue_.begin()->first.first;
        return at <= now_ms ? 0 : int64_t(at - now_ms);
    }

    // Runs every timer due at now_ms. A timer added by a callback for "now" waits for the
    // next call, so a callback that re-arms itself with 0 cannot starve the loop.
    // around(fn, arg) makes each call, so that the caller can time every callback on its
    // own (the hang detector).
    int run(uint64_t now_ms) {
        return run(now_ms, [](Fn fn, void *arg) { fn(arg); });
    }
    template <class Around>
    int run(uint64_t now_ms, Around &&around) {
        int ran = 0;
        uint64_t limit = last_id_;
        while (!queue_.empty()) {
            auto it = queue_.begin();
            if (it->first.first > now_ms || it->first.second > limit) break;
            Entry e = it->second;
            deadlines_.erase(it->first.second);
            queue_.erase(it);
            around(e.fn, e.arg);
            ran++;
        }
        return ran;
    }

    size_t size() const { return queue_.size(); }

  private:
    struct Entry {
        Fn fn;
        void *arg;
    };
    std::map<std::pair<uint64_t, uint64_t>, Entry> queue_;
    std::unordered_map<uint64_t, uint64_t> deadlines_;
    uint64_t last_id_ = 0;
};

}  // namespace asyncd
