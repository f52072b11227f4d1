// Counters that every process writes without locks and anyone may read: conn's, each
// worker's, the supervisor's. They live in a memfd mapping made before the fork, so that
// `asyncd -s status`, another process, can map it too (through /proc/PID/fd). One writer
// per field: relaxed atomic stores, no read-modify-write.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"

namespace asyncd {

using Counter = std::atomic<uint64_t>;

// Adds to a counter only this process writes.
inline void bump(Counter &c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
inline void set(Counter &c, uint64_t v) {
    c.store(v, std::memory_order_relaxed);
}
inline uint64_t get(const Counter &c) {
    return c.load(std::memory_order_relaxed);
}

struct alignas(64) ConnStats {  // written by conn, a cache line apart from the rest
    Counter pid;
    Counter connections;  // open now
    Counter accepted, refused, fd_exhausted;
    Counter bad_frames, idle_closed, pkg_timeouts, out_buf_closed, stale_replies;
    Counter out_buf_peak;
    Counter packets_in, bytes_in, bytes_out, reply_records;
    Counter ring_full_pauses;
    Counter input_budget_pauses;  // times input_budget stopped reading from a connection
    Counter input_dropped;        // bytes read, never handed to a worker, dropped at a close
    Counter input_pending;        // bytes read and not yet handed to a worker, now
    Counter plugin_frame_errors;  // connections closed: get_pkg_len broke its contract
    Counter busy_poll_ns;         // time conn spent busy polling
    // The cluster (conn/nodes):
    Counter node_calls_out;       // calls and sends from our workers, to any node
    Counter node_calls_in;        // calls and sends handed to our workers
    Counter node_failed_at_once;  // calls ended by conn before a link took them
    Counter node_drops;           // sends dropped, late replies, results nobody waits for
    Counter node_links_up;        // handshakes passed
    Counter node_link_failures;   // links lost
};

// The worker's fields have a cache line of their own: it writes them per packet, and a
// line shared with another writer would bounce between CPUs.
struct WorkerStats {
    alignas(64) Counter packets;  // the worker: packets handed to the plugin
    Counter bytes_out;            // the worker: reply bytes
    Counter quarantined;          // the worker: records two workers died on, skipped
    Counter ring_depth;           // the worker, after each turn: bytes waiting in its ring
    Counter busy_poll_ns;         // the worker: time spent busy polling
    Counter node_requests;        // the worker: calls and sends handed to proc_pkg_node
    Counter node_died;            // the worker: requests answered WORKER_DIED (came again)
    Counter node_late;            // the worker: results for calls it has no more (late, or
                                  // made by a predecessor that died): dropped
    alignas(64) Counter pid;      // supervisor
    Counter restarts;             // supervisor
    Counter ring_high_water;      // conn (when it rises): the most bytes the ring held
};

// One node of the cluster file, as conn's links see it (conn writes; the slot of the i-th
// other node of the file). `name` is written before `used` is set.
inline constexpr int kMaxNodes = 64;
inline constexpr int kNodeStatuses = 13;  // asyncd_node_status values
struct alignas(64) NodeStats {
    char name[72];
    Counter used;
    Counter state;                      // cluster::LinkState
    Counter since_ms;                   // monotonic ms it entered that state
    Counter rtt_us;                     // from the last PONG; 0: none yet
    Counter queue_frames, queue_bytes;  // waiting for the link
    Counter pending_out, pending_in;    // calls in flight each way
    Counter links_up, link_failures, restarts_seen;
    Counter msgs_out, bytes_out, msgs_in, bytes_in;
    Counter calls_out, calls_in, sends_dropped;
    Counter completions[kNodeStatuses];  // our workers' calls to it, by status
    Counter refusing;  // the status a call or send to it ends with at once now (0: it goes)
};

// The last five minutes, one sample a second, written by the supervisor for the status
// page's charts: a page loaded again, or `asyncd -s top` started late, has the history.
inline constexpr int kHistory = 300;
inline constexpr int kHistoryWorkers = 32;  // the charts' lines: the first 32 worker slots
struct HistorySample {
    uint64_t unix_ms, packets_in, bytes_in, bytes_out, accepted, connections;
    uint32_t ring_depth[kHistoryWorkers];
    uint64_t p99_ns[kHistoryWorkers];  // of every callback the worker ran in that second
};
struct History {
    Counter written;  // samples written since start; the newest is at (written - 1) % kHistory
    HistorySample samples[kHistory];
};

struct Stats {
    static constexpr uint64_t kMagic = 0x6173796e63647332ull;  // "asyncds2"
    uint64_t magic;
    uint32_t nworkers;
    uint32_t size;             // sizeof(Stats), to refuse a mapping of another build
    uint64_t mapping_size;     // with the workers' histograms after it (core/latency.h)
    uint64_t ns_per_tick_q32;  // the time-stamp counter's rate, measured at start
    char node_name[72];        // the cluster's name of this node ("" without a cluster)
    Counter start_unix_ms;
    Counter reloads;
    ConnStats conn;
    WorkerStats workers[kMaxWorkers];
    NodeStats nodes[kMaxNodes];
    History history;
};

// The supervisor's: makes the memfd and maps it. False with *err.
bool create_stats(int nworkers, Stats **out, int *fd, std::string *err);

// `asyncd -s status`: maps the running supervisor's stats read-only.
const Stats *map_stats(pid_t supervisor, std::string *err);

// text (at most max bytes of it, up to a NUL) as the inside of a JSON string: quotes,
// backslashes and control characters escaped, bytes that are not UTF-8 as U+FFFD.
std::string json_escape(const char *text, size_t max = SIZE_MAX);

// The counters as Prometheus text (every line a comment or `name{labels} value`).
std::string format_metrics(const Stats &s);
// The same as a table for a terminal.
std::string format_status(const Stats &s);
// `asyncd -s top`: what two reads a second apart are diffed on, and one screen of it.
struct TopSample {
    uint64_t ms = 0, accepted = 0, open = 0, packets_in = 0, bytes_in = 0, bytes_out = 0;
    uint64_t worker_packets[kMaxWorkers] = {};
    uint64_t node_calls[kMaxNodes] = {};
};
TopSample top_sample(const Stats &s);
std::string format_top(const Stats &s, const TopSample &a, const TopSample &b);
// The same as one JSON object (asyncd -s status --json).
std::string format_status_json(const Stats &s);
// The status page: format_status_json's document in a page that draws it and reads it
// again every second (core/status_page.cc).
std::string format_html(const Stats &s);

// The supervisor's, once a second: appends a sample to s->history. Keeps the workers'
// histograms as they were at the last sample, to take each second's p99 from the difference.
class HistoryRecorder {
  public:
    void sample(Stats *s);

  private:
    std::vector<std::vector<uint64_t>> last_;  // per worker slot: its callbacks' buckets
};

}  // namespace asyncd
