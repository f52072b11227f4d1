#include "core/stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#include <new>

#include "cluster/link.h"

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

bool create_stats(int nworkers, Stats **out, int *fd, std::string *err) {
    int f = memfd_create(kMemfdName, MFD_CLOEXEC);
    if (f < 0) {
        *err = std::string("memfd_create: ") + strerror(errno);
        return false;
    }
    if (ftruncate(f, sizeof(Stats)) != 0) {
        *err = std::string("ftruncate of the stats: ") + strerror(errno);
        close(f);
        return false;
    }
    void *p = mmap(nullptr, sizeof(Stats), PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        *err = std::string("mmap of the stats: ") + strerror(errno);
        close(f);
        return false;
    }
    Stats *s = new (p) Stats();
    s->magic = Stats::kMagic;
    s->size = sizeof(Stats);
    s->nworkers = uint32_t(nworkers);
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
    void *p = mmap(nullptr, sizeof(Stats), PROT_READ, MAP_SHARED, f, 0);
    close(f);
    if (p == MAP_FAILED) {
        *err = std::string("mmap of the stats: ") + strerror(errno);
        return nullptr;
    }
    const Stats *s = static_cast<const Stats *>(p);
    if (s->magic != Stats::kMagic || s->size != sizeof(Stats)) {
        *err = "the running asyncd's stats have another layout (another build)";
        munmap(p, sizeof(Stats));
        return nullptr;
    }
    return s;
}

namespace {

const char *const kNodeStatusNames[kNodeStatuses] = {
    "ok",        "remote", "timeout",     "unknown",  "down",           "link_lost", "queue_full",
    "too_large", "busy",   "worker_died", "stopping", "peer_restarted", "no_service"};

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
    add(&out, "%-8s %8s %14s %14s %9s %12s %12s\n", "worker", "pid", "packets", "bytes out",
        "restarts", "ring depth", "ring peak");
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        add(&out, "%-8u %8llu %14llu %14llu %9llu %12llu %12llu\n", w,
            (unsigned long long)get(ws.pid), (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.bytes_out), (unsigned long long)get(ws.restarts),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.ring_high_water));
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
    add(&out, "{\"uptime_s\": %.3f, \"reloads\": %llu, \"connections\": %llu, \"conn\": {",
        uptime_s(s), (unsigned long long)get(s.reloads),
        (unsigned long long)get(s.conn.connections));
    const char *sep = "";
    for (const ConnField &f : kConnFields) {
        add(&out, "%s\"%s%s%s\": %llu", sep, f.metric, f.label ? "_" : "", f.label ? f.label : "",
            (unsigned long long)get(s.conn.*f.field));
        sep = ", ";
    }
    add(&out, ", \"output_buffer_peak\": %llu}, \"workers\": [",
        (unsigned long long)get(s.conn.out_buf_peak));
    sep = "";
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        add(&out,
            "%s{\"index\": %u, \"pid\": %llu, \"packets\": %llu, \"bytes_out\": %llu, "
            "\"restarts\": %llu, \"ring_depth\": %llu, \"ring_peak\": %llu}",
            sep, w, (unsigned long long)get(ws.pid), (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.bytes_out), (unsigned long long)get(ws.restarts),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.ring_high_water));
        sep = ", ";
    }
    out += "], \"nodes\": [";
    sep = "";
    for (const NodeStats &n : s.nodes) {
        if (!node_used(n)) continue;
        uint64_t failed = 0;
        for (int st = 2; st < kNodeStatuses; st++)
            failed += get(n.completions[st]);
        std::string name;
        for (const char *c = n.name; *c && c < n.name + sizeof n.name; c++) {
            if (*c == '"' || *c == '\\') name += '\\';
            name += *c;
        }
        add(&out,
            "%s{\"name\": \"%s\", \"state\": \"%s\", \"rtt_us\": %llu, \"queued\": %llu, "
            "\"pending_out\": %llu, \"pending_in\": %llu, \"calls_out\": %llu, "
            "\"calls_in\": %llu, \"failures\": %llu}",
            sep, name.c_str(), node_state(n), (unsigned long long)get(n.rtt_us),
            (unsigned long long)get(n.queue_frames), (unsigned long long)get(n.pending_out),
            (unsigned long long)get(n.pending_in), (unsigned long long)get(n.calls_out),
            (unsigned long long)get(n.calls_in), (unsigned long long)failed);
        sep = ", ";
    }
    out += "]}\n";
    return out;
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
    add(&out, "%-8s %8s %12s %14s %12s %9s\n", "worker", "pid", "packets/s", "packets",
        "ring depth", "restarts");
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        add(&out, "%-8u %8llu %12.0f %14llu %12llu %9llu\n", w, (unsigned long long)get(ws.pid),
            rate(a.worker_packets[w], b.worker_packets[w]), (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.restarts));
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
    std::string out =
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" "
        "content=\"1\"><title>asyncd status</title><style>body{font:14px system-ui,sans-serif;"
        "margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{padding:4px "
        "12px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{"
        "text-align:left}h1{font-size:20px}</style></head><body><h1>asyncd</h1>";
    add(&out,
        "<p>up <span id=\"uptime\">%.0f</span> s, <span id=\"connections\">%llu</span> "
        "connections open, <span id=\"reloads\">%llu</span> reloads</p><table>",
        uptime_s(s), (unsigned long long)get(s.conn.connections),
        (unsigned long long)get(s.reloads));
    int i = 0;
    for (const ConnField &f : kConnFields) {
        add(&out, "<tr><td>%s</td><td id=\"conn%d\" data-metric=\"%s%s%s%s\">%llu</td></tr>",
            f.title, i++, f.metric, f.label ? "{reason=&quot;" : "", f.label ? f.label : "",
            f.label ? "&quot;}" : "", (unsigned long long)get(s.conn.*f.field));
    }
    out +=
        "</table><table><tr><th>worker</th><th>pid</th><th>packets</th><th>bytes out</th>"
        "<th>restarts</th><th>ring depth</th><th>ring peak</th></tr>";
    for (uint32_t w = 0; w < s.nworkers && w < uint32_t(kMaxWorkers); w++) {
        const WorkerStats &ws = s.workers[w];
        if (!slot_used(ws)) continue;
        add(&out,
            "<tr><td>%u</td><td>%llu</td><td id=\"w%u-packets\">%llu</td><td>%llu</td>"
            "<td>%llu</td><td>%llu</td><td>%llu</td></tr>",
            w, (unsigned long long)get(ws.pid), w, (unsigned long long)get(ws.packets),
            (unsigned long long)get(ws.bytes_out), (unsigned long long)get(ws.restarts),
            (unsigned long long)get(ws.ring_depth), (unsigned long long)get(ws.ring_high_water));
    }
    out += "</table>";
    bool header = false;
    for (const NodeStats &n : s.nodes) {
        if (!node_used(n)) continue;
        if (!header) {
            out +=
                "<table><tr><th>node</th><th>state</th><th>rtt us</th><th>queued</th>"
                "<th>pending out</th><th>pending in</th><th>calls out</th><th>calls in</th>"
                "<th>timeouts</th><th>down</th><th>link lost</th></tr>";
            header = true;
        }
        add(&out,
            "<tr><td>%s</td><td>%s</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>"
            "<td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td></tr>",
            n.name, node_state(n), (unsigned long long)get(n.rtt_us),
            (unsigned long long)get(n.queue_frames), (unsigned long long)get(n.pending_out),
            (unsigned long long)get(n.pending_in), (unsigned long long)get(n.calls_out),
            (unsigned long long)get(n.calls_in), (unsigned long long)get(n.completions[2]),
            (unsigned long long)get(n.completions[4]), (unsigned long long)get(n.completions[5]));
    }
    if (header) out += "</table>";
    out += "</body></html>\n";
    return out;
}

}  // namespace asyncd
