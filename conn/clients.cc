#include "conn/clients.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "core/clock.h"
#include "core/latency.h"
#include "core/records.h"

namespace asyncd::conn {

namespace {

constexpr size_t kScratch = 64 << 10;  // one read per readable connection per turn
constexpr int kAcceptsPerTurn = 128;
constexpr int kRepliesPerTurn = 4096;  // per worker, so one busy worker cannot starve
constexpr int kAcceptPauseMs = 100;    // accepting rests this long after fds ran out
constexpr size_t kBudgetRead = 4096;   // a read near input_budget takes at most this much
constexpr int kFdSpare = 16;           // fds conn keeps for itself beyond those open at start

void peer_of(int fd, asyncd_peer_t *peer) {
    memset(peer, 0, sizeof *peer);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
        if (ss.ss_family == AF_INET) {
            auto *a = reinterpret_cast<sockaddr_in *>(&ss);
            inet_ntop(AF_INET, &a->sin_addr, peer->addr, sizeof peer->addr);
            peer->port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
            inet_ntop(AF_INET6, &a->sin6_addr, peer->addr, sizeof peer->addr);
            peer->port = ntohs(a->sin6_port);
        }
    }
    len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
        if (ss.ss_family == AF_INET) {
            peer->local_port = ntohs(reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            peer->local_port = ntohs(reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port);
        }
    }
}

int count_open_fds() {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 64;
    int n = 0;
    while (struct dirent *e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;  // the directory's own fd
}

const char *reason_name(int reason) {
    switch (reason) {
        case ASYNCD_DOWN_PEER_CLOSED:
            return "peer closed";
        case ASYNCD_DOWN_ERROR:
            return "socket error";
        case ASYNCD_DOWN_BAD_FRAME:
            return "bad frame";
        case ASYNCD_DOWN_PLUGIN_CLOSE:
            return "closed by the plugin";
        case ASYNCD_DOWN_IDLE:
            return "idle timeout";
        case ASYNCD_DOWN_LIMIT:
            return "limit";
        case ASYNCD_DOWN_CONN_RESTART:
            return "conn restart";
        case ASYNCD_DOWN_SHUTDOWN:
            return "shutdown";
        case ASYNCD_DOWN_WORKER_RESTART:
            return "worker restart";
    }
    return "?";
}

}  // namespace

const char *stage_name(Stage s) {
    switch (s) {
        case Stage::kAccepted:
            return "accepted";
        case Stage::kLinked:
            return "linked";
        case Stage::kClosed:
            return "closed";
        case Stage::kDone:
            return "done";
    }
    return "?";
}

void Connection::on_events(uint32_t ev) {
    clients->on_events(this, ev);
}

bool Connection::on_room(Port &) {
    return clients->drive(this);
}

void Connection::on_dequeued(Port &) {
    clients->dequeued(this);
}

Clients::Clients(Config *cfg, Channels *ch, Log *log, Loop *loop,
                 std::vector<std::unique_ptr<Port>> *ports, int listen_fd)
    : cfg_(cfg),
      ch_(ch),
      log_(log),
      loop_(loop),
      ports_(ports),
      st_(&ch->stats->conn),
      listen_fd_(listen_fd),
      listen_handler_([this](uint32_t) { on_accept(); }),
      scratch_(new uint8_t[kScratch]) {}

// Every connection is in slots_ until it is reaped (those waiting to be reaped too).
Clients::~Clients() {
    for (Connection *c : slots_) {
        if (!c) continue;
        if (c->fd >= 0) close(c->fd);
        delete c;
    }
    if (reserve_fd_ >= 0) close(reserve_fd_);
}

bool Clients::open(std::string *err) {
    if (!loop_->add(listen_fd_, EPOLLIN, &listen_handler_)) {
        *err = std::string("epoll_ctl(ADD) of the listen socket: ") + strerror(errno);
        return false;
    }
    reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    decoder_.mode = cfg_->frame;
    decoder_.max_pkg_len = cfg_->max_pkg_len;
    limits_changed();
    return true;
}

void Clients::set_plugin(const PluginExports &fns) {
    decoder_.get_pkg_len = fns.get_pkg_len;
    select_worker_ = fns.select_worker;
}

// The timeouts are looked at ten times per the shortest of them, at most once a second.
void Clients::limits_changed() {
    clamp_max_conns();
    uint64_t shortest = UINT64_MAX;
    if (cfg_->idle_timeout > 0) shortest = uint64_t(cfg_->idle_timeout) * 1000;
    if (cfg_->pkg_timeout_ms > 0) shortest = std::min(shortest, uint64_t(cfg_->pkg_timeout_ms));
    if (cfg_->out_buf_soft) shortest = std::min(shortest, uint64_t(cfg_->out_buf_soft_ms));
    check_every_ms_ = shortest == UINT64_MAX ? 0 : std::clamp<uint64_t>(shortest / 10, 50, 1000);
    if (check_timer_) loop_->cancel_timer(check_timer_);
    check_timer_ = 0;
    // A pkg_timeout turned on finds packets begun while it was off: their clock starts now.
    if (cfg_->pkg_timeout_ms > 0) {
        for (Connection *c : slots_) {
            if (c && !c->closed() && !c->in.empty() && !c->pkg_start_ms && !c->waiting_for_room()) {
                c->pkg_start_ms = loop_->now_ms();
            }
        }
    }
    if (live_) arm_check();  // connections already open may be due
}

// Every connection costs conn one fd. Make the fd limit fit max_conns, raising the soft limit
// toward the hard one if need be; where even that falls short, lower max_conns and say so.
void Clients::clamp_max_conns() {
    max_conns_ = cfg_->max_conns;
    if (size_t(max_conns_) > ch_->npeers) {
        // The connection table was made at start, for 4x the max_conns of then.
        max_conns_ = int(ch_->npeers);
        log_->write(LogLevel::kWarn,
                    "max_conns %d lowered to %d: the connection table made at start holds %zu "
                    "slots; a restart makes room for more",
                    cfg_->max_conns, max_conns_, ch_->npeers);
    }
    if (!own_fds_) own_fds_ = count_open_fds() + kFdSpare;  // at start, before any client
    int own = own_fds_;
    rlim_t need = rlim_t(max_conns_) + rlim_t(own);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    struct rlimit up = rl;
    up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    if (rl.rlim_cur >= need) return;
    long fit = long(rl.rlim_cur) - own;
    max_conns_ = fit < 1 ? 1 : int(fit);
    log_->write(LogLevel::kWarn,
                "max_conns %d lowered to %d: the fd limit (RLIMIT_NOFILE) is %llu and conn "
                "keeps %d for itself; raise it (ulimit -n, LimitNOFILE=) to serve %d",
                cfg_->max_conns, max_conns_, (unsigned long long)rl.rlim_cur, own, cfg_->max_conns);
}

void Clients::stop_accepting() {
    if (quiescing_) return;
    quiescing_ = true;
    if (accepting_) loop_->remove(listen_fd_);
    accepting_ = false;
    // New clients are refused at once rather than left waiting in the backlog.
    shutdown(listen_fd_, SHUT_RD);
}

// Stop taking input: what is already in the rings is answered, what is still in conn's own
// buffers was never accepted and is dropped with its connection.
void Clients::stop_input() {
    if (input_stopped_) return;
    input_stopped_ = true;
    if (accepting_) loop_->remove(listen_fd_);
    accepting_ = false;
    for (Connection *c : slots_) {
        if (c && !c->closed()) update_events(c);
    }
}

void Clients::on_events(Connection *c, uint32_t ev) {
    if (c->closed()) return;
    if (ev & (EPOLLERR | EPOLLHUP)) {
        // Read what is left first: a client may send and close at once.
        on_readable(c);
        if (!c->closed()) close_conn(c, ASYNCD_DOWN_ERROR);
        return;
    }
    if (ev & EPOLLIN) on_readable(c);
    if ((ev & EPOLLOUT) && !c->closed()) write_out(c);
}

void Clients::on_accept() {
    for (int i = 0; i < kAcceptsPerTurn; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN) return;
            shed_connection(errno);
            return;
        }
        accept_one(fd);
    }
}

void Clients::accept_one(int fd) {
    uint64_t now = loop_->now_ms();
    if (live_ >= size_t(max_conns_)) {
        close(fd);
        bump(st_->refused);
        log_->write_limited(&refuse_log_, now, LogLevel::kWarn,
                            "max_conns (%d) reached: refusing new connections", max_conns_);
        return;
    }
    uint32_t slot;
    if (!free_slots_.empty()) {
        slot = free_slots_.front();
        free_slots_.pop_front();
    } else if (slots_.size() < ch_->npeers) {
        slot = uint32_t(slots_.size());
        slots_.push_back(nullptr);
        if (slots_.size() > ch_->state->slots_used.load(std::memory_order_relaxed))
            ch_->state->slots_used.store(uint32_t(slots_.size()), std::memory_order_release);
    } else {
        // Every slot of the table is held, by open connections and by closed ones whose
        // LINK_DOWN waits for room in a ring.
        close(fd);
        bump(st_->refused);
        log_->write_limited(&refuse_log_, now, LogLevel::kWarn,
                            "all %zu connection slots are held (closed connections wait for "
                            "room in a worker's ring): refusing new connections",
                            ch_->npeers);
        return;
    }
    auto *c = new Connection();
    c->clients = this;
    slots_[slot] = c;
    c->fd = fd;
    c->id = (ch_->state->conn_serial.fetch_add(1) << kConnSlotBits) | slot;
    c->last_active_ms = now;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer_of(fd, &c->peer);
    snprintf(c->peer_text, sizeof c->peer_text, "%s:%u", c->peer.addr, unsigned(c->peer.port));
    {
        PeerSlot &ps = ch_->peers[slot];
        ps.conn_id.store(0, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
        memcpy(&ps.peer, &c->peer, sizeof c->peer);
        ps.conn_id.store(c->id, std::memory_order_release);
    }
    live_++;
    set(st_->connections, live_);
    bump(st_->accepted);
    if (cfg_->idle_timeout > 0) arm_check();
    if (!loop_->add(fd, EPOLLIN, c)) {
        log_->write(LogLevel::kError, "epoll_ctl(ADD): %s", strerror(errno));
        close_conn(c, ASYNCD_DOWN_ERROR);
        return;
    }
    c->events = EPOLLIN;
    if (!select_worker_) {
        c->worker = next_worker();
        (*ports_)[size_t(c->worker)]->conns++;
        note_bound(c);
        push_up(c);
        update_events(c);
    }
}

// accept failed for want of something. With the fds gone the listen socket stays readable
// and epoll would wake us for ever: give up the reserve fd to accept one waiting connection
// and close it (its client hears at once instead of waiting), stop watching the listen
// socket for a moment, and say so at most once a second.
void Clients::shed_connection(int err) {
    bool no_fds = err == EMFILE || err == ENFILE;
    if (no_fds) {
        bump(st_->fd_exhausted);
        if (reserve_fd_ >= 0) {
            close(reserve_fd_);
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd >= 0) close(fd);
            reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
    }
    bool scarce = no_fds || err == ENOBUFS || err == ENOMEM;
    log_->write_limited(&fd_log_, loop_->now_ms(), scarce ? LogLevel::kCrit : LogLevel::kError,
                        "accept: %s; %saccepting again in %d ms", strerror(err),
                        no_fds ? "closed one waiting connection, " : "", kAcceptPauseMs);
    if (accept_paused_) return;
    if (accepting_) loop_->remove(listen_fd_);
    accepting_ = false;
    accept_paused_ = true;
    loop_->add_timer(kAcceptPauseMs, [this] { resume_accepting(); });
}

void Clients::resume_accepting() {
    accept_paused_ = false;
    if (reserve_fd_ < 0) reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (input_stopped_ || quiescing_ || accepting_) return;
    if (!loop_->add(listen_fd_, EPOLLIN, &listen_handler_)) {
        log_->write(LogLevel::kCrit, "epoll_ctl(ADD) of the listen socket: %s; retrying in %d ms",
                    strerror(errno), kAcceptPauseMs);
        accept_paused_ = true;
        loop_->add_timer(kAcceptPauseMs, [this] { resume_accepting(); });
        return;
    }
    accepting_ = true;
}

void Clients::on_readable(Connection *c) {
    if (c->waiting_for_room() || c->starved || input_stopped_) return;
    size_t max_read = kScratch;
    if (!budget_allows_read(c, &max_read)) return;
    ssize_t n = read(c->fd, scratch_.get(), max_read);
    if (n == 0) {
        close_conn(c, ASYNCD_DOWN_PEER_CLOSED);
        return;
    }
    uint64_t now = loop_->now_ms();
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        log_->write_limited(&close_log_, now, LogLevel::kInfo, "read from %s: %s", c->peer_text,
                            strerror(errno));
        close_conn(c, errno == ECONNRESET ? ASYNCD_DOWN_PEER_CLOSED : ASYNCD_DOWN_ERROR);
        return;
    }
    c->last_active_ms = now;
    bump(st_->bytes_in, uint64_t(n));
    uint64_t packets = c->packets;
    size_t used = 0;
    bool stored = true;
    if (c->in.empty()) {
        // The common case: whole packets go from the scratch buffer straight into the ring,
        // and only a partial or blocked tail is kept.
        feed(c, scratch_.get(), size_t(n), &used);
        if (!c->closed() && used < size_t(n))
            stored = c->in.append(scratch_.get() + used, n - used);
    } else {
        stored = c->in.append(scratch_.get(), size_t(n));
        if (stored) {
            feed(c, c->in.data(), c->in.size(), &used);
            if (!c->closed()) c->in.consume(used);
        }
    }
    if (!stored) {
        log_->write(LogLevel::kCrit, "out of memory buffering input of %s", c->peer_text);
        close_conn(c, ASYNCD_DOWN_LIMIT);
        return;
    }
    if (c->closed()) return;
    track_input(c);
    note_partial(c, c->packets != packets);
    update_events(c);
}

// Keeps input_pending_ (and the count of connections holding input) in step with c->in.
// Called after anything that changes c->in.
void Clients::track_input(Connection *c) {
    size_t now = c->in.size();
    if (now == c->in_counted) return;
    input_pending_ = input_pending_ + now - c->in_counted;
    if (!c->in_counted) input_holders_++;
    if (!now) input_holders_--;
    c->in_counted = now;
    set(st_->input_pending, input_pending_);
}

// input_budget: no client can make conn hold more than it. Near the budget a connection
// that holds unfinished input is not read while it holds more than the average of those that
// hold some (the ones with the most go first), and above the budget none that holds any is
// read. A connection that holds nothing (its packets were whole) is still read, a little at a
// time, so that well-behaved clients keep being served. The connections not read keep their
// pkg_timeout clock: the ones that never finish are closed by it, which brings conn back
// under the budget, and reading resumes.
bool Clients::budget_allows_read(Connection *c, size_t *max_read) {
    size_t budget = cfg_->input_budget;
    if (!budget || input_pending_ + kScratch <= budget) return true;
    if (c->in.empty()) {
        *max_read = kBudgetRead;
        return true;
    }
    size_t average = input_holders_ ? input_pending_ / input_holders_ : 0;
    if (input_pending_ < budget && c->in.size() < average) {
        *max_read = kBudgetRead;
        return true;
    }
    c->starved = true;
    starved_.push_back(c->id);
    bump(st_->input_budget_pauses);
    log_->write_limited(&budget_log_, loop_->now_ms(), LogLevel::kWarn,
                        "input_budget (%zu bytes) reached: %zu bytes of %zu connections wait to "
                        "become packets; not reading from the ones holding the most (%s: %zu "
                        "bytes) until the unfinished ones finish or reach pkg_timeout",
                        budget, input_pending_, input_holders_, c->peer_text, c->in.size());
    update_events(c);
    return false;
}

// Below seven eighths of the budget, the connections it stopped are read again.
void Clients::resume_starved() {
    if (starved_.empty()) return;
    size_t budget = cfg_->input_budget;
    if (budget && input_pending_ + kScratch > budget - budget / 8) return;
    for (uint64_t id : starved_) {
        uint32_t slot = conn_slot(id);
        Connection *c = slot < slots_.size() ? slots_[slot] : nullptr;
        if (!c || c->id != id || c->closed() || !c->starved) continue;
        c->starved = false;
        c->last_active_ms = loop_->now_ms();
        update_events(c);
    }
    starved_.clear();
}

// Runs the whole-packet clock of c while it holds part of a packet that it is still sending
// (not while it waits for room in a ring: that is our doing). `fresh`: a packet completed,
// so what is left began with this read.
void Clients::note_partial(Connection *c, bool fresh) {
    if (c->in.empty() || c->waiting_for_room() || cfg_->pkg_timeout_ms <= 0) {
        c->pkg_start_ms = 0;
        return;
    }
    if (fresh || !c->pkg_start_ms) {
        c->pkg_start_ms = loop_->now_ms();
        arm_check();
    }
}

// Round-robin over the workers that serve now: ready, not dead or in back-off, so that a
// crash-looping or fatal slot gets no new clients. With none serving (all restarting), over
// every one that is not fatal: the packets wait in its ring for it.
int Clients::next_worker() {
    uint32_t n = ch_->active_workers();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            int w = int(next_worker_++ % n);
            if (pass == 0 ? is_serving(w) : !is_fatal(w)) return w;
        }
    }
    return int(next_worker_++ % n);
}

bool Clients::is_serving(int w) const {
    return ch_->state->serving[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1;
}

bool Clients::is_fatal(int w) const {
    return ch_->state->fatal[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1;
}

int Clients::bind_worker(Connection *c, const uint8_t *pkg, size_t len) {
    int n = int(ch_->active_workers());
    int w = select_worker_(c->id, pkg, len, n);
    // The plugin's choice stands while that worker can come back (a restart keeps the
    // packets in its ring); a slot that never will is no choice.
    if (w < 0 || w >= n || is_fatal(w)) w = next_worker();
    (*ports_)[size_t(w)]->conns++;
    c->worker = w;
    note_bound(c);
    return w;
}

// Tells the workers, through the peer table, that c is open and bound to its worker: one
// that starts links it up at once.
void Clients::note_bound(Connection *c) {
    ch_->peers[conn_slot(c->id)].bound.store(uint32_t(c->worker) + 1, std::memory_order_release);
}

// A slot turned fatal: the connections bound to it would wait for ever. They are closed
// (their packets in its ring stay there, and a stop reports them).
void Clients::close_bound_to(int worker) {
    int closed = 0;
    for (Connection *c : slots_) {
        if (!c || c->closed() || c->worker != worker) continue;
        close_conn(c, ASYNCD_DOWN_ERROR);
        closed++;
    }
    if (closed) {
        log_->write(LogLevel::kWarn,
                    "closed %d connections bound to worker %d, which cannot start (fatal)", closed,
                    worker);
    }
}

void Clients::abandon_unwritten() {
    size_t n = 0, bytes = 0;
    for (Connection *c : slots_) {
        if (!c || c->closed() || c->out.empty()) continue;
        n++;
        bytes += c->out.size();
        close_conn(c, ASYNCD_DOWN_SHUTDOWN);
    }
    if (n) {
        log_->write(LogLevel::kWarn,
                    "stop: closing %zu clients that did not read %zu bytes of their answers "
                    "before shutdown_timeout",
                    n, bytes);
    }
}

// Whether c must wait its turn at p (or conn takes no input); if so it is in p's FIFO, and
// its whole-packet clock stops: the wait is conn's doing.
bool Clients::must_wait(Port &p, Connection *c) {
    if (input_stopped_) return true;
    if (!p.must_wait(c)) return false;
    c->pkg_start_ms = 0;
    return true;
}

void Clients::wait_for_room(Port &p, Connection *c, size_t need) {
    p.wait_for_room(c, need);
    c->pkg_start_ms = 0;
}

bool Clients::feed(Connection *c, const uint8_t *data, size_t len, size_t *used) {
    while (*used < len) {
        size_t n;
        const char *why = "";
        Frame f = decoder_.decode(c->id, data + *used, len - *used, &n, &why);
        if (f == Frame::kNeedMore) return true;
        if (f == Frame::kError) {
            bump(st_->bad_frames);
            log_->write_limited(&close_log_, loop_->now_ms(), LogLevel::kInfo, "closing %s: %s",
                                c->peer_text, why);
            close_conn(c, ASYNCD_DOWN_BAD_FRAME);
            return false;
        }
        if (c->worker < 0) bind_worker(c, data + *used, n);
        if (!push_up(c)) return false;
        Port &p = *(*ports_)[size_t(c->worker)];
        if (must_wait(p, c)) return false;
        if (p.stream_done() && n != c->stream_len) {
            // Part of this packet is in the ring already, framed at another length: the
            // plugin's get_pkg_len answered differently for the same bytes. Its contract is
            // broken, not one of asyncd's invariants: the connection goes, the ring's stream
            // is given up (drive), and everyone else is served on.
            bump(st_->plugin_frame_errors);
            log_->write_limited(&close_log_, loop_->now_ms(), LogLevel::kWarn,
                                "closing %s: plugin %s: get_pkg_len answered %zu for a packet it "
                                "had framed as %zu bytes (%zu of them in a ring already); "
                                "get_pkg_len must answer the same for the same bytes",
                                c->peer_text, cfg_->plugin.c_str(), n, c->stream_len,
                                p.stream_done());
            close_conn(c, ASYNCD_DOWN_BAD_FRAME);
            return false;
        }
        shmq::RecordMeta meta;
        meta.type = type_of(ToWorker::kPacket);
        meta.conn_id = c->id;
        meta.seq = packet_seq(c->packets, timing_stamp());
        shmq::PushStatus s = p.to().try_push_stream(meta, data + *used, n, &p.stream_done());
        if (s == shmq::PushStatus::kFull) {
            c->stream_len = n;
            wait_for_room(p, c, n - p.stream_done());
            return false;
        }
        if (s != shmq::PushStatus::kOk) {
            log_->write(LogLevel::kAlert, "push of a %zu-byte packet to worker %d failed (%d)", n,
                        c->worker, int(s));
            close_conn(c, ASYNCD_DOWN_ERROR);
            return false;
        }
        p.stream_done() = 0;
        c->stream_len = 0;
        p.mark_pushed();
        c->packets++;
        bump(st_->packets_in);
        test_hook_after_push(p, data + *used, n);
        *used += n;
    }
    return true;
}

// Test builds only (ASYNCD_TEST_HOOKS): a packet whose payload starts "!CORRUPT!" has a
// bit of its ring record's header flipped after it is written and before it is published,
// so that the tests can watch a worker meet a corrupt record (R19).
void Clients::test_hook_after_push(Port &p, const uint8_t *pkg, size_t len) {
#ifdef ASYNCD_TEST_HOOKS
    static const char kMagic[] = "!CORRUPT!";
    uint64_t index = p.to().last_record_index();
    if (len < 4 + sizeof kMagic - 1 || memcmp(pkg + 4, kMagic, sizeof kMagic - 1) != 0 ||
        index == UINT64_MAX) {
        return;
    }
    p.in_ring()->data()[(index & (p.in_ring()->capacity() - 1)) + 12] ^= 0x40;
    log_->write(LogLevel::kInfo, "test hook: corrupted the record at ring index %llu",
                (unsigned long long)index);
#else
    (void)p;
    (void)pkg;
    (void)len;
#endif
}

// Pushes whatever c still owes its worker: the LINK_UP, buffered packets, the LINK_DOWN.
// False when it is still blocked.
bool Clients::drive(Connection *c) {
    if (!c->closed()) {
        if (!push_up(c)) return false;
        size_t used = 0;
        bool ok = feed(c, c->in.data(), c->in.size(), &used);
        if (!c->closed()) {
            c->in.consume(used);
            track_input(c);
            if (!ok) return false;
        }
    }
    if (c->closed()) {
        c->in.release();
        track_input(c);
        // It went away with a packet half streamed into the ring: that packet was never
        // accepted, and the ring must take other records again.
        if (c->worker >= 0) (*ports_)[size_t(c->worker)]->abort_stream_of(c);
        if (c->stage == Stage::kClosed && !push_down(c)) return false;
    }
    return true;
}

// c's turn in its port's FIFO is through.
void Clients::dequeued(Connection *c) {
    if (c->stage == Stage::kDone) {
        reap_.push_back(c);  // held back while it was queued
        return;
    }
    if (c->closed()) return;
    c->last_active_ms = loop_->now_ms();  // the time conn did not read it was not idleness
    note_partial(c, true);
    update_events(c);  // its buffer is through: read again
}

bool Clients::push_up(Connection *c) {
    if (c->stage != Stage::kAccepted || c->worker < 0) return true;
    Port &p = *(*ports_)[size_t(c->worker)];
    if (must_wait(p, c)) return false;
    shmq::RecordMeta meta;
    meta.type = type_of(ToWorker::kLinkUp);
    meta.conn_id = c->id;
    shmq::PushStatus s = p.to().try_push(meta, &c->peer, sizeof c->peer);
    if (s == shmq::PushStatus::kFull) {
        wait_for_room(p, c, sizeof c->peer);
        return false;
    }
    if (s != shmq::PushStatus::kOk) {
        log_->write(LogLevel::kAlert, "push of LINK_UP to worker %d failed (%d)", c->worker,
                    int(s));
    }
    set_stage(c, Stage::kLinked);
    p.mark_pushed();
    return true;
}

bool Clients::push_down(Connection *c) {
    Port &p = *(*ports_)[size_t(c->worker)];
    if (must_wait(p, c)) return false;
    shmq::RecordMeta meta;
    meta.type = type_of(ToWorker::kLinkDown);
    meta.conn_id = c->id;
    meta.seq = uint64_t(c->down_reason);
    shmq::PushStatus s = p.to().try_push(meta, nullptr, 0);
    if (s == shmq::PushStatus::kFull) {
        wait_for_room(p, c, 0);
        return false;
    }
    if (s != shmq::PushStatus::kOk) {
        log_->write(LogLevel::kAlert, "push of LINK_DOWN to worker %d failed (%d)", c->worker,
                    int(s));
    }
    p.mark_pushed();
    set_stage(c, Stage::kDone);
    return true;
}

// The one place a connection's stage changes. Reaching kDone schedules its reap (at the end
// of the turn; never inside a callback that still uses it), unless it still waits in a
// port's FIFO: then the port's dequeue does.
void Clients::set_stage(Connection *c, Stage s) {
    if (c->stage == s) return;
    log_->write(LogLevel::kDebug, "connection %llx: %s -> %s", (unsigned long long)c->id,
                stage_name(c->stage), stage_name(s));
    c->stage = s;
    if (s == Stage::kDone && !c->waiting_for_room()) reap_.push_back(c);
}

void Clients::update_events(Connection *c) {
    if (c->closed()) return;
    uint32_t want = 0;
    if (!c->waiting_for_room() && !c->starved && !input_stopped_) want |= EPOLLIN;
    if (!c->out.empty()) want |= EPOLLOUT;
    if (want == c->events) return;
    if (loop_->modify(c->fd, want, c)) {
        c->events = want;
    } else {
        log_->write(LogLevel::kError, "epoll_ctl(MOD) for %s: %s; closing it", c->peer_text,
                    strerror(errno));
        close_conn(c, ASYNCD_DOWN_ERROR);
    }
}

void Clients::close_conn(Connection *c, int reason) {
    if (c->closed()) return;
    c->down_reason = reason;
    log_->write(LogLevel::kDebug, "connection %s (%llx) closed: %s", c->peer_text,
                (unsigned long long)c->id, reason_name(reason));
    loop_->remove(c->fd);
    close(c->fd);
    c->fd = -1;
    ch_->peers[conn_slot(c->id)].bound.store(0, std::memory_order_release);
    live_--;
    set(st_->connections, live_);
    c->out.release();
    if (!c->in.empty()) {
        // Bytes it sent that conn had read but not handed to a worker (an unfinished packet,
        // or whole ones waiting for room in a ring) go with it: say so, and count them.
        bump(st_->input_dropped, c->in.size());
        log_->write_limited(&close_log_, loop_->now_ms(), LogLevel::kInfo,
                            "%s closed (%s) with %zu bytes it had sent not yet handed to a "
                            "worker: dropped",
                            c->peer_text, reason_name(reason), c->in.size());
    }
    bool linked = c->stage == Stage::kLinked;
    set_stage(c, linked ? Stage::kClosed : Stage::kDone);
    if (c->waiting_for_room()) return;  // its turn in the queue pushes the LINK_DOWN
    c->in.release();
    track_input(c);
    if (linked) push_down(c);
}

void Clients::reap() {
    for (Connection *c : reap_) {
        c->in.release();
        track_input(c);
        if (c->worker >= 0) (*ports_)[size_t(c->worker)]->conns--;
        uint32_t slot = conn_slot(c->id);
        slots_[slot] = nullptr;
        free_slots_.push_back(slot);
        delete c;
    }
    reap_.clear();
}

bool Clients::serve() {
    if (!input_stopped_) {
        for (auto &p : *ports_)
            p->serve_waiting();
    }
    bool more = false;
    for (auto &p : *ports_) {
        Port *port = p.get();
        bool left = p->drain(kRepliesPerTurn, [this, port](const shmq::Message &m) {
            if (m.type >= type_of(FromWorker::kNodeCall) && node_fn_) {
                node_fn_(port->index(), m);
            } else {
                handle_reply(m);
            }
        });
        if (left) more = true;
    }
    for (auto &p : *ports_)
        p->flush();
    flush_writes();
    return more;
}

void Clients::end_turn() {
    reap();
    resume_starved();
}

// The stamp of a packet whose callback the worker is to time: about one in handler_timing,
// picked here, the counter read for those only; 0 for the others.
uint64_t Clients::timing_stamp() {
    uint32_t every = uint32_t(cfg_->handler_timing);
    if (timing_sampler_.every != every) timing_sampler_.reset(every, ticks() ^ uint64_t(getpid()));
    if (!timing_sampler_.due()) return 0;
    uint64_t t = ticks() & kSeqStampMask;
    return t ? t : 1;
}
}  // namespace asyncd::conn
