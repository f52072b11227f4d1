// A worker's table of the calls it made (node_call): each has an id (never 0, never reused
// by this worker), a node, a deadline and a callback that runs exactly once, from the
// worker's loop and never from inside node_call: a reply, a remote status, or a local one
// (TIMEOUT at the deadline, LINK_LOST when the link broke after writing it, ...). A result
// for a call that already completed, or that this process never made, is dropped and
// counted. Pure: the worker passes in time and drives it from its loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace asyncd::cluster {

using CallFn = void (*)(void *arg, uint64_t call, int status, int code, const void *reply,
                        size_t len);

// How the table runs a callback: the worker's wraps each in its own hang-detector stamp and
// timing (a batch of timeouts is many short callbacks, never one long one). Null: directly.
using CallInvoker = void (*)(void *ctx, CallFn fn, void *arg, uint64_t call, int status, int code,
                             const void *reply, size_t len);

class CallTable {
  public:
    // first_id: where this process's ids start (the worker stamps its incarnation into the
    // high bits, so that a replacement's ids never meet its predecessor's).
    explicit CallTable(uint64_t first_id, size_t max_pending);

    // A new call to `node`, due at deadline_ms. 0 when the table is full (max_pending): the
    // caller then completes it at once with QUEUE_FULL through defer().
    uint64_t add(const std::string &node, uint64_t deadline_ms, CallFn fn, void *arg);
    // An id for a call that ends before it is sent (UNKNOWN, DOWN, TOO_LARGE, ...): it still
    // reaches its callback from the loop, once.
    uint64_t add_failed(int status, CallFn fn, void *arg);

    // The outcome of a call. False (and counted) when it is not pending: late, twice, or
    // never ours.
    bool complete(uint64_t call, int status, int code, const void *reply, size_t len);
    // Every pending call to `node` ends with status (LINK_LOST, PEER_RESTARTED, STOPPING).
    size_t fail_node(const std::string &node, int status);
    // A pending call ends with status from the next run(), not now (a push that failed
    // inside node_call). False when it is not pending.
    bool fail_later(uint64_t call, int status);
    // Every pending call ends with status (conn restarted: what it held is gone).
    size_t fail_all(int status);
    // Calls whose deadline passed end with TIMEOUT; deferred failures run. Returns how many
    // callbacks ran.
    size_t run(uint64_t now_ms, int timeout_status);

    void set_invoker(CallInvoker invoke, void *ctx) {
        invoke_ = invoke;
        invoke_ctx_ = ctx;
    }
    size_t pending() const { return calls_.size(); }
    void set_max_pending(size_t n) { max_pending_ = n; }  // a reload's pending_max
    // When run() next has something to do; false: nothing pending or deferred.
    bool next_deadline_ms(uint64_t *at) const;
    uint64_t dropped() const { return dropped_; }

  private:
    struct Call {
        std::string node;
        uint64_t deadline_ms;
        CallFn fn;
        void *arg;
    };
    struct Failed {
        uint64_t id;
        int status;
        CallFn fn;
        void *arg;
    };
    void finish(uint64_t id, Call c, int status, int code, const void *reply, size_t len);
    bool end(uint64_t call, int status);  // a local outcome; false if it already ended
    void call(CallFn fn, void *arg, uint64_t id, int status, int code, const void *reply,
              size_t len) {
        if (invoke_) {
            invoke_(invoke_ctx_, fn, arg, id, status, code, reply, len);
        } else {
            fn(arg, id, status, code, reply, len);
        }
    }

    uint64_t next_id_;
    size_t max_pending_;
    std::unordered_map<uint64_t, Call> calls_;
    std::multimap<uint64_t, uint64_t> by_deadline_;  // deadline -> id
    std::vector<Failed> failed_;
    uint64_t dropped_ = 0;
    CallInvoker invoke_ = nullptr;
    void *invoke_ctx_ = nullptr;
};

}  // namespace asyncd::cluster
