// The work process: loads the plugin, drains its ring from conn, calls the plugin for each
// record, and pushes the plugin's replies into its ring to conn. Timers and proc_events run
// from the same loop; nothing here opens a socket.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "cluster/calls.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/cpu_contention.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/timers.h"
#include "work/in_callback.h"

namespace asyncd::work {

class Worker {
  public:
    Worker(const Config &cfg, Channels *ch, int index, Log *log);
    ~Worker();
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    // Runs until SIGTERM (then drains the ring, calls fini_service and returns 0) or until
    // the supervisor dies. Returns 2 when it must not be restarted (the plugin failed to
    // load or init_service refused).
    int run();

    // The runtime API plugins call (work/runtime.cc) lands here.
    int send(uint64_t conn, const void *buf, size_t len);
    int close_conn(uint64_t conn);
    uint64_t timer_add(uint32_t ms, Timers::Fn fn, void *arg);
    int timer_cancel(uint64_t id) { return timers_.cancel(id) ? 0 : -1; }
    // The cluster's calls (work/worker_node.cc).
    uint64_t node_call(const char *node, const char *service, int route, uint64_t key,
                       const void *msg, size_t len, uint32_t timeout_ms, cluster::CallFn fn,
                       void *arg);
    int node_send(const char *node, const char *service, int route, uint64_t key, const void *msg,
                  size_t len);
    int node_reply(uint64_t req, int status, const void *buf, size_t len);
    const char *node_name() const { return cfg_.node_name.c_str(); }
    int index() const { return index_; }
    // The running `workers`: a reload changes it in shared memory, also for the workers it
    // does not restart. A retiring worker's index is at or past it.
    int count() const {
        auto n = int(ch_->state->active_workers.load(std::memory_order_acquire));
        return n < 1 ? 1 : n;
    }
    const Config &config() const { return cfg_; }
    Log *log() const { return log_; }

  private:
    bool setup(std::string *err);
    void check_rss();
    static size_t rss_bytes();
    void reopen_log();
    void note_progress();
    void resume_predecessor();
    int drain(int budget);
    void dispatch(const shmq::Message &m);
    void quarantine(const shmq::Message &m, uint64_t attempts);
    void link_up_bound();
    void ensure_linked(uint64_t conn);
    bool forget_live(uint64_t conn);  // false: it was not linked up
    bool push_out(FromWorker type, uint64_t conn, const void *buf, size_t len);
    void wait_room(size_t len);
    // The cluster's records and timers.
    void dispatch_node(const shmq::Message &m, uint64_t attempts);
    void run_calls();
    static void invoke_call_done(void *ctx, cluster::CallFn fn, void *arg, uint64_t call,
                                 int status, int code, const void *reply, size_t len);
    int node_check(const char *node, const char *service, size_t len) const;
    bool push_node(FromWorker type, uint64_t id, uint64_t seq, const std::string &head,
                   const void *msg, size_t len);
    void sleep_until_work();
    void poll_events(int timeout_ms);

    const Config &cfg_;
    int busy_poll_us_, busy_poll_contended_us_;  // live: a reload changes them
    uint64_t call_timeout_ms_;                   // live too (the cluster file's)
    Channels *ch_;
    int index_;
    Log *log_;
    WorkerLink *link_;
    WorkerState *state_;  // this slot's hang-detector stamp in shared memory
    WorkerStats *stats_;  // its counters for status and metrics
    CallbackTimer callback_timer_;
    CallbackTimer *timing_ = nullptr;  // &callback_timer_ with handler_timing on
    shmq::Consumer in_;
    shmq::Producer out_;
    Plugin plugin_;
    Timers timers_;
    std::unordered_set<uint64_t> live_;  // connections the plugin has seen linked up
    uint64_t last_live_ = 0;             // the last one looked up in live_ and found (0: none)
    int ep_ = -1;
    int sig_fd_ = -1;
    uint64_t last_work_ns_ = 0;
    uint64_t next_rss_check_ms_ = 0;
    int exit_code_ = 0;  // 0, or why the loop ended early (corrupt ring, recycle)
    CpuContention cpu_;
    bool stopping_ = false;
    uint32_t limits_seq_ = 0;  // the shared live limits this worker has applied
    bool orphaned_ = false;
    cluster::CallTable calls_;
    // Node requests given to the plugin and not yet answered, with their deadlines: a stop
    // waits for them (up to the last deadline) after the ring is empty.
    std::unordered_map<uint64_t, uint64_t> reqs_;
    bool holding_requests() const;
    // At a stop: its own calls are still out, and the stop's deadline is not near.
    bool awaiting_calls() const;
    uint64_t reqs_pruned_ms_ = 0;
    // What a send to `node` ends with at once, from conn's table in shared memory.
    int node_refusal(const char *node);
    size_t node_slot_hint_ = 0;
    std::string scratch_;  // a node record being built
};

// The worker whose loop runs in this process. The plugin API carries no context (it is
// async-server's API), so the runtime functions find their worker here; it is set once, by
// Worker::run, and is the one piece of process-wide state in work/.
Worker *current_worker();

}  // namespace asyncd::work
