#include "conn/nodes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_set>

#include "cluster/frames.h"
#include "cluster/handshake.h"
#include "cluster/node_records.h"
#include "core/clock.h"
#include "core/records.h"
#include "plugin_api/asyncd_plugin.h"

namespace asyncd::conn {

using cluster::FrameHeader;
using cluster::FrameType;
using cluster::Link;
using cluster::LinkState;

namespace {

// A call's session outlives its deadline by this much at conn: the caller's worker times it
// out itself; after that an answer can only be dropped.
constexpr uint64_t kSessionGraceMs = 1000;

// A link with this much queued writes at once rather than at the end of the turn.
constexpr size_t kWriteNowBytes = 256 << 10;

uint16_t wire_route(int route) {
    if (route == ASYNCD_ROUTE_ANY) return cluster::kRouteAny;
    if (route == ASYNCD_ROUTE_KEY) return cluster::kRouteKey;
    return route < 0 || route >= int(cluster::kRouteKey) ? cluster::kRouteAny : uint16_t(route);
}

int plugin_route(uint16_t route) {
    if (route == cluster::kRouteAny) return ASYNCD_ROUTE_ANY;
    if (route == cluster::kRouteKey) return ASYNCD_ROUTE_KEY;
    return route;
}

}  // namespace

// ---- NodeOut ---------------------------------------------------------------------------

void NodeOut::push(Rec r) {
    bytes_ += r.bytes.size();
    q_.push_back(std::move(r));
    if (q_.size() > 1) return;  // the ones before it wait for room already
    if (port_->must_wait(this)) return;
    while (!q_.empty() && push_one()) {
    }
}

void NodeOut::push(uint16_t type, uint64_t id, uint64_t seq, std::string_view bytes) {
    if (q_.empty() && !port_->must_wait(this) && push_now(type, id, seq, bytes)) return;
    push({type, id, seq, std::string(bytes)});
}

bool NodeOut::push_now(uint16_t type, uint64_t id, uint64_t seq, std::string_view bytes) {
    shmq::RecordMeta meta;
    meta.type = type;
    meta.conn_id = id;
    meta.seq = seq;
    // Whole or not at all: a record that does not fit now waits in the queue, streamed.
    shmq::PushStatus s = port_->to().try_push(meta, bytes.data(), bytes.size());
    if (s != shmq::PushStatus::kOk) return false;
    port_->mark_pushed();
    if (id && type == type_of(ToWorker::kNodeRequest)) pushed_(id, port_->to().written());
    return true;
}

bool NodeOut::on_room(Port &) {
    while (!q_.empty()) {
        if (!push_one()) return false;
    }
    return true;
}

bool NodeOut::push_one() {
    Rec &r = q_.front();
    shmq::RecordMeta meta;
    meta.type = r.type;
    meta.conn_id = r.id;
    meta.seq = r.seq;
    shmq::PushStatus s =
        port_->to().try_push_stream(meta, r.bytes.data(), r.bytes.size(), &port_->stream_done());
    if (s == shmq::PushStatus::kFull) {
        port_->wait_for_room(this, r.bytes.size() - port_->stream_done());
        return false;
    }
    port_->stream_done() = 0;
    if (s == shmq::PushStatus::kOk) {
        port_->mark_pushed();
        if (r.id && r.type == type_of(ToWorker::kNodeRequest)) pushed_(r.id, port_->to().written());
    }
    bytes_ -= r.bytes.size();
    q_.pop_front();
    return true;
}

// ---- Nodes -----------------------------------------------------------------------------

struct Nodes::Slot {
    std::unique_ptr<Link> link;
    FnHandler handler;
    int watched = -1;
    uint32_t events = 0;
    uint64_t id = 0;
    Node *node = nullptr;  // null until an accepted link's HELLO names it
    bool retired = false;
    bool dirty = false;
    size_t pending = 0;     // calls written on this link and not answered on it
    size_t pending_in = 0;  // calls that came on it and are not answered yet
    std::string peer;       // the address at the other end, for the log
    // Messages being written in parts, per stream, and the streams that have one, in turn.
    std::unordered_map<uint16_t, std::deque<std::unique_ptr<cluster::MessageWriter>>> streams;
    std::deque<uint16_t> turns;
    size_t parts_bytes = 0;  // payload bytes not yet cut into frames
    bool out_full = false;   // its output is past queue_bytes: new calls on it end BUSY
    bool told_up = false;    // the workers heard link_up_node for it
    explicit Slot(std::function<void(uint32_t)> fn) : handler(std::move(fn)) {}
};

Nodes::Nodes(const Config *cfg, Channels *ch, Loop *loop, std::vector<std::unique_ptr<Port>> *ports,
             int listen_fd, ConnStats *st, Log *log)
    : cfg_(cfg),
      cl_(cfg->cluster ? cfg->cluster.get() : &no_cluster_),
      loop_(loop),
      ports_(ports),
      ch_(ch),
      st_(st),
      listen_fd_(listen_fd),
      log_(log) {}

Nodes::~Nodes() {
    for (auto &s : slots_)
        s->link->close_quietly();
    if (listen_handler_) loop_->remove(listen_fd_);
}

bool Nodes::open(std::string *err) {
    self_.name = cfg_->node_name;
    self_.workers = uint16_t(ch_->active_workers());
    random_bytes(&self_.incarnation, sizeof self_.incarnation);
    for (auto &p : *ports_) {
        outs_.push_back(std::make_unique<NodeOut>(
            p.get(), [this](uint64_t req, uint64_t end) { sessions_.note_in_ring(req, end); }));
    }
    for (NodeStats &ns : ch_->stats->nodes)
        set(ns.used, 0);  // a restarted conn fills them again
    for (const cluster::NodeEntry &e : cl_->nodes) {
        if (e.name != self_.name) add_node(&e);
    }
    cluster_gen_ = ch_->state->cluster_generation.load(std::memory_order_acquire);
    if (listen_fd_ >= 0) {
        listen_handler_ = std::make_unique<FnHandler>([this](uint32_t) { on_accept(); });
        if (!loop_->add(listen_fd_, EPOLLIN, listen_handler_.get())) {
            *err = std::string("epoll_ctl(ADD) of the node listen socket: ") + strerror(errno);
            return false;
        }
    }
    if (cfg_->cluster && cl_->secret.empty()) {
        log_->write(LogLevel::kWarn,
                    "cluster %s has no secret_file: any process that can reach this node's "
                    "cluster port may link as a node",
                    cl_->path.c_str());
    }
    for (auto &e : nodes_) {
        Node *n = e.second.get();
        if (!n->entry->preconnect || n->entry->down) continue;
        Slot *s = new_slot(n);
        n->slot = s;
        s->link->connect();
        watch(s);
    }
    file_ = applied_file_ = cfg_->cluster;
    if (!cfg_->discovery.empty() && file_) {
        const cluster::NodeEntry *me = cl_->find(self_.name);
        std::string addr = me->host.find(':') != std::string::npos
                               ? "[" + me->host + "]:" + std::to_string(me->port)
                               : me->host + ":" + std::to_string(me->port);
        char data[256];
        snprintf(data, sizeof data, "addr=%s workers=%u incarnation=%016llx proto=1", addr.c_str(),
                 unsigned(self_.workers), (unsigned long long)self_.incarnation);
        discovery_ = std::make_unique<Discovery>(
            cfg_, loop_, log_, [this](const DiscoveredView &v) { on_discovered(v); });
        if (!discovery_->open(addr, data, err)) return false;
    }
    arm_timer();
    return true;
}

// A node's counters in shared memory (the workers' view of it: node_send's answer comes
// from there); past kMaxNodes it counts into spare_ until a slot is freed.
bool Nodes::claim_stats(Node *n) {
    for (NodeStats &ns : ch_->stats->nodes) {
        if (get(ns.used)) continue;
        memset(ns.name, 0, sizeof ns.name);
        snprintf(ns.name, sizeof ns.name, "%s", n->entry->name.c_str());
        for (Counter *c : {&ns.state, &ns.since_ms, &ns.rtt_us, &ns.queue_frames, &ns.queue_bytes,
                           &ns.pending_out, &ns.pending_in})
            set(*c, 0);
        set(ns.refusing, 0);
        set(ns.used, 1);
        n->ns = &ns;
        return true;
    }
    return false;
}

Nodes::Node *Nodes::add_node(const cluster::NodeEntry *e) {
    auto n = std::make_unique<Node>(cl_->queue_max, cl_->queue_bytes);
    n->entry = e;
    n->ns = &spare_;
    if (!claim_stats(n.get()) && !spare_warned_) {
        spare_warned_ = true;
        log_->write(LogLevel::kWarn,
                    "cluster: more than %zu nodes: node %s (and any past it) is not in the "
                    "status page, /metrics or the workers' table, so node_send to it ends "
                    "UNKNOWN until a node leaves",
                    std::size(ch_->stats->nodes), e->name.c_str());
    }
    Node *raw = n.get();
    nodes_[e->name] = std::move(n);
    return raw;
}

void Nodes::drain_link(Node *n) {
    Slot *s = n->slot;
    n->slot = nullptr;
    if (!s) return;
    if (s->link->state() == LinkState::kUp) {
        s->link->set_pending(s->pending);
        s->link->goaway();
        watch(s);
    } else if (s->link->state() != LinkState::kDraining) {
        retire(s);
    }
}

void Nodes::reload_cluster() {
    uint32_t gen = 0;
    std::string blob;
    for (int tries = 0; tries < 3; tries++) {
        gen = ch_->state->cluster_generation.load(std::memory_order_acquire);
        if (gen == cluster_gen_) return;
        size_t len = std::min<size_t>(ch_->state->cluster_len.load(std::memory_order_relaxed),
                                      sizeof ch_->state->cluster_table);
        blob.assign(ch_->state->cluster_table, len);
        if (ch_->state->cluster_generation.load(std::memory_order_acquire) == gen) break;
    }
    auto next = std::make_shared<cluster::ClusterConfig>();
    std::string err;
    if (!cluster::decode_cluster(blob, self_.name, next.get(), &err)) {
        log_->write(LogLevel::kError, "cluster reload: %s; keeping the running table", err.c_str());
        return;
    }
    cluster_gen_ = gen;
    file_ = next;
    apply_table(merged(*next), "cluster reload");
}

std::shared_ptr<cluster::ClusterConfig> Nodes::merged(const cluster::ClusterConfig &file) {
    auto m = std::make_shared<cluster::ClusterConfig>(file);
    const cluster::NodeEntry *me = file.find(self_.name);
    for (const auto &e : discovered_) {
        if (e.first == self_.name || !cluster::valid_node_name(e.first)) continue;
        if (me && me->host == e.second.host && me->port == e.second.port) {
            if (differ_warned_[e.first] != "self") {
                differ_warned_[e.first] = "self";
                log_->write(LogLevel::kWarn,
                            "discovery: node %s registered this node's own address %s:%u: "
                            "ignored",
                            e.first.c_str(), me->host.c_str(), unsigned(me->port));
            }
            continue;
        }
        const cluster::NodeEntry *f = file.find(e.first);
        if (f) {
            std::string addr = e.second.host + ":" + std::to_string(e.second.port);
            if ((f->host != e.second.host || f->port != e.second.port) &&
                differ_warned_[e.first] != addr) {
                differ_warned_[e.first] = addr;
                log_->write(LogLevel::kWarn,
                            "discovery: node %s registered %s, the cluster file says %s:%u; the "
                            "file's address is used",
                            e.first.c_str(), addr.c_str(), f->host.c_str(), unsigned(f->port));
            }
            continue;
        }
        cluster::NodeEntry n;
        n.name = e.first;
        n.host = e.second.host;
        n.port = e.second.port;
        m->nodes.push_back(std::move(n));
    }
    return m;
}

void Nodes::end_linger(std::map<std::string, Lingering>::iterator it) {
    Node *n = it->second.node.get();
    drain_link(n);
    set(n->ns->used, 0);
    n->ns = &spare_;  // the slot may go to another node now
    prune_due_ = true;
    gone_.push_back(std::move(it->second.node));
    lingering_.erase(it);
}

void Nodes::on_discovered(const DiscoveredView &v) {
    discovered_ = v;
    if (file_) apply_table(merged(*file_), "discovery");
}

void Nodes::apply_table(std::shared_ptr<cluster::ClusterConfig> next, const char *why) {
    cluster::ClusterDiff d = cluster::diff_clusters(*cl_, *next);
    // Which nodes discovery alone brought: those the file in effect until now did not name.
    std::shared_ptr<const cluster::ClusterConfig> before = applied_file_;
    applied_file_ = file_;
    if (d.empty()) return;
    tables_.push_back(next);
    cl_ = next.get();
    for (const std::string &name : d.removed) {
        Node *n = find_node(name);
        if (!n) continue;
        drop_queue(n, ASYNCD_NODE_UNKNOWN);
        auto it = nodes_.find(name);
        if (discovery_ && !stopping_ && before && !before->find(name)) {
            // Gone from discovery only: no new calls, but its link stays as it is for two
            // heartbeat timeouts, and comes back whole if the node does (a session flap).
            Lingering &l = lingering_[name];
            l.node = std::move(it->second);
            l.until_ms = now_ms() + 2 * cl_->hb_timeout_ms;
            nodes_.erase(it);
            continue;
        }
        drain_link(n);
        set(n->ns->used, 0);
        n->ns = &spare_;  // the slot may go to another node now
        gone_.push_back(std::move(it->second));
        nodes_.erase(it);
    }
    for (auto &e : nodes_)  // the rest point at the new table
        e.second->entry = cl_->find(e.first);
    for (const std::string &name : d.added) {
        if (name == self_.name) continue;
        const cluster::NodeEntry *e = cl_->find(name);
        auto l = lingering_.find(name);
        if (l != lingering_.end()) {
            Node *n = l->second.node.get();
            if (n->entry->host == e->host && n->entry->port == e->port) {
                n->entry = e;
                nodes_[name] = std::move(l->second.node);
                lingering_.erase(l);
                log_->write(LogLevel::kInfo,
                            "%s: node %s is back within its grace: its link is kept", why,
                            name.c_str());
                continue;
            }
            end_linger(l);  // back at another address: the old link drains
        }
        add_node(e);
    }
    for (const std::string &name : d.moved) {
        Node *n = find_node(name);
        if (!n) continue;
        drain_link(n);  // what is queued goes to the new address
        n->circuit_open = false;
        if (n->queue.frames() && !stopping_) {
            n->slot = new_slot(n);
            n->slot->link->connect();
            watch(n->slot);
        }
    }
    for (const std::string &name : d.marked_down) {
        Node *n = find_node(name);
        if (!n) continue;
        drain_link(n);
        drop_queue(n, ASYNCD_NODE_DOWN);
    }
    for (const std::string &name : d.lifted) {
        Node *n = find_node(name);
        if (n) n->circuit_open = false;
    }
    for (auto &e : nodes_) {
        Node *n = e.second.get();
        if (n->entry->preconnect && !n->entry->down && !n->slot && !stopping_) {
            n->slot = new_slot(n);
            n->slot->link->connect();
            watch(n->slot);
        }
    }
    for (auto &e : nodes_) {
        if (e.second->ns == &spare_) claim_stats(e.second.get());
        refresh_refusal(e.second.get());
    }
    prune_due_ = true;
    log_->write(LogLevel::kInfo, "%s: %s", why, d.describe().c_str());
    publish_due_ = true;
    arm_timer();
}

// The loop's time for this turn (read once after its wait), or the clock before the
// first turn.
uint64_t Nodes::now_ms() {
    uint64_t t = loop_->now_ms();
    return t ? t : monotonic_ms();
}

uint64_t Nodes::now_us() {
    return monotonic_ns() / 1000;
}

void Nodes::random_bytes(void *p, size_t n) {
    auto *b = static_cast<uint8_t *>(p);
    while (n) {
        ssize_t got = getrandom(b, n, 0);
        if (got <= 0) {
            // Never expected; the nonces must still differ.
            uint64_t x = monotonic_ns() * 0x9e3779b97f4a7c15ULL;
            size_t k = std::min(n, sizeof x);
            memcpy(b, &x, k);
            got = ssize_t(k);
        }
        b += got;
        n -= size_t(got);
    }
}

Nodes::Slot *Nodes::new_slot(Node *node) {
    auto s = std::make_unique<Slot>(nullptr);
    Slot *raw = s.get();
    s->handler = FnHandler([this, raw](uint32_t ev) { on_slot_events(raw, ev); });
    s->link = std::make_unique<Link>(this, cl_, &self_, node ? node->entry->name : std::string());
    s->id = next_link_id_++;
    s->node = node;
    if (reading_paused_) s->link->pause_reading(true);
    if (node) s->peer = node->entry->host + ":" + std::to_string(node->entry->port);
    slots_.push_back(std::move(s));
    return raw;
}

// Keeps the link's fd watched with the events it wants. A link changes its fd only by
// closing it, and a closed fd leaves epoll by itself, so an old fd is never removed here:
// its number may already belong to another socket.
void Nodes::watch(Slot *s) {
    if (s->retired) return;
    int fd = s->link->fd();
    if (fd < 0) {
        s->watched = -1;
        return;
    }
    // A peer that does not read what we answer gets no more read from it either (its calls
    // would only pile up answers here): its output is bounded by queue_bytes. Its silence
    // then still counts: one that reads nothing for hb_timeout is dead.
    bool full = s->link->queued_bytes() + s->parts_bytes > cl_->queue_bytes;
    s->out_full = full;
    // 5: a link on its way up is read during a backlog pause: its handshake is small.
    bool read = !reading_paused_ || s->link->state() != LinkState::kUp;
    uint32_t ev =
        (read ? uint32_t(EPOLLIN) : 0u) | (s->link->wants_write() ? uint32_t(EPOLLOUT) : 0u);
    if (fd == s->watched && ev == s->events) return;
    if (fd == s->watched && loop_->modify(fd, ev, &s->handler)) {
        s->events = ev;
        return;
    }
    if (!loop_->add(fd, ev, &s->handler) && !loop_->modify(fd, ev, &s->handler)) {
        log_->write(LogLevel::kCrit, "epoll_ctl for the link to %s: %s",
                    s->link->node().empty() ? "a node" : s->link->node().c_str(), strerror(errno));
        return;
    }
    s->watched = fd;
    s->events = ev;
}

void Nodes::on_slot_events(Slot *s, uint32_t events) {
    if (s->retired) return;
    publish_due_ = true;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) s->link->on_readable();
    if (!s->retired && (events & EPOLLOUT)) {
        s->link->on_writable();
        if (!s->turns.empty()) pump(s);  // flushed at the end of the turn
    }
    watch(s);
}

void Nodes::on_accept() {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) {
                log_->write_limited(&lost_log_, now_ms(), LogLevel::kWarn,
                                    "accept on the cluster port: %s", strerror(errno));
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    // Level-triggered: it would be ready again at once. Back in 100 ms.
                    loop_->remove(listen_fd_);
                    loop_->add_timer(100, [this] {
                        if (!loop_->add(listen_fd_, EPOLLIN, listen_handler_.get())) {
                            log_->write(LogLevel::kCrit, "epoll_ctl of the cluster port: %s",
                                        strerror(errno));
                        }
                    });
                }
            }
            return;
        }
        if (stopping_) {
            close(fd);
            continue;
        }
        Slot *s = new_slot(nullptr);
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char host[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;
        if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
            if (ss.ss_family == AF_INET) {
                auto *a = reinterpret_cast<sockaddr_in *>(&ss);
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
                port = ntohs(a->sin_port);
            } else if (ss.ss_family == AF_INET6) {
                auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
                port = ntohs(a->sin6_port);
            }
        }
        s->peer = std::string(host) + ":" + std::to_string(port);
        s->link->accept(fd);
        watch(s);
    }
}

void Nodes::retire(Slot *s) {
    if (s->retired) return;
    s->retired = true;
    s->link->close_quietly();
    s->watched = -1;
    if (s->node && s->node->slot == s) s->node->slot = nullptr;
    if (!gone_.empty()) prune_due_ = true;  // a removed node's last link may be this one
    for (size_t i = 0; i < slots_.size(); i++) {
        if (slots_[i].get() == s) {
            graveyard_.push_back(std::move(slots_[i]));
            slots_.erase(slots_.begin() + long(i));
            break;
        }
    }
}

Nodes::Slot *Nodes::slot_of(const Link &link) {
    for (auto &s : slots_) {
        if (s->link.get() == &link) return s.get();
    }
    for (auto &s : graveyard_) {
        if (s->link.get() == &link) return s.get();
    }
    return nullptr;
}

Nodes::Node *Nodes::node_of(const Link &link) {
    Slot *s = slot_of(link);
    return s ? s->node : nullptr;
}

Nodes::Node *Nodes::find_node(const std::string &name) {
    auto it = nodes_.find(name);
    return it == nodes_.end() ? nullptr : it->second.get();
}

// Results and requests for a worker that is behind wait in conn; past queue_bytes for
// any worker, conn stops reading the links (the peers' own bounds then refuse new calls)
// until it has caught up to half of that.
void Nodes::check_backlog() {
    size_t most = 0;
    for (auto &o : outs_)
        most = std::max(most, o->waiting_bytes());
    bool pause = reading_paused_ ? most > cl_->queue_bytes / 2 : most > cl_->queue_bytes;
    if (pause == reading_paused_) return;
    reading_paused_ = pause;
    if (pause) {
        log_->write(LogLevel::kInfo,
                    "cluster: a worker is %zu bytes behind: not reading the "
                    "links until it catches up",
                    most);
    }
    for (auto &s : slots_) {
        s->link->pause_reading(pause);
        s->events = ~0u;  // re-watch with the new events
        watch(s.get());
    }
}

void Nodes::end_turn() {
    check_backlog();
    flush();
    graveyard_.clear();
    if (prune_due_) prune();
    if (publish_due_ && now_ms() - published_ms_ >= 100) publish();
    arm_timer();
}

// What a table change left behind: removed nodes whose links are all gone, and tables that
// no link, node or the running table points into. (Discovery changes the table as often as
// the cluster's membership does; without this they would pile up.)
void Nodes::prune() {
    prune_due_ = false;
    std::unordered_set<const Node *> linked;
    std::unordered_set<const cluster::ClusterConfig *> keep = {cl_};
    for (auto &s : slots_) {
        linked.insert(s->node);
        keep.insert(s->link->config());
    }
    gone_.erase(
        std::remove_if(gone_.begin(), gone_.end(),
                       [&](const std::unique_ptr<Node> &n) { return !linked.count(n.get()); }),
        gone_.end());
    std::vector<const cluster::NodeEntry *> entries;
    for (auto &e : nodes_)
        entries.push_back(e.second->entry);
    for (auto &e : lingering_)
        entries.push_back(e.second.node->entry);
    for (auto &n : gone_)
        entries.push_back(n->entry);
    auto holds = [&](const cluster::ClusterConfig *t) {
        if (keep.count(t)) return true;
        for (const cluster::NodeEntry *e : entries) {
            if (!t->nodes.empty() && e >= t->nodes.data() && e < t->nodes.data() + t->nodes.size())
                return true;
        }
        return false;
    };
    tables_.erase(std::remove_if(tables_.begin(), tables_.end(),
                                 [&](const std::shared_ptr<cluster::ClusterConfig> &t) {
                                     return !holds(t.get());
                                 }),
                  tables_.end());
}

void Nodes::publish() {
    published_ms_ = now_ms();
    publish_due_ = false;
    for (auto &e : nodes_) {
        Node *n = e.second.get();
        NodeStats &ns = *n->ns;
        const Link *l = n->slot ? n->slot->link.get() : nullptr;
        LinkState st = n->entry->down ? LinkState::kDown : l ? l->state() : LinkState::kIdle;
        if (get(ns.state) != uint64_t(st) || !get(ns.since_ms)) {
            set(ns.state, uint64_t(st));
            set(ns.since_ms, l ? l->since_ms() : published_ms_);
        }
        set(ns.rtt_us, l && l->rtt_us() > 0 ? uint64_t(l->rtt_us()) : 0);
        set(ns.queue_frames, n->queue.frames());
        set(ns.queue_bytes, n->queue.bytes());
        set(ns.pending_out, n->pending_out);
        set(ns.pending_in, n->pending_in);
        refresh_refusal(n);
    }
}

void Nodes::refresh_refusal(Node *n) {
    int st = 0;
    LinkState ls = n->slot ? n->slot->link->state() : LinkState::kIdle;
    if (n->entry->down) {
        st = ASYNCD_NODE_DOWN;
    } else if (stopping_) {
        st = ASYNCD_NODE_STOPPING;
    } else if (ls != LinkState::kUp && (n->circuit_open || ls == LinkState::kBackoff)) {
        st = ASYNCD_NODE_DOWN;
    }
    set(n->ns->refusing, uint64_t(st));
}

void Nodes::complete(Node *n, int w, uint64_t call, int status, int code, std::string_view reply) {
    if (n) bump(n->ns->completions[status >= 0 && status < kNodeStatuses ? status : 1]);
    result(w, call, status, code, reply);
}

void Nodes::closed_out(const cluster::Sessions::Out &o) {
    Node *n = find_node(o.node);
    if (n && n->pending_out) n->pending_out--;
    for (auto &s : slots_) {
        if (s->id == o.link && s->pending) s->pending--;
    }
}

void Nodes::stop() {
    if (stopping_) return;
    stopping_ = true;
    std::vector<Slot *> all;
    for (auto &s : slots_)
        all.push_back(s.get());
    // What is in flight may take until the stop's own deadline (shutdown_timeout).
    uint64_t now = now_ms();
    uint64_t stop_at = ch_->state->stop_deadline_ms.load(std::memory_order_acquire);
    uint64_t grace = stop_at > now + 500 ? stop_at - now - 500 : 0;
    for (Slot *s : all) {
        if (s->retired) continue;
        s->link->set_pending(s->pending + s->pending_in);
        s->link->goaway(grace);
        watch(s);
    }
}

bool Nodes::written() const {
    for (const auto &s : slots_) {
        if (s->link->queued_bytes() && s->link->fd() >= 0) return false;
    }
    return true;
}

bool Nodes::idle() const {
    return sessions_.out_pending() == 0 && sessions_.in_pending() == 0;
}

// ---- from the workers ------------------------------------------------------------------

void Nodes::from_worker(int w, const shmq::Message &m) {
    publish_due_ = true;
    if (FromWorker(m.type) == FromWorker::kNodeReply) {
        reply_from_worker(w, m);
        return;
    }
    if (FromWorker(m.type) == FromWorker::kNodeReset) {
        worker_started(w, m.seq);
        return;
    }
    uint64_t call = m.conn_id, deadline = m.seq;
    cluster::CallHead h;
    if (!cluster::decode_call(m.data, m.len, &h)) {
        log_->write(LogLevel::kAlert, "malformed node call from worker %d", w);
        if (call) result(w, call, ASYNCD_NODE_UNKNOWN, 0, {});
        return;
    }
    bump(st_->node_calls_out);
    if (stopping_) {
        if (call) result(w, call, ASYNCD_NODE_STOPPING, 0, {});
        return;
    }
    if (h.node == "." || h.node == self_.name) {
        local_call(w, call, deadline, cluster::Sessions::In(), h.route, h.key, h.service, h.msg);
    } else {
        remote_call(w, call, deadline, h.route, h.key, h.node, h.service, h.msg);
    }
}

int Nodes::pick_worker(int route, uint64_t key) {
    int n = int(ch_->active_workers());
    if (n < 1) n = 1;
    if (route >= 0) return route < n ? route : -1;
    if (route == ASYNCD_ROUTE_KEY) return cluster::key_worker(key, n);
    // ANY: the worker with the least waiting for it, starting past the last one picked.
    int best = -1;
    size_t best_free = 0;
    for (int i = 0; i < n; i++) {
        int w = int((next_any_ + size_t(i)) % size_t(n));
        if (ch_->state->fatal[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1) continue;
        size_t free = (*ports_)[size_t(w)]->to().free_bytes();
        if (outs_[size_t(w)]->waiting()) free = 0;
        if (best < 0 || free > best_free) {
            best = w;
            best_free = free;
        }
    }
    next_any_++;
    return best < 0 ? 0 : best;
}

bool Nodes::deliver(int worker, uint64_t req, uint64_t deadline, std::string_view from,
                    std::string_view service, std::string_view msg) {
    NodeOut &o = *outs_[size_t(worker)];
    // A worker that does not keep up: what waits for its ring is bounded like a node's queue.
    if (o.waiting() >= cl_->queue_max || o.waiting_bytes() + msg.size() > cl_->queue_bytes) {
        return false;
    }
    scratch_ = cluster::encode_request_head(from, service);
    scratch_.append(msg);
    o.push(type_of(ToWorker::kNodeRequest), req, deadline, scratch_);
    bump(st_->node_calls_in);
    return true;
}

void Nodes::result(int w, uint64_t call, int status, int code, std::string_view reply) {
    if (w < 0 || size_t(w) >= outs_.size() || call == 0) {
        bump(st_->node_drops);
        return;
    }
    if (status != ASYNCD_NODE_OK && status != ASYNCD_NODE_REMOTE) bump(st_->node_failed_at_once);
    outs_[size_t(w)]->push(type_of(ToWorker::kNodeResult), call, cluster::result_seq(status, code),
                           reply);
}

void Nodes::local_call(int w, uint64_t call, uint64_t deadline, const cluster::Sessions::In &base,
                       int route, uint64_t key, std::string_view service, std::string_view msg) {
    int target = pick_worker(route, key);
    if (target < 0) {
        if (call) result(w, call, ASYNCD_NODE_BUSY, 0, {});
        return;
    }
    uint64_t req = 0;
    if (call) {
        cluster::Sessions::In in = base;
        in.link = 0;
        in.peer_session = call;
        in.worker = target;
        in.deadline_ms = deadline;
        in.from_worker = w;
        req = sessions_.open_in(in);
    }
    if (!deliver(target, req, deadline, self_.name, service, msg)) {
        cluster::Sessions::In gone;
        if (call) {
            sessions_.close_in(req, &gone);
            result(w, call, ASYNCD_NODE_BUSY, 0, {});
        } else {
            bump(st_->node_drops);
        }
    }
}

void Nodes::remote_call(int w, uint64_t call, uint64_t deadline, int route, uint64_t key,
                        std::string_view node, std::string_view service, std::string_view msg,
                        bool fresh) {
    auto it = nodes_.find(std::string(node));
    Node *n = it == nodes_.end() ? nullptr : it->second.get();
    auto fail = [&](int status) {
        if (call) {
            complete(n, w, call, status, 0, {});
        } else {
            bump(st_->node_drops);
            if (n) bump(n->ns->sends_dropped);
        }
    };
    if (!n) return fail(ASYNCD_NODE_UNKNOWN);
    if (fresh) bump(n->ns->calls_out);
    if (n->entry->down) return fail(ASYNCD_NODE_DOWN);
    if (msg.size() > cl_->max_message) return fail(ASYNCD_NODE_TOO_LARGE);
    uint64_t now = now_ms();
    if (call && deadline && deadline <= now) return fail(ASYNCD_NODE_TIMEOUT);
    LinkState st = n->slot ? n->slot->link->state() : LinkState::kIdle;
    if (st == LinkState::kDraining) return fail(ASYNCD_NODE_STOPPING);
    if (st == LinkState::kDown || st == LinkState::kBackoff) return fail(ASYNCD_NODE_DOWN);
    if (st != LinkState::kUp) {
        // Not up: only the first connect queues; once a link has failed, the circuit is open
        // until the back-off timer's reconnect passes its handshake.
        if (n->circuit_open) return fail(ASYNCD_NODE_DOWN);
        cluster::QueuedFrame q;
        q.call = call;
        q.stream = uint16_t(w);
        q.deadline_ms = deadline;
        q.bytes = cluster::encode_call_head(route, key, node, service);
        q.bytes.append(msg);
        if (!n->queue.push(std::move(q))) return fail(ASYNCD_NODE_QUEUE_FULL);
        if (!n->slot) n->slot = new_slot(n);
        Slot *s = n->slot;
        if (s->link->state() == LinkState::kIdle) {
            s->link->connect();
            watch(s);
        }
        return;
    }
    if (n->slot->link->peer().max_message && msg.size() > n->slot->link->peer().max_message) {
        return fail(ASYNCD_NODE_TOO_LARGE);  // above what that node takes
    }
    // A peer that reads slower than we write: what waits for its socket is bounded too.
    if (n->slot->link->queued_bytes() + n->slot->parts_bytes + msg.size() > cl_->queue_bytes) {
        return fail(ASYNCD_NODE_QUEUE_FULL);
    }
    FrameHeader h;
    h.type = call ? FrameType::kCall : FrameType::kSend;
    h.stream = uint16_t(w);
    h.route = wire_route(route);
    h.key = key;
    if (call) {
        h.session = sessions_.open_out({n->entry->name, w, call, deadline, n->slot->id});
        n->pending_out++;
        n->slot->pending++;
        h.word = uint32_t(std::min<uint64_t>(deadline - now, UINT32_MAX));
    }
    send_message(n->slot, h, service, msg);
}

void Nodes::mark_dirty(Slot *s) {
    if (!s->dirty) {
        s->dirty = true;
        dirty_.push_back(s);
    }
}

void Nodes::send_message(Slot *s, const FrameHeader &h, std::string_view service,
                         std::string_view payload) {
    if (s->node) {
        bump(s->node->ns->msgs_out);
        bump(s->node->ns->bytes_out, cluster::kFrameHeaderLen + service.size() + payload.size());
    }
    // Parts at most as large as either side takes: the peer said its max_frame in HELLO.
    size_t max_frame = cl_->max_frame;
    if (s->link->peer().max_frame)
        max_frame = std::min<size_t>(max_frame, s->link->peer().max_frame);
    auto it = s->streams.find(h.stream);
    bool busy = it != s->streams.end() && !it->second.empty();
    if (!busy && service.size() + payload.size() <= max_frame) {
        if (s->link->queue_with(
                [&](std::string *out) { cluster::append_frame(h, service, payload, out); })) {
            mark_dirty(s);
        }
        return;
    }
    auto &q = s->streams[h.stream];
    q.push_back(std::make_unique<cluster::MessageWriter>(h, std::string(service),
                                                         std::string(payload), max_frame));
    s->parts_bytes += payload.size();
    if (q.size() == 1) s->turns.push_back(h.stream);
    pump(s);
}

// Cuts frames from the messages in parts, one stream's frame at a time, while the link has
// little queued: a large message never holds up another stream's, nor conn's memory.
void Nodes::pump(Slot *s) {
    while (!s->turns.empty() && s->link->queued_bytes() < kWriteNowBytes) {
        uint16_t stream = s->turns.front();
        s->turns.pop_front();
        auto &q = s->streams[stream];
        size_t wrote = 0;
        bool up = s->link->queue_with([&](std::string *out) {
            size_t before = out->size();
            q.front()->next(out);
            wrote = out->size() - before;
        });
        size_t body = wrote > cluster::kFrameHeaderLen ? wrote - cluster::kFrameHeaderLen : 0;
        s->parts_bytes -= std::min(s->parts_bytes, body);
        if (!up) {  // not up any more: what was left goes with the link
            s->streams.clear();
            s->turns.clear();
            s->parts_bytes = 0;
            return;
        }
        if (q.front()->done()) q.pop_front();
        if (!q.empty()) s->turns.push_back(stream);
        mark_dirty(s);
    }
}

void Nodes::flush() {
    // A write may fail the link, whose loss may queue frames elsewhere: by index.
    for (size_t i = 0; i < dirty_.size(); i++) {
        Slot *s = dirty_[i];
        s->dirty = false;
        if (s->retired) continue;
        s->link->flush();
        // The socket took it all: cut the next parts, until it takes no more.
        while (!s->turns.empty() && s->link->queued_bytes() == 0 && s->link->fd() >= 0) {
            pump(s);
            s->link->flush();
        }
        watch(s);
    }
    dirty_.clear();
}

void Nodes::reply_from_worker(int w, const shmq::Message &m) {
    cluster::Sessions::In in;
    if (!sessions_.close_in(m.conn_id, &in)) {
        bump(st_->node_drops);  // its caller is gone, or it timed out here
        return;
    }
    (void)w;
    answer_in(in, cluster::result_status(m.seq), cluster::result_code(m.seq),
              std::string_view(reinterpret_cast<const char *>(m.data), m.len));
}

void Nodes::worker_started(int w, uint64_t position) {
    std::vector<cluster::Sessions::In> gone = sessions_.fail_worker_before(w, position);
    if (!gone.empty()) {
        log_->write(LogLevel::kWarn,
                    "worker %d died with %zu node calls it had taken: answered WORKER_DIED", w,
                    gone.size());
    }
    for (const cluster::Sessions::In &in : gone)
        answer_in(in, ASYNCD_NODE_WORKER_DIED, 0, {});
}

void Nodes::answer_in(const cluster::Sessions::In &in, int status, int code,
                      std::string_view reply) {
    if (in.link == 0) {
        result(in.from_worker, in.peer_session, status, code, reply);
        return;
    }
    for (auto &x : slots_) {
        if (x->id != in.link) continue;
        if (x->node && x->node->pending_in) x->node->pending_in--;
        if (x->pending_in) x->pending_in--;
    }
    answer_link(in.link, in.peer_session, status, code, reply, in.worker);
}

void Nodes::answer_link(uint64_t link_id, uint64_t session, int status, int code,
                        std::string_view reply, int stream) {
    Slot *s = nullptr;
    for (auto &x : slots_) {
        if (x->id == link_id) s = x.get();
    }
    if (!s || (s->link->state() != LinkState::kUp && s->link->state() != LinkState::kDraining)) {
        bump(st_->node_drops);
        return;
    }
    if (s->link->peer().max_message && reply.size() > s->link->peer().max_message) {
        status = ASYNCD_NODE_TOO_LARGE;  // above what the caller's node takes
        code = 0;
        reply = {};
    }
    FrameHeader h;
    h.type = FrameType::kReply;
    h.stream = uint16_t(stream);
    h.session = session;
    h.word = uint32_t(status);
    h.key = uint64_t(uint32_t(code));
    send_message(s, h, {}, reply);
}

// ---- from the links --------------------------------------------------------------------

void Nodes::link_up(Link &link) {
    Slot *s = slot_of(link);
    if (!s || s->retired) return;
    const std::string &name = link.peer().node;
    auto it = nodes_.find(name);
    if (it == nodes_.end()) {  // check_hello let it through: the file names it
        retire(s);
        return;
    }
    Node *n = it->second.get();
    bool restarted = n->incarnation && n->incarnation != link.peer().incarnation;
    Slot *other = n->slot && n->slot != s ? n->slot : nullptr;
    if (other) {
        LinkState os = other->link->state();
        bool other_live = os == LinkState::kUp || os == LinkState::kDraining ||
                          os == LinkState::kConnecting || os == LinkState::kHandshaking;
        bool same_peer = other->link->peer().incarnation == link.peer().incarnation;
        if (other_live && (same_peer || os != LinkState::kUp)) {
            // Both sides connected at once: the link the lower name started survives, on
            // both nodes alike.
            bool ours_wins = cluster::outgoing_survives(self_.name, name);
            Slot *loser = other->link->initiator() == ours_wins ? s : other;
            if (loser == s) {
                retire(s);
                return;
            }
        }
        if (os == LinkState::kUp || os == LinkState::kDraining) {
            // Replaced: what was written on the old link is lost with it.
            retire(other);
            fail_written(other, restarted ? ASYNCD_NODE_PEER_RESTARTED : ASYNCD_NODE_LINK_LOST);
            sessions_.drop_link(other->id);
        } else {
            retire(other);
        }
    } else if (restarted) {
        // Calls written to the old process, on links that are not draining (a draining
        // link is another address's, and answers for itself).
        std::vector<Slot *> old;
        for (auto &x : slots_) {
            if (x.get() != s && x->node == n && x->link->state() != LinkState::kDraining) {
                old.push_back(x.get());
            }
        }
        for (Slot *x : old)
            fail_written(x, ASYNCD_NODE_PEER_RESTARTED);
    }
    n->slot = s;
    s->node = n;
    n->circuit_open = false;
    n->incarnation = link.peer().incarnation;
    refresh_refusal(n);
    bump(st_->node_links_up);
    bump(n->ns->links_up);
    if (restarted) bump(n->ns->restarts_seen);
    log_->write(LogLevel::kInfo, "link to node %s up (%s, %s)", name.c_str(),
                link.initiator() ? "we connected" : "it connected",
                restarted ? "it restarted" : "rtt pending");
    flush_queue(n);
    tell_link(0, name);
    s->told_up = true;
    if (stopping_) {  // a reconnect during a stop: it gets its GOAWAY too
        s->link->set_pending(s->pending + s->pending_in);
        s->link->goaway();
    }
    watch(s);
}

void Nodes::flush_queue(Node *n) {
    uint64_t now = now_ms();
    for (cluster::QueuedFrame &q : n->queue.take_all()) {
        int w = q.stream;
        cluster::CallHead h;
        if (!cluster::decode_call(reinterpret_cast<const uint8_t *>(q.bytes.data()), q.bytes.size(),
                                  &h)) {
            continue;
        }
        if (q.call && q.deadline_ms && q.deadline_ms <= now) {
            complete(n, w, q.call, ASYNCD_NODE_TIMEOUT, 0, {});
            continue;
        }
        remote_call(w, q.call, q.deadline_ms, h.route, h.key, h.node, h.service, h.msg, false);
    }
}

void Nodes::expire_queues() {
    uint64_t now = now_ms();
    for (auto &e : nodes_) {
        for (cluster::QueuedFrame &q : e.second->queue.expire(now)) {
            if (q.call) {
                complete(e.second.get(), q.stream, q.call, ASYNCD_NODE_TIMEOUT, 0, {});
            } else {
                bump(st_->node_drops);
            }
        }
    }
    for (cluster::Sessions::Out &o : sessions_.expire_out(now, kSessionGraceMs)) {
        closed_out(o);
        complete(find_node(o.node), o.worker, o.call, ASYNCD_NODE_TIMEOUT, 0, {});
    }
    for (cluster::Sessions::In &i : sessions_.expire_in(now, kSessionGraceMs)) {
        for (auto &x : slots_) {
            if (x->id != i.link) continue;
            if (x->node && x->node->pending_in) x->node->pending_in--;
            if (x->pending_in) x->pending_in--;
        }
    }
}

void Nodes::drop_queue(Node *n, int status) {
    for (cluster::QueuedFrame &q : n->queue.take_all()) {
        if (q.call) {
            complete(n, q.stream, q.call, status, 0, {});
        } else {
            bump(st_->node_drops);
        }
    }
}

void Nodes::fail_written(Slot *s, int status) {
    Node *n = s->node;
    for (cluster::Sessions::Out &o : sessions_.fail_link(s->id)) {
        if (n && n->pending_out) n->pending_out--;
        complete(n, o.worker, o.call, status, 0, {});
    }
    s->pending = 0;
}

void Nodes::fail_out(const std::string &node, int status) {
    Node *n = find_node(node);
    if (n) n->pending_out = 0;
    for (auto &s : slots_) {
        if (s->node == n) s->pending = 0;
    }
    for (cluster::Sessions::Out &o : sessions_.fail_node(node))
        complete(n, o.worker, o.call, status, 0, {});
}

void Nodes::tell_link(int status, const std::string &node) {
    size_t n = std::min(outs_.size(), size_t(ch_->active_workers()));
    for (size_t i = 0; i < n; i++)
        outs_[i]->push({type_of(ToWorker::kNodeLink), 0, uint64_t(status), node});
}

void Nodes::link_message(Link &link, const cluster::Message &m) {
    Slot *s = slot_of(link);
    if (!s || s->retired || !s->node) return;
    Node *n = s->node;
    bump(n->ns->msgs_in);
    bump(n->ns->bytes_in, m.payload.size());
    if (m.h.type == FrameType::kReply) {
        cluster::Sessions::Out out;
        bool never = false;
        if (!sessions_.close_out_from(m.h.session, n->entry->name, &out, &never)) {
            if (never) {
                // A reply to a call never made to this node: the peer's fault.
                link.reject("reply for session " + std::to_string(m.h.session) +
                            ", which was never issued to this node");
                return;
            }
            bump(st_->node_drops);  // late: the caller has timed it out
            return;
        }
        closed_out(out);
        if (s != n->slot) s->link->set_pending(s->pending);  // a link draining
        complete(n, out.worker, out.call, int(int32_t(m.h.word)), int(int32_t(uint32_t(m.h.key))),
                 m.payload);
        return;
    }
    bump(n->ns->calls_in);
    bool is_call = m.h.type == FrameType::kCall;
    uint64_t now = now_ms();
    uint64_t deadline = is_call ? now + m.h.word : 0;
    auto refuse = [&](int status) {
        if (is_call) {
            answer_link(s->id, m.h.session, status, 0, {}, cluster::kStreamConn);
        } else {
            bump(st_->node_drops);
        }
    };
    if (stopping_) return refuse(ASYNCD_NODE_STOPPING);
    if (is_call && m.h.word == 0) return refuse(ASYNCD_NODE_TIMEOUT);
    // A peer that does not read its answers gets no more work: BUSY, a small answer.
    if (s->out_full) return refuse(ASYNCD_NODE_BUSY);
    int target = pick_worker(plugin_route(m.h.route), m.h.key);
    if (target < 0) return refuse(ASYNCD_NODE_BUSY);
    uint64_t req = 0;
    if (is_call) {
        cluster::Sessions::In in;
        in.link = s->id;
        in.peer_session = m.h.session;
        in.worker = target;
        in.deadline_ms = deadline;
        req = sessions_.open_in(in);
        n->pending_in++;
        s->pending_in++;
    }
    if (!deliver(target, req, deadline, n->entry->name, m.service, m.payload)) {
        cluster::Sessions::In gone;
        if (is_call) {
            sessions_.close_in(req, &gone);
            n->pending_in--;
            s->pending_in--;
        }
        refuse(ASYNCD_NODE_BUSY);
    }
}

void Nodes::link_lost(Link &link, const std::string &why) {
    Slot *s = slot_of(link);
    if (!s) return;
    s->watched = -1;     // the link closed its fd
    s->streams.clear();  // parts not yet written go with it
    s->turns.clear();
    s->parts_bytes = 0;
    Node *n = s->node;
    bool current = n && n->slot == s;
    bump(st_->node_link_failures);
    if (n) bump(n->ns->link_failures);
    if (n) {
        log_->write_limited(&lost_log_, now_ms(), LogLevel::kWarn, "link to node %s (%s): %s",
                            n->entry->name.c_str(), s->peer.c_str(), why.c_str());
    } else {
        log_->write_limited(&lost_log_, now_ms(), LogLevel::kWarn, "link from %s refused: %s",
                            s->peer.c_str(), why.c_str());
    }
    // What was written on this link is lost with it (a draining old link's calls too; the
    // node's other link, if any, keeps its own).
    fail_written(s, ASYNCD_NODE_LINK_LOST);
    sessions_.drop_link(s->id);
    if (n && n->pending_in >= s->pending_in) n->pending_in -= s->pending_in;
    s->pending_in = 0;
    if (!current) {
        retire(s);
        return;
    }
    bool drained = why == "drained";
    if (!drained) n->circuit_open = true;
    refresh_refusal(n);
    bool told = s->told_up;
    s->told_up = false;
    n->pending_in = 0;
    if (told) tell_link(drained ? ASYNCD_NODE_STOPPING : ASYNCD_NODE_LINK_LOST, n->entry->name);
    if (!link.initiator()) {
        // An accepted link has no address to go back to: ours takes over, on the back-off
        // timer after its first try.
        retire(s);
        // Not for a node the table no longer runs (lingering after discovery dropped it,
        // or removed): there is no address to go to.
        if (stopping_ || n->entry->down || find_node(n->entry->name) != n) {
            n->slot = nullptr;
            return;
        }
        Slot *mine = new_slot(n);
        n->slot = mine;
        mine->link->connect();
        watch(mine);
    }
}

// Both nodes connecting at once: the link the lower name started survives. When that is
// ours and still on its way up, the peer's is refused before its handshake completes, so
// that the peer never writes a call on a link that is about to close.
std::string Nodes::admit(Link &, const cluster::Hello &h) {
    Node *n = find_node(h.node);
    if (!n || !n->slot || !cluster::outgoing_survives(self_.name, h.node)) return "";
    LinkState st = n->slot->link->state();
    if (n->slot->link->initiator() &&
        (st == LinkState::kConnecting || st == LinkState::kHandshaking)) {
        return "node " + h.node + " connected while this node was connecting to it: ours is kept";
    }
    return "";
}

void Nodes::link_goaway(Link &link) {
    Node *n = node_of(link);
    if (n) log_->write(LogLevel::kInfo, "node %s is stopping (GOAWAY)", n->entry->name.c_str());
}

// ---- time ------------------------------------------------------------------------------

void Nodes::arm_timer() {
    uint64_t at = 0;
    auto consider = [&](uint64_t t) {
        if (t && (!at || t < at)) at = t;
    };
    for (auto &s : slots_)
        consider(s->link->deadline_ms());
    for (auto &e : nodes_)
        consider(e.second->queue.next_deadline_ms());
    for (auto &e : lingering_)
        consider(e.second.until_ms);
    // The sweep of sessions past their deadline: on whole seconds, so that a busy turn does
    // not move the timer every time.
    if (sessions_.out_pending() || sessions_.in_pending()) consider((now_ms() / 1000 + 1) * 1000);
    if (publish_due_) consider(published_ms_ + 100);  // the gauges settle after a burst
    if (at == timer_at_ && (timer_ || !at)) return;
    if (timer_) loop_->cancel_timer(timer_);
    timer_ = 0;
    timer_at_ = at;
    if (!at) return;
    uint64_t now = now_ms();
    uint32_t delay = at > now ? uint32_t(std::min<uint64_t>(at - now, 60000)) : 0;
    timer_ = loop_->add_timer(delay, [this] { on_timer(); });
}

void Nodes::on_timer() {
    timer_ = 0;
    timer_at_ = 0;
    uint64_t now = now_ms();
    std::vector<Slot *> due;
    for (auto &s : slots_) {
        uint64_t d = s->link->deadline_ms();
        if (d && d <= now) due.push_back(s.get());
    }
    if (!due.empty()) publish_due_ = true;
    for (auto &s : slots_) {  // a draining link ends when nothing is in flight on it
        if (s->link->state() == LinkState::kDraining)
            s->link->set_pending(s->pending + s->pending_in);
    }
    for (Slot *s : due) {
        if (s->retired) continue;
        s->link->tick();
        watch(s);
    }
    expire_queues();
    for (auto it = lingering_.begin(); it != lingering_.end();) {
        auto next = std::next(it);
        if (it->second.until_ms <= now) end_linger(it);
        it = next;
    }
    if (publish_due_ && now - published_ms_ >= 100) publish();
    arm_timer();
}

}  // namespace asyncd::conn
