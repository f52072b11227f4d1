#include "core/stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <new>

#include "cluster/link.h"
#include "core/latency.h"
#include "core/status_page.h"

namespace asyncd {

namespace {

constexpr const char *kMemfdName = "asyncd-stats";

uint64_t now_unix_ms() {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    return uint64_t(tv.tv_sec) * 1000 + uint64_t(tv.tv_usec) / 1000;
}

// One metric: name, kind, help, and its value (or values per label).
struct Row {
    const char *name;
    const char *type;  // "counter" or "gauge"
    const char *help;
    const char *label;  // label name for per-worker or per-reason rows, or nullptr
};

void add(std::string *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void add(std::string *out, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) out->append(buf, size_t(n) < sizeof buf ? size_t(n) : sizeof buf - 1);
}

void head(std::string *out, const char *name, const char *type, const char *help) {
    add(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

double uptime_s(const Stats &s) {
    uint64_t start = get(s.start_unix_ms);
    uint64_t now = now_unix_ms();
    return now > start ? double(now - start) / 1000 : 0;
}

// The conn counters in one table, shared by every format.
struct ConnField {
    const char *metric;
    const char *label;  // reason="..." or nullptr
    const char *title;  // for the table and the page
    const Counter ConnStats::*field;
};

const ConnField kConnFields[] = {
    {"asyncd_connections_accepted_total", nullptr, "accepted", &ConnStats::accepted},
    {"asyncd_connections_refused_total", "max_conns", "refused (max_conns)", &ConnStats::refused},
    {"asyncd_connections_refused_total", "fd_exhausted", "refused (out of fds)",
     &ConnStats::fd_exhausted},
    {"asyncd_connections_closed_total", "bad_frame", "closed: bad frame", &ConnStats::bad_frames},
    {"asyncd_connections_closed_total", "idle_timeout", "closed: idle", &ConnStats::idle_closed},
    {"asyncd_connections_closed_total", "pkg_timeout", "closed: pkg_timeout",
     &ConnStats::pkg_timeouts},
    {"asyncd_connections_closed_total", "out_buf", "closed: output buffer",
     &ConnStats::out_buf_closed},
    {"asyncd_connections_closed_total", "plugin_frame", "closed: get_pkg_len contract",
     &ConnStats::plugin_frame_errors},
    {"asyncd_packets_in_total", nullptr, "packets in", &ConnStats::packets_in},
    {"asyncd_bytes_in_total", nullptr, "bytes in", &ConnStats::bytes_in},
    {"asyncd_bytes_out_total", nullptr, "bytes out", &ConnStats::bytes_out},
    {"asyncd_reply_records_total", nullptr, "reply records", &ConnStats::reply_records},
    {"asyncd_dropped_total", "stale_reply", "dropped: stale replies", &ConnStats::stale_replies},
    {"asyncd_ring_full_pauses_total", nullptr, "ring-full pauses", &ConnStats::ring_full_pauses},
    {"asyncd_input_budget_pauses_total", nullptr, "input_budget pauses",
     &ConnStats::input_budget_pauses},
    {"asyncd_input_dropped_bytes_total", nullptr, "input bytes dropped at a close",
     &ConnStats::input_dropped},
};

// A worker slot that has never run (max_workers leaves room to grow) is left out of every
// format; one that ran keeps its row, with pid 0 while it is down.
bool slot_used(const WorkerStats &w) {
    return get(w.pid) || get(w.packets) || get(w.restarts);
}

}  // namespace

const char *const kTimingNames[kTimingKinds] = {"packet",    "node", "timer",    "events",
                                                "call_done", "link", "ring_wait"};

uint64_t measure_ns_per_tick_q32() {
    uint64_t t0 = monotonic_ns(), k0 = ticks(), t1, k1;
    do {
        t1 = monotonic_ns();
        k1 = ticks();
    } while (t1 - t0 < 5000000);  // 5 ms: the clock's 30 ns are a few parts in a million
    if (k1 <= k0) return uint64_t(1) << 32;
    return uint64_t(((unsigned __int128)(t1 - t0) << 32) / (k1 - k0));
}

uint64_t percentile_of(const uint64_t *buckets, size_t n, uint64_t total, double p) {
    if (!total) return 0;
    uint64_t rank = uint64_t(p / 100.0 * double(total) + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        seen += buckets[i];
        if (seen >= rank) return log_linear_highest(i);
    }
    return log_linear_highest(n - 1);
}

uint64_t copy_buckets(const LatencyHist &h, uint64_t *out) {
    uint64_t total = 0;
    for (size_t i = 0; i < kLatencyBuckets; i++)
        total += out[i] = get(h.buckets[i]);
    return total;
}

LatencySummary summarize(const LatencyHist &h) {
    LatencySummary r;
    std::vector<uint64_t> b(kLatencyBuckets);
    r.count = copy_buckets(h, b.data());  // the buckets' own total: the percentiles agree
    r.sum_ns = get(h.sum_ns);
    r.max_ns = get(h.max_ns);
    r.p50_ns = percentile_of(b.data(), b.size(), r.count, 50);
    r.p99_ns = percentile_of(b.data(), b.size(), r.count, 99);
    if (r.count && r.p50_ns > r.max_ns) r.p50_ns = r.max_ns;
    if (r.count && r.p99_ns > r.max_ns) r.p99_ns = r.max_ns;
    return r;
}

std::string json_escape(const char *text, size_t max) {
    std::string out;
    const unsigned char *p = reinterpret_cast<const unsigned char *>(text);
    for (size_t i = 0; i < max && p[i]; i++) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        } else if (c < 0x80) {
            out += char(c);
        } else {
            // A whole UTF-8 sequence is kept; anything else is U+FFFD.
            size_t n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            size_t k = 1;
            while (n && k < n && i + k < max && (p[i + k] & 0xc0) == 0x80)
                k++;
            if (n && k == n) {
                out.append(reinterpret_cast<const char *>(p + i), n);
                i += n - 1;
            } else {
                out += "\\ufffd";
            }
        }
    }
    return out;
}

bool create_stats(int nworkers, Stats **out, int *fd, std::string *err) {
    int f = memfd_create(kMemfdName, MFD_CLOEXEC);
    if (f < 0) {
        *err = std::string("memfd_create: ") + strerror(errno);
        return false;
    }
    // The histograms after the struct are left as ftruncate made them (zero, and not yet
    // backed by memory): a slot's pages are touched when a worker writes them.
    size_t size = sizeof(Stats) + size_t(nworkers) * sizeof(WorkerTiming);
    if (ftruncate(f, off_t(size)) != 0) {
        *err = std::string("ftruncate of the stats: ") + strerror(errno);
        close(f);
        return false;
    }
    void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        *err = std::string("mmap of the stats: ") + strerror(errno);
        close(f);
        return false;
    }
    Stats *s = new (p) Stats();
    s->magic = Stats::kMagic;
    s->size = sizeof(Stats);
    s->mapping_size = size;
    s->nworkers = uint32_t(nworkers);
    s->ns_per_tick_q32 = measure_ns_per_tick_q32();
    set(s->start_unix_ms, now_unix_ms());
    *out = s;
    *fd = f;
    return true;
}

const Stats *map_stats(pid_t supervisor, std::string *err) {
    std::string dir = "/proc/" + std::to_string(supervisor) + "/fd";
    DIR *d = opendir(dir.c_str());
    if (!d) {
        *err = dir + ": " + strerror(errno);
        return nullptr;
    }
    std::string found;
    while (struct dirent *e = readdir(d)) {
        char target[PATH_MAX];
        std::string link = dir + "/" + e->d_name;
        ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (strstr(target, "memfd:asyncd-stats")) found = link;
    }
    closedir(d);
    if (found.empty()) {
        *err = "pid " + std::to_string(supervisor) + " has no stats (not asyncd, or an older one)";
        return nullptr;
    }
    int f = open(found.c_str(), O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        *err = found + ": " + strerror(errno);
        return nullptr;
    }
    struct stat st;
    if (fstat(f, &st) != 0 || size_t(st.st_size) < sizeof(Stats)) {
        *err = "the running asyncd's stats have another layout (another build)";
        close(f);
        return nullptr;
    }
    size_t size = size_t(st.st_size);
    void *p = mmap(nullptr, size, PROT_READ, MAP_SHARED, f, 0);
    close(f);
    if (p == MAP_FAILED) {
        *err = std::string("mmap of the stats: ") + strerror(errno);
        return nullptr;
    }
    const Stats *s = static_cast<const Stats *>(p);
    if (s->magic != Stats::kMagic || s->size != sizeof(Stats) || s->mapping_size != size ||
        size != sizeof(Stats) + s->nworkers * sizeof(WorkerTiming)) {
        *err = "the running asyncd's stats have another layout (another build)";
        munmap(p, size);
        return nullptr;
    }
    return s;
}

namespace {

const char *const kNodeStatusNames[kNodeStatuses] = {
    "ok",        "remote", "timeout",     "unknown",  "down",           "link_lost", "queue_full",
    "too_large", "busy",   "worker_died", "stopping", "peer_restarted", "no_service"};

template <size_t N>
std::string json_string(const char (&text)[N]) {
    return json_escape(text, N);
}

bool node_used(const NodeStats &n) {
    return get(n.used) != 0;
}

const char *node_state(const NodeStats &n) {
    return cluster::link_state_name(cluster::LinkState(get(n.state)));
}

}  // namespace

std::string format_metrics(const Stats &s) {
    std::string out;
    head(&out, "asyncd_uptime_seconds", "gauge", "Seconds since asyncd started.");
    add(&out, "asyncd_uptime_seconds %.3f\n", uptime_s(s));
    head(&out, "asyncd_reloads_total", "counter", "Reloads applied.");
    add(&out, "asyncd_reloads_total %llu\n", (unsigned long long)get(s.reloads));
    head(&out, "asyncd_connections", "gauge", "Client connections open now.");
    add(&out, "asyncd_connections %llu\n", (unsigned long long)get(s.conn.connections));
    const char *last = "";
    for (const ConnField &f : kConnFields) {
        if (strcmp(last, f.metric) != 0) {
            head(&out, f.metric, "counter", f.label ? "By reason." : "Since asyncd started.");
            last = f.metric;
        }
        if (f.label) {
            add(&out, "%s{reason=\"%s\"} %llu\n", f.metric, f.label,
                (unsigned long long)get(s.conn.*f.field));
        } else {
            add(&out, "%s %llu\n", f.metric, (unsigned long long)get(s.conn.*f.field));
        }
    }
    head(&out, "asyncd_input_pending_bytes", "gauge",
         "Bytes conn has read and not yet handed to a worker (input_budget bounds them).");
    add(&out, "asyncd_input_pending_bytes %llu\n", (unsigned long long)get(s.conn.input_pending));
    head(&out, "asyncd_out_buf_peak_bytes", "gauge", "The largest output buffer a client had.");
    add(&out, "asyncd_out_buf_peak_bytes %llu\n", (unsigned long long)get(s.conn.out_buf_peak));
    head(&out, "asyncd_busy_poll_seconds_total", "counter",
         "CPU time conn spent busy polling (busy_poll_us, busy_poll_contended_us).");
    add(&out, "asyncd_busy_poll_seconds_total %.6f\n", double(get(s.conn.busy_poll_ns)) / 1e9);
    head(&out, "asyncd_worker_busy_poll_seconds_total", "counter",
         "CPU time the worker spent busy polling.");
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        if (!slot_used(s.workers[w])) continue;
        add(&out, "asyncd_worker_busy_poll_seconds_total{worker=\"%u\"} %.6f\n", w,
            double(get(s.workers[w].busy_poll_ns)) / 1e9);
    }
    struct WorkerField {
        const char *metric, *type, *help;
        const Counter WorkerStats::*field;
    } wf[] = {
        {"asyncd_worker_packets_total", "counter", "Packets handed to the plugin.",
         &WorkerStats::packets},
        {"asyncd_worker_bytes_out_total", "counter", "Reply bytes the plugin sent.",
         &WorkerStats::bytes_out},
        {"asyncd_worker_restarts_total", "counter", "Restarts of the worker slot.",
         &WorkerStats::restarts},
        {"asyncd_worker_quarantined_total", "counter",
         "Records dropped because two workers died on them.", &WorkerStats::quarantined},
        {"asyncd_ring_depth_bytes", "gauge", "Bytes waiting in the ring to the worker.",
         &WorkerStats::ring_depth},
        {"asyncd_worker_node_requests_total", "counter",
         "Node calls and sends handed to proc_pkg_node.", &WorkerStats::node_requests},
        {"asyncd_worker_node_died_total", "counter",
         "Node calls answered WORKER_DIED: a predecessor died on them.", &WorkerStats::node_died},
        {"asyncd_worker_node_results_dropped_total", "counter",
         "Results of node calls this process no longer has (late, or its predecessor's).",
         &WorkerStats::node_late},
        {"asyncd_ring_high_water_bytes", "gauge", "The most bytes the ring to the worker held.",
         &WorkerStats::ring_high_water},
    };
    for (const WorkerField &f : wf) {
        head(&out, f.metric, f.type, f.help);
        for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
            if (!slot_used(s.workers[w])) continue;
            add(&out, "%s{worker=\"%u\"} %llu\n", f.metric, w,
                (unsigned long long)get(s.workers[w].*f.field));
        }
    }
    // The workers' histograms, in a fixed set of buckets (each fine bucket counts under the
    // first bound not below its highest value).
    static const double kBounds[] = {1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4,
                                     5e-4, 1e-3,   2.5e-3, 5e-3, 1e-2,   0.1,  1};
    for (int family = 0; family < 2; family++) {
        const char *metric = family ? "asyncd_ring_wait_seconds" : "asyncd_handler_seconds";
        head(&out, metric, "histogram",
             family ? "Time a packet waited in the ring between conn and the worker (the "
                      "packets whose callback was timed)."
                    : "Time the plugin's callbacks took, by callback: one in handler_timing "
                      "of each kind is timed.");
        std::vector<uint64_t> b(kLatencyBuckets);
        for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
            if (!slot_used(s.workers[w])) continue;
            for (int k = family ? kTimeRingWait : 0; k < (family ? kTimingKinds : kHandlerKinds);
                 k++) {
                const LatencyHist &h = worker_timing(&s, int(w))->kinds[k];
                uint64_t total = copy_buckets(h, b.data());
                if (!total && k != kTimePacket && k != kTimeRingWait) continue;
                char labels[64];
                if (family) {
                    snprintf(labels, sizeof labels, "worker=\"%u\"", w);
                } else {
                    snprintf(labels, sizeof labels, "worker=\"%u\",callback=\"%s\"", w,
                             kTimingNames[k]);
                }
                uint64_t seen = 0;
                size_t i = 0;
                for (double bound : kBounds) {
                    uint64_t ns = uint64_t(bound * 1e9 + 0.5);
                    for (; i < kLatencyBuckets && log_linear_highest(i) <= ns; i++)
                        seen += b[i];
                    add(&out, "%s_bucket{%s,le=\"%g\"} %llu\n", metric, labels, bound,
                        (unsigned long long)seen);
                }
                add(&out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", metric, labels,
                    (unsigned long long)total);
                add(&out, "%s_sum{%s} %.9f\n", metric, labels, double(get(h.sum_ns)) / 1e9);
                add(&out, "%s_count{%s} %llu\n", metric, labels, (unsigned long long)total);
            }
        }
    }
    // The cluster: one series per node of the cluster file.
    struct NodeField {
        const char *metric, *type, *help;
        const Counter NodeStats::*field;
        double scale;
    } nf[] = {
        {"asyncd_node_rtt_seconds", "gauge", "Round trip of the last heartbeat.",
         &NodeStats::rtt_us, 1e-6},
        {"asyncd_node_queue_frames", "gauge", "Messages waiting for the link to connect.",
         &NodeStats::queue_frames, 1},
        {"asyncd_node_queue_bytes", "gauge", "Their bytes.", &NodeStats::queue_bytes, 1},
        {"asyncd_node_pending_calls_out", "gauge", "Our calls written to it, not answered.",
         &NodeStats::pending_out, 1},
        {"asyncd_node_pending_calls_in", "gauge", "Its calls to us, not answered.",
         &NodeStats::pending_in, 1},
        {"asyncd_node_links_up_total", "counter", "Handshakes passed.", &NodeStats::links_up, 1},
        {"asyncd_node_link_failures_total", "counter", "Links lost or refused.",
         &NodeStats::link_failures, 1},
        {"asyncd_node_restarts_seen_total", "counter", "Times it came back as a new process.",
         &NodeStats::restarts_seen, 1},
        {"asyncd_node_messages_out_total", "counter", "Calls, sends and replies written to it.",
         &NodeStats::msgs_out, 1},
        {"asyncd_node_bytes_out_total", "counter", "Their bytes, framed.", &NodeStats::bytes_out,
         1},
        {"asyncd_node_messages_in_total", "counter", "Calls, sends and replies from it.",
         &NodeStats::msgs_in, 1},
        {"asyncd_node_bytes_in_total", "counter", "Their payload bytes.", &NodeStats::bytes_in, 1},
        {"asyncd_node_calls_out_total", "counter", "Calls and sends our workers made to it.",
         &NodeStats::calls_out, 1},
        {"asyncd_node_calls_in_total", "counter", "Calls and sends it made to our workers.",
         &NodeStats::calls_in, 1},
        {"asyncd_node_sends_dropped_total", "counter", "Sends to it dropped at once.",
         &NodeStats::sends_dropped, 1},
    };
    bool any_node = false;
    for (const NodeStats &n : s.nodes)
        any_node = any_node || node_used(n);
    if (any_node) {
        head(&out, "asyncd_node_up", "gauge", "1 while the link to the node is up.");
        for (const NodeStats &n : s.nodes) {
            if (!node_used(n)) continue;
            add(&out, "asyncd_node_up{node=\"%s\",state=\"%s\"} %d\n", n.name, node_state(n),
                cluster::LinkState(get(n.state)) == cluster::LinkState::kUp ? 1 : 0);
        }
        for (const NodeField &f : nf) {
            head(&out, f.metric, f.type, f.help);
            for (const NodeStats &n : s.nodes) {
                if (!node_used(n)) continue;
                if (f.scale == 1) {
                    add(&out, "%s{node=\"%s\"} %llu\n", f.metric, n.name,
                        (unsigned long long)get(n.*f.field));
                } else {
                    add(&out, "%s{node=\"%s\"} %.6f\n", f.metric, n.name,
                        double(get(n.*f.field)) * f.scale);
                }
            }
        }
        head(&out, "asyncd_node_calls_completed_total", "counter",
             "Our calls to the node, by how they ended.");
        for (const NodeStats &n : s.nodes) {
            if (!node_used(n)) continue;
            for (int st = 0; st < kNodeStatuses; st++) {
                add(&out, "asyncd_node_calls_completed_total{node=\"%s\",status=\"%s\"} %llu\n",
                    n.name, kNodeStatusNames[st], (unsigned long long)get(n.completions[st]));
            }
        }
    }
    return out;
}

std::string format_status(const Stats &s) {
    std::string out;
    long up = long(uptime_s(s));
    add(&out, "uptime %ldd %02ld:%02ld:%02ld, %llu reloads, %llu connections open\n", up / 86400,
        up / 3600 % 24, up / 60 % 60, up % 60, (unsigned long long)get(s.reloads),
        (unsigned long long)get(s.conn.connections));
    for (const ConnField &f : kConnFields)
        add(&out, "  %-24s %16llu\n", f.title, (unsigned long long)get(s.conn.*f.field));
    add(&out, "  %-24s %16llu\n", "output buffer peak",
        (unsigned long long)get(s.conn.out_buf_peak));
    add(&out, "%-8s %8s %14s %14s %9s %12s %12s %9s %9s %9s\n", "worker", "pid", "packets",
        "bytes out", "restarts", "ring depth", "ring peak", "p50 us", "p99 us", "wait p99");
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        LatencySummary h = summarize(worker_timing(&s, int(w))->kinds[kTimePacket]);
        LatencySummary q = summarize(worker_timing(&s, int(w))->kinds[kTimeRingWait]);
        add(&out, "%-8u %8llu %14llu %14llu %9llu %12llu %12llu %9.1f %9.1f %9.1f\n", w,
            (unsigned long long)get(ws.pid), (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.bytes_out), (unsigned long long)get(ws.restarts),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.ring_high_water),
            double(h.p50_ns) / 1000, double(h.p99_ns) / 1000, double(q.p99_ns) / 1000);
    }
    bool header = false;
    for (const NodeStats &n : s.nodes) {
        if (!node_used(n)) continue;
        if (!header) {
            add(&out, "%-16s %-12s %10s %8s %9s %12s %12s %10s\n", "node", "state", "rtt us",
                "queued", "pending", "calls out", "calls in", "failures");
            header = true;
        }
        uint64_t failed = 0;
        for (int st = 2; st < kNodeStatuses; st++)
            failed += get(n.completions[st]);
        add(&out, "%-16s %-12s %10llu %8llu %9llu %12llu %12llu %10llu\n", n.name, node_state(n),
            (unsigned long long)get(n.rtt_us), (unsigned long long)get(n.queue_frames),
            (unsigned long long)(get(n.pending_out) + get(n.pending_in)),
            (unsigned long long)get(n.calls_out), (unsigned long long)get(n.calls_in),
            (unsigned long long)failed);
    }
    return out;
}

// The same figures as format_status, as one JSON object for scripts: conn's counters by
// their /metrics names (a reason label appended: asyncd_connections_closed_total_idle_timeout),
// one object per worker slot in use and per node.
std::string format_status_json(const Stats &s) {
    std::string out;
    add(&out, "{\"unix_ms\": %llu, \"uptime_s\": %.3f, \"reloads\": %llu, \"connections\": %llu, ",
        (unsigned long long)now_unix_ms(), uptime_s(s), (unsigned long long)get(s.reloads),
        (unsigned long long)get(s.conn.connections));
    if (s.node_name[0]) add(&out, "\"node\": \"%s\", ", json_string(s.node_name).c_str());
    out += "\"conn\": {";
    const char *sep = "";
    for (const ConnField &f : kConnFields) {
        add(&out, "%s\"%s%s%s\": %llu", sep, f.metric, f.label ? "_" : "", f.label ? f.label : "",
            (unsigned long long)get(s.conn.*f.field));
        sep = ", ";
    }
    add(&out, ", \"output_buffer_peak\": %llu}, \"workers\": [",
        (unsigned long long)get(s.conn.out_buf_peak));
    sep = "";
    auto summary = [&](const char *name, const LatencyHist &h) {
        LatencySummary l = summarize(h);
        add(&out,
            "\"%s\": {\"count\": %llu, \"sum_ns\": %llu, \"p50_ns\": %llu, \"p99_ns\": %llu, "
            "\"max_ns\": %llu}",
            name, (unsigned long long)l.count, (unsigned long long)l.sum_ns,
            (unsigned long long)l.p50_ns, (unsigned long long)l.p99_ns,
            (unsigned long long)l.max_ns);
    };
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        add(&out,
            "%s{\"index\": %u, \"pid\": %llu, \"packets\": %llu, \"bytes_out\": %llu, "
            "\"restarts\": %llu, \"ring_depth\": %llu, \"ring_peak\": %llu, \"handler\": {",
            sep, w, (unsigned long long)get(ws.pid), (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.bytes_out), (unsigned long long)get(ws.restarts),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.ring_high_water));
        const WorkerTiming *t = worker_timing(&s, int(w));
        for (int k = 0; k < kHandlerKinds; k++) {
            if (k) out += ", ";
            summary(kTimingNames[k], t->kinds[k]);
        }
        out += "}, ";
        summary("ring_wait", t->kinds[kTimeRingWait]);
        out += "}";
        sep = ", ";
    }
    out += "], \"nodes\": [";
    sep = "";
    for (const NodeStats &n : s.nodes) {
        if (!node_used(n)) continue;
        uint64_t failed = 0;
        for (int st = 2; st < kNodeStatuses; st++)
            failed += get(n.completions[st]);
        std::string name = json_string(n.name);
        add(&out,
            "%s{\"name\": \"%s\", \"state\": \"%s\", \"rtt_us\": %llu, \"queued\": %llu, "
            "\"pending_out\": %llu, \"pending_in\": %llu, \"calls_out\": %llu, "
            "\"calls_in\": %llu, \"failures\": %llu, \"completions\": {",
            sep, name.c_str(), node_state(n), (unsigned long long)get(n.rtt_us),
            (unsigned long long)get(n.queue_frames), (unsigned long long)get(n.pending_out),
            (unsigned long long)get(n.pending_in), (unsigned long long)get(n.calls_out),
            (unsigned long long)get(n.calls_in), (unsigned long long)failed);
        for (int st = 0; st < kNodeStatuses; st++) {
            add(&out, "%s\"%s\": %llu", st ? ", " : "", kNodeStatusNames[st],
                (unsigned long long)get(n.completions[st]));
        }
        out += "}}";
        sep = ", ";
    }
    out += "], \"history\": {\"interval_ms\": 1000, \"samples\": [";
    uint64_t written = s.history.written.load(std::memory_order_acquire);
    // The oldest slot is the one the supervisor writes next: another process reading it
    // could see half a sample, so it is left out.
    uint64_t first = written >= uint64_t(kHistory) ? written - kHistory + 1 : 0;
    int charted = int(s.nworkers < uint32_t(kHistoryWorkers) ? s.nworkers : kHistoryWorkers);
    for (uint64_t i = first; i < written; i++) {
        const HistorySample &h = s.history.samples[i % kHistory];
        add(&out,
            "%s{\"unix_ms\": %llu, \"packets_in\": %llu, \"bytes_in\": %llu, "
            "\"bytes_out\": %llu, \"accepted\": %llu, \"connections\": %llu, \"workers\": [",
            i > first ? ", " : "", (unsigned long long)h.unix_ms, (unsigned long long)h.packets_in,
            (unsigned long long)h.bytes_in, (unsigned long long)h.bytes_out,
            (unsigned long long)h.accepted, (unsigned long long)h.connections);
        sep = "";
        for (int w = 0; w < charted; w++) {
            if (!slot_used(s.workers[w])) continue;
            add(&out, "%s{\"index\": %d, \"ring_depth\": %u, \"p99_ns\": %llu}", sep, w,
                h.ring_depth[w], (unsigned long long)h.p99_ns[w]);
            sep = ", ";
        }
        out += "]}";
    }
    out += "]}}\n";
    return out;
}

void HistoryRecorder::sample(Stats *s) {
    uint64_t i = get(s->history.written);
    HistorySample &h = s->history.samples[i % kHistory];
    h.unix_ms = now_unix_ms();
    h.packets_in = get(s->conn.packets_in);
    h.bytes_in = get(s->conn.bytes_in);
    h.bytes_out = get(s->conn.bytes_out);
    h.accepted = get(s->conn.accepted);
    h.connections = get(s->conn.connections);
    int charted = int(s->nworkers < uint32_t(kHistoryWorkers) ? s->nworkers : kHistoryWorkers);
    last_.resize(size_t(charted));
    std::vector<uint64_t> now(kLatencyBuckets), b(kLatencyBuckets);
    for (int w = 0; w < charted; w++) {
        uint64_t depth = get(s->workers[w].ring_depth);
        h.ring_depth[w] = uint32_t(depth > UINT32_MAX ? UINT32_MAX : depth);
        std::fill(now.begin(), now.end(), 0);
        for (int k = 0; k < kHandlerKinds; k++) {
            copy_buckets(worker_timing(s, w)->kinds[k], b.data());
            for (size_t j = 0; j < kLatencyBuckets; j++)
                now[j] += b[j];
        }
        std::vector<uint64_t> &last = last_[size_t(w)];
        if (last.empty()) last.assign(kLatencyBuckets, 0);
        uint64_t total = 0;
        for (size_t j = 0; j < kLatencyBuckets; j++) {
            // A restarted slot's histogram goes on from where it was (one writer at a time),
            // so a bucket never falls; guard anyway.
            b[j] = now[j] >= last[j] ? now[j] - last[j] : 0;
            total += b[j];
        }
        h.p99_ns[w] = percentile_of(b.data(), b.size(), total, 99);
        last.swap(now);
        now.assign(kLatencyBuckets, 0);
    }
    s->history.written.store(i + 1, std::memory_order_release);
}

TopSample top_sample(const Stats &s) {
    TopSample t;
    t.ms = uint64_t(uptime_s(s) * 1000);
    t.accepted = get(s.conn.accepted);
    t.open = get(s.conn.connections);
    t.packets_in = get(s.conn.packets_in);
    t.bytes_in = get(s.conn.bytes_in);
    t.bytes_out = get(s.conn.bytes_out);
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++)
        t.worker_packets[w] = get(s.workers[w].packets);
    for (int n = 0; n < kMaxNodes; n++)
        t.node_calls[n] = get(s.nodes[n].calls_out);
    return t;
}

// One screen of `asyncd -s top`: rates over the two samples, then the workers and nodes.
std::string format_top(const Stats &s, const TopSample &a, const TopSample &b) {
    std::string out;
    double dt = b.ms > a.ms ? double(b.ms - a.ms) / 1000 : 1;
    auto rate = [&](uint64_t x, uint64_t y) { return y >= x ? double(y - x) / dt : 0; };
    long up = long(uptime_s(s));
    uint64_t closed_a = a.accepted >= a.open ? a.accepted - a.open : 0;
    uint64_t closed_b = b.accepted >= b.open ? b.accepted - b.open : 0;
    add(&out, "asyncd top - up %ldd %02ld:%02ld:%02ld, %llu connections open, %llu reloads\n",
        up / 86400, up / 3600 % 24, up / 60 % 60, up % 60, (unsigned long long)b.open,
        (unsigned long long)get(s.reloads));
    add(&out,
        "packets/s in %12.0f   bytes/s in %14.0f   bytes/s out %14.0f\n"
        "connections/s opened %8.0f   closed %8.0f\n\n",
        rate(a.packets_in, b.packets_in), rate(a.bytes_in, b.bytes_in),
        rate(a.bytes_out, b.bytes_out), rate(a.accepted, b.accepted), rate(closed_a, closed_b));
    add(&out, "%-8s %8s %12s %14s %12s %9s %9s %9s %9s\n", "worker", "pid", "packets/s", "packets",
        "ring depth", "restarts", "p50 us", "p99 us", "wait p99");
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        LatencySummary h = summarize(worker_timing(&s, int(w))->kinds[kTimePacket]);
        LatencySummary q = summarize(worker_timing(&s, int(w))->kinds[kTimeRingWait]);
        add(&out, "%-8u %8llu %12.0f %14llu %12llu %9llu %9.1f %9.1f %9.1f\n", w,
            (unsigned long long)get(ws.pid), rate(a.worker_packets[w], b.worker_packets[w]),
            (unsigned long long)get(ws.packets), (unsigned long long)get(ws.ring_depth),
            (unsigned long long)get(ws.restarts), double(h.p50_ns) / 1000, double(h.p99_ns) / 1000,
            double(q.p99_ns) / 1000);
    }
    bool header = false;
    for (int n = 0; n < kMaxNodes; n++) {
        const NodeStats &ns = s.nodes[n];
        if (!node_used(ns)) continue;
        if (!header) {
            add(&out, "\n%-16s %-12s %10s %10s %9s\n", "node", "state", "rtt us", "calls/s",
                "pending");
            header = true;
        }
        add(&out, "%-16s %-12s %10llu %10.0f %9llu\n", ns.name, node_state(ns),
            (unsigned long long)get(ns.rtt_us), rate(a.node_calls[n], b.node_calls[n]),
            (unsigned long long)(get(ns.pending_out) + get(ns.pending_in)));
    }
    return out;
}

std::string format_html(const Stats &s) {
    return format_status_page(format_status_json(s));
}

}  // namespace asyncd
