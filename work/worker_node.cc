// The worker's side of the cluster: the calls it makes (node_call, node_send: its table of
// calls, their deadlines and callbacks) and the ones it is given (proc_pkg_node, answered
// with node_reply). Sockets, links and routing are conn's; this only writes records to conn
// and reads conn's.
#include <string.h>
#include <unistd.h>

#include "cluster/node_records.h"
#include "core/clock.h"
#include "plugin_api/asyncd_plugin.h"
#include "work/in_callback.h"
#include "work/worker.h"

namespace asyncd::work {

// The status a call or send ends with before it leaves this process, or 0 when it may go.
int Worker::node_check(const char *node, const char *service, size_t len) const {
    size_t max_message = cfg_.cluster ? cfg_.cluster->max_message : cfg_.max_pkg_len;
    // Which names exist is conn's to say: a reload can add or remove nodes, and the workers
    // keep the table they started with.
    if (!cfg_.cluster && strcmp(node, ".") != 0) return ASYNCD_NODE_UNKNOWN;
    if (strlen(service) > 255) return ASYNCD_NODE_NO_SERVICE;
    if (len > max_message) return ASYNCD_NODE_TOO_LARGE;
    if (stopping_) return ASYNCD_NODE_STOPPING;
    return 0;
}

bool Worker::push_node(FromWorker type, uint64_t id, uint64_t seq, const std::string &head,
                       const void *msg, size_t len) {
    // A reply has no head: its bytes go into the ring as they are.
    const char *data = static_cast<const char *>(msg);
    size_t size = len;
    if (!head.empty()) {
        scratch_.assign(head);
        if (len) scratch_.append(data, len);
        data = scratch_.data();
        size = scratch_.size();
    }
    shmq::RecordMeta meta;
    meta.type = type_of(type);
    meta.conn_id = id;
    meta.seq = seq;
    size_t done = 0;
    for (;;) {
        shmq::PushStatus s = out_.try_push_stream(meta, data, size, &done);
        if (s == shmq::PushStatus::kOk) return true;
        if (s != shmq::PushStatus::kFull) {
            log_->write(LogLevel::kAlert, "worker %d: node record push failed (%d)", index_,
                        int(s));
            return false;
        }
        wait_room(size - done);
        if (orphaned_) _exit(0);
    }
}

uint64_t Worker::node_call(const char *node, const char *service, int route, uint64_t key,
                           const void *msg, size_t len, uint32_t timeout_ms, cluster::CallFn fn,
                           void *arg) {
    if (!fn || !node || !service) return 0;
    if (len && !msg) len = 0;
    if (int st = node_check(node, service, len)) return calls_.add_failed(st, fn, arg);
    uint64_t timeout = timeout_ms ? timeout_ms : call_timeout_ms_;
    uint64_t deadline = monotonic_ms() + timeout;
    uint64_t id = calls_.add(node, deadline, fn, arg);
    if (!id) return calls_.add_failed(ASYNCD_NODE_QUEUE_FULL, fn, arg);
    if (!push_node(FromWorker::kNodeCall, id, deadline,
                   cluster::encode_call_head(route, key, node, service), msg, len)) {
        calls_.fail_later(id, ASYNCD_NODE_QUEUE_FULL);  // never from inside node_call
    }
    return id;
}

// conn keeps, per node, the status new calls to it end with at once (DOWN while its
// circuit is open, ...): a send learns it here rather than being dropped later, unseen.
int Worker::node_refusal(const char *node) {
    if (!cfg_.cluster || strcmp(node, ".") == 0 || node == cfg_.node_name) return 0;
    const NodeStats *nodes = ch_->stats->nodes;
    for (size_t i = 0; i < size_t(kMaxNodes); i++) {
        const NodeStats &ns = nodes[(node_slot_hint_ + i) % size_t(kMaxNodes)];
        if (!get(ns.used) || strncmp(ns.name, node, sizeof ns.name) != 0) continue;
        node_slot_hint_ = (node_slot_hint_ + i) % size_t(kMaxNodes);
        return int(get(ns.refusing));
    }
    return strcmp(node, cfg_.node_name.c_str()) == 0 ? 0 : ASYNCD_NODE_UNKNOWN;
}

int Worker::node_send(const char *node, const char *service, int route, uint64_t key,
                      const void *msg, size_t len) {
    if (!node || !service) return ASYNCD_NODE_UNKNOWN;
    if (len && !msg) len = 0;
    if (int st = node_check(node, service, len)) return st;
    if (int st = node_refusal(node)) return st;
    if (!push_node(FromWorker::kNodeCall, 0, 0,
                   cluster::encode_call_head(route, key, node, service), msg, len)) {
        return ASYNCD_NODE_QUEUE_FULL;
    }
    return 0;
}

int Worker::node_reply(uint64_t req, int status, const void *buf, size_t len) {
    if (req == 0 || reqs_.erase(req) == 0) return -1;
    if (len && !buf) len = 0;
    size_t max_message = cfg_.cluster ? cfg_.cluster->max_message : cfg_.max_reply_len;
    uint64_t seq = status == 0 ? cluster::result_seq(ASYNCD_NODE_OK, 0)
                               : cluster::result_seq(ASYNCD_NODE_REMOTE, status);
    if (len > max_message) {
        seq = cluster::result_seq(ASYNCD_NODE_TOO_LARGE, 0);
        len = 0;
    }
    return push_node(FromWorker::kNodeReply, req, seq, std::string(), buf, len) ? 0 : -1;
}

bool Worker::holding_requests() const {
    uint64_t now = monotonic_ms();
    // Not past the stop's own deadline: the supervisor kills what is left then.
    uint64_t stop_at = ch_->state->stop_deadline_ms.load(std::memory_order_acquire);
    if (stop_at && now + 500 >= stop_at) return false;
    for (const auto &r : reqs_) {
        if (r.second > now) return true;
    }
    return false;
}

bool Worker::awaiting_calls() const {
    if (calls_.pending() == 0) return false;
    uint64_t stop_at = ch_->state->stop_deadline_ms.load(std::memory_order_acquire);
    return !stop_at || monotonic_ms() + 500 < stop_at;
}

// A node record from conn. A request this worker's predecessor died on comes again: it is
// answered WORKER_DIED, never run twice.
void Worker::dispatch_node(const shmq::Message &m, uint64_t attempts) {
    const PluginExports &fns = plugin_.exports();
    switch (ToWorker(m.type)) {
        case ToWorker::kNodeRequest: {
            uint64_t req = m.conn_id;
            cluster::RequestHead h;
            if (!cluster::decode_request(m.data, m.len, &h)) {
                log_->write(LogLevel::kAlert, "worker %d: malformed node request", index_);
                if (req) {
                    push_node(FromWorker::kNodeReply, req,
                              cluster::result_seq(ASYNCD_NODE_NO_SERVICE, 0), {}, nullptr, 0);
                }
                return;
            }
            int refuse = 0;
            if (attempts > 1) refuse = ASYNCD_NODE_WORKER_DIED;
            if (!fns.proc_pkg_node) refuse = ASYNCD_NODE_NO_SERVICE;
            uint64_t deadline = m.seq;
            if (!refuse && deadline && monotonic_ms() >= deadline) refuse = ASYNCD_NODE_TIMEOUT;
            if (refuse) {
                if (refuse == ASYNCD_NODE_WORKER_DIED) bump(stats_->node_died);
                if (req) {
                    push_node(FromWorker::kNodeReply, req, cluster::result_seq(refuse, 0), {},
                              nullptr, 0);
                }
                return;
            }
            bump(stats_->node_requests);
            if (req) reqs_.emplace(req, deadline);
            std::string from(h.from), service(h.service);
            InCallback in(state_, Callback::kNode, timing_);
            fns.proc_pkg_node(req, from.c_str(), service.c_str(), h.msg.data(), h.msg.size(),
                              deadline);
            return;
        }
        case ToWorker::kNodeResult: {
            if (!calls_.complete(m.conn_id, cluster::result_status(m.seq),
                                 cluster::result_code(m.seq), m.data, m.len)) {
                bump(stats_->node_late);
            }
            return;
        }
        case ToWorker::kNodeLink: {
            std::string node(reinterpret_cast<const char *>(m.data), m.len);
            InCallback in(state_, Callback::kNodeLink, timing_);
            if (m.seq == 0) {
                if (fns.link_up_node) fns.link_up_node(node.c_str());
            } else if (fns.link_down_node) {
                fns.link_down_node(node.c_str(), int(m.seq));
            }
            return;
        }
        default:
            log_->write(LogLevel::kAlert, "worker %d: unknown record type %u", index_,
                        unsigned(m.type));
    }
}

// Deadlines passed and the outcomes decided here (UNKNOWN, TOO_LARGE, ...): each reaches its
// callback once, from the loop.
void Worker::run_calls() {
    // Requests the plugin never answered: their callers have long been told TIMEOUT.
    uint64_t now = monotonic_ms();
    if (!reqs_.empty() && now - reqs_pruned_ms_ >= 10000) {
        reqs_pruned_ms_ = now;
        for (auto it = reqs_.begin(); it != reqs_.end();) {
            it = it->second && it->second + 60000 < now ? reqs_.erase(it) : std::next(it);
        }
    }
    uint64_t at;
    if (!calls_.next_deadline_ms(&at)) return;
    if (at > now) return;
    calls_.run(now, ASYNCD_NODE_TIMEOUT);
}

// The call table's way to run a node_call's callback: each on its own for the hang detector
// and the timing.
void Worker::invoke_call_done(void *ctx, cluster::CallFn fn, void *arg, uint64_t call, int status,
                              int code, const void *reply, size_t len) {
    Worker *w = static_cast<Worker *>(ctx);
    InCallback in(w->state_, Callback::kCallDone, w->timing_);
    fn(arg, call, status, code, reply, len);
}

}  // namespace asyncd::work
