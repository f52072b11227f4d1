#include "conn/conn_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "core/clock.h"
#include "core/loop_fds.h"

namespace asyncd::conn {

namespace {

constexpr size_t kScratch = 64 << 10;  // one read per readable connection per turn
constexpr int kMaxEvents = 512;
constexpr int kAcceptsPerTurn = 128;
constexpr int kRepliesPerTurn = 4096;  // per worker, so one busy worker cannot starve
constexpr int kAcceptPauseMs = 100;    // accepting rests this long after fds ran out
constexpr size_t kBudgetRead = 4096;   // a read near input_budget takes at most this much
constexpr int kFdSpare = 16;           // fds conn keeps for itself beyond those open at start
// Buffers above this are mapped on their own and unmapped when freed, so that what a slow
// reader made conn take goes back to the system (glibc's sliding threshold would keep them).
constexpr int kMmapThreshold = 128 << 10;

// epoll data: a connection pointer, or one of these small tags.
constexpr uint64_t kTagListen = 1;
constexpr uint64_t kTagWake = 2;
constexpr uint64_t kTagSignal = 3;
constexpr uint64_t kTagDeath = 4;

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
    }
    return "?";
}

}  // namespace

ConnServer::ConnServer(const Config &cfg, Channels *ch, int listen_fd, Log *log)
    : cfg_(cfg), ch_(ch), listen_fd_(listen_fd), log_(log), scratch_(new uint8_t[kScratch]) {}

ConnServer::~ConnServer() {
    for (Connection *c : slots_) {
        if (!c) continue;
        if (c->fd >= 0) close(c->fd);
        delete c;
    }
    if (ep_ >= 0) close(ep_);
    if (sig_fd_ >= 0) close(sig_fd_);
    if (reserve_fd_ >= 0) close(reserve_fd_);
}

bool ConnServer::setup(std::string *err) {
    plugin_generation_ = ch_->state->plugin_generation.load(std::memory_order_acquire);
    if (!plugin_->load(cfg_.plugin, err)) return false;
    decoder_.mode = cfg_.frame;
    decoder_.max_pkg_len = cfg_.max_pkg_len;
    decoder_.get_pkg_len = plugin_->exports().get_pkg_len;
    if (cfg_.frame == FrameMode::kPlugin && !decoder_.get_pkg_len) {
        *err = "frame plugin needs get_pkg_len, and plugin " + cfg_.plugin + " does not export it";
        return false;
    }
    bool restarted = ch_->state->conn_epoch.load() > 1;
    for (auto &link : ch_->workers) {
        ports_.push_back(
            std::make_unique<Port>(&link->in, &link->out, &link->wake, &ch_->conn_wake));
        ports_.back()->reset_pending = restarted;
        ports_.back()->index = int(ports_.size() - 1);
    }
    // A restarted conn knows nothing of its predecessor's connections: none is open now. Their
    // peers stay, for the records of theirs still in the rings.
    size_t used = ch_->state->slots_used.load(std::memory_order_acquire);
    for (size_t i = 0; i < used && i < ch_->npeers; i++) {
        if (ch_->peers[i].bound.load(std::memory_order_relaxed))
            ch_->peers[i].bound.store(0, std::memory_order_release);
    }

    LoopFds fds;
    bool ok = open_loop_fds(
        {SIGTERM, SIGUSR1, SIGUSR2}, kTagSignal,
        {{listen_fd_, kTagListen}, {ch_->conn_wake.fd(), kTagWake}, {ch_->death_rd, kTagDeath}},
        &fds, err);
    ep_ = fds.ep;
    sig_fd_ = fds.sig;
    if (!ok) return false;
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    // The counts live in shared memory: a restarted conn carries its predecessor's on.
    st_ = &ch_->stats->conn;
    set(st_->pid, uint64_t(getpid()));
    set(st_->connections, 0);
    clamp_max_conns();
    mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
    set_check_interval();
    return true;
}

// The timeouts are looked at ten times per the shortest of them, at most once a second.
void ConnServer::set_check_interval() {
    uint64_t shortest = UINT64_MAX;
    if (cfg_.idle_timeout > 0) shortest = uint64_t(cfg_.idle_timeout) * 1000;
    if (cfg_.pkg_timeout_ms > 0) shortest = std::min(shortest, uint64_t(cfg_.pkg_timeout_ms));
    if (cfg_.out_buf_soft) shortest = std::min(shortest, uint64_t(cfg_.out_buf_soft_ms));
    check_every_ms_ = shortest == UINT64_MAX ? 0 : std::clamp<uint64_t>(shortest / 10, 50, 1000);
    next_check_ms_ = 0;
    if (check_every_ms_ && live_) {
        // Connections already open may be due: look soon.
        next_check_ms_ = now_ms_ + check_every_ms_;
    }
}

// A reload (the supervisor has checked the file): the client limits change live. The
// plugin conn loaded for get_pkg_len and select_worker stays until conn restarts.
void ConnServer::reload_limits() {
    Config next;
    std::string err;
    if (!load_config(cfg_.path, &next, &err)) {
        log_->write(LogLevel::kError, "reload: %s; keeping the running limits", err.c_str());
        return;
    }
    cfg_.max_conns = next.max_conns;
    cfg_.idle_timeout = next.idle_timeout;
    cfg_.pkg_timeout_ms = next.pkg_timeout_ms;
    cfg_.out_buf_soft = next.out_buf_soft;
    cfg_.out_buf_soft_ms = next.out_buf_soft_ms;
    cfg_.out_buf_hard = next.out_buf_hard;
    cfg_.input_budget = next.input_budget;
    cfg_.busy_poll_us = next.busy_poll_us;
    cfg_.log_level = next.log_level;
    log_->set_level(cfg_.log_level);
    clamp_max_conns();
    set_check_interval();
    uint32_t gen = ch_->state->plugin_generation.load(std::memory_order_acquire);
    if (gen != plugin_generation_) {
        // A new plugin: its get_pkg_len and select_worker from the next packet on. conn calls
        // a plugin only from this loop, so once the pointers are switched nothing of the old
        // one can run: it is unloaded, and reloads do not pile up mapped copies.
        std::string path = ch_->state->plugin_path;  // the supervisor's, not the file's
        auto fresh = std::make_unique<Plugin>();
        if (!fresh->load_fresh(path, &err)) {
            log_->write(LogLevel::kError, "reload: conn keeps its plugin: %s", err.c_str());
        } else if (cfg_.frame == FrameMode::kPlugin && !fresh->exports().get_pkg_len) {
            log_->write(LogLevel::kError, "reload: conn keeps its plugin: %s has no get_pkg_len",
                        path.c_str());
        } else {
            std::unique_ptr<Plugin> old = std::move(plugin_);
            plugin_ = std::move(fresh);
            decoder_.get_pkg_len = plugin_->exports().get_pkg_len;
            old->unload();
            cfg_.plugin = path;
            plugin_generation_ = gen;
            log_->write(LogLevel::kInfo, "reload: conn frames with plugin %s", cfg_.plugin.c_str());
        }
    }
    log_->write(LogLevel::kInfo,
                "reload: limits now max_conns %d, idle_timeout %d s, pkg_timeout %.3g s, "
                "out_buf_soft %zu for %.3g s, out_buf_hard %zu",
                max_conns_, cfg_.idle_timeout, cfg_.pkg_timeout_ms / 1000.0, cfg_.out_buf_soft,
                cfg_.out_buf_soft_ms / 1000.0, cfg_.out_buf_hard);
}

// Every connection costs conn one fd. Make the fd limit fit max_conns, raising the soft limit
// toward the hard one if need be; where even that falls short, lower max_conns and say so.
void ConnServer::clamp_max_conns() {
    max_conns_ = cfg_.max_conns;
    if (size_t(max_conns_) > ch_->npeers) {
        // The connection table was made at start, for 4x the max_conns of then.
        max_conns_ = int(ch_->npeers);
        log_->write(LogLevel::kWarn,
                    "max_conns %d lowered to %d: the connection table made at start holds %zu "
                    "slots; a restart makes room for more",
                    cfg_.max_conns, max_conns_, ch_->npeers);
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
                cfg_.max_conns, max_conns_, (unsigned long long)rl.rlim_cur, own, cfg_.max_conns);
}

int ConnServer::run() {
    std::string err;
    if (!setup(&err)) {
        log_->write(LogLevel::kError, "conn cannot start: %s", err.c_str());
        return 2;
    }
    ch_->note('C', 0);
    check_phase();  // a conn restarted after SIGQUIT must not accept
    log_->write(LogLevel::kDebug, "conn serving %s, %zu workers", cfg_.listen.c_str(),
                ports_.size());
    while (!quit_) {
        int n = wait_events(next_timeout());
        if (n < 0 && errno != EINTR) {
            log_->write(LogLevel::kAlert, "epoll_wait: %s", strerror(errno));
            return 1;
        }
        now_ms_ = monotonic_ms();
        uint64_t moved = get(st_->packets_in) + get(st_->reply_records);
        turn_events(n < 0 ? 0 : n);
        if (quit_) break;
        check_phase();
        close_fatal_bound();
        if (!input_stopped_) {
            for (auto &p : ports_)
                serve_waiting(*p);
        }
        more_ = drain_replies();
        if (get(st_->packets_in) + get(st_->reply_records) != moved)
            last_activity_ns_ = monotonic_ns();
        flush_ports();
        flush_writes();
        check_timeouts();
        if (accept_resume_ms_ && now_ms_ >= accept_resume_ms_) resume_accepting();
        reap();
        resume_starved();
        if (draining_ && drained()) break;
    }
    // Every wakeup write any side made on any ring since the rings were created.
    uint64_t wakeups = 0;
    for (auto &link : ch_->workers) {
        for (shmq::Ring *r : {&link->in, &link->out}) {
            wakeups += r->wakeups() + r->control()->room_wakeups.load(std::memory_order_relaxed);
        }
    }
    log_->write(
        LogLevel::kInfo,
        "conn exiting: accepted=%llu refused=%llu fd_exhausted=%llu bad_frames=%llu "
        "idle_closed=%llu pkg_timeouts=%llu out_buf_closed=%llu out_buf_peak=%llu "
        "stale_replies_dropped=%llu ring_full_pauses=%llu ring_high_water=%zu packets_in=%llu "
        "reply_records=%llu wakeup_writes=%llu input_budget_pauses=%llu input_dropped=%llu "
        "plugin_frame_errors=%llu",
        (unsigned long long)get(st_->accepted), (unsigned long long)get(st_->refused),
        (unsigned long long)get(st_->fd_exhausted), (unsigned long long)get(st_->bad_frames),
        (unsigned long long)get(st_->idle_closed), (unsigned long long)get(st_->pkg_timeouts),
        (unsigned long long)get(st_->out_buf_closed), (unsigned long long)get(st_->out_buf_peak),
        (unsigned long long)get(st_->stale_replies), (unsigned long long)get(st_->ring_full_pauses),
        ring_high_water_, (unsigned long long)get(st_->packets_in),
        (unsigned long long)get(st_->reply_records), (unsigned long long)wakeups,
        (unsigned long long)get(st_->input_budget_pauses),
        (unsigned long long)get(st_->input_dropped),
        (unsigned long long)get(st_->plugin_frame_errors));
    return 0;
}

// Waits for events. Right after a turn that moved packets it polls (sockets and reply rings,
// no sleep) for busy_poll_us first: under load replies and new requests are that close, and
// sleeping would cost a wakeup write on the worker's side and a wakeup on ours.
int ConnServer::wait_events(int timeout) {
    uint64_t poll_ns = uint64_t(cfg_.busy_poll_us) * 1000;
    for (uint64_t now = monotonic_ns();
         !more_ && now - last_activity_ns_ < poll_ns && !cpu_.high(now); now = monotonic_ns()) {
        int n = epoll_wait(ep_, events_, kMaxEvents, 0);
        if (n != 0 || rings_ready()) return n;
        if (!poll_yield()) break;
    }
    int n = epoll_wait(ep_, events_, kMaxEvents, sleep_timeout(timeout));
    for (auto &p : ports_) {
        p->from.withdraw_sleep();
        p->to.finish_wait_room();
    }
    return n;
}

// A reply ring has records, or a ring conn waits on has room.
bool ConnServer::rings_ready() {
    for (auto &p : ports_) {
        if (!p->from.empty()) return true;
        if (!input_stopped_ && (p->reset_pending || !p->waiting.empty()) &&
            p->to.can_push(p->need)) {
            return true;
        }
    }
    return false;
}

// Announces the sleep on every reply ring (and the wait for room on every ring conn is
// blocked on) and returns 0 instead of `wanted` if any of them already has what we wait for.
int ConnServer::sleep_timeout(int wanted) {
    if (more_ || wanted == 0) return 0;
    bool ready = false;
    for (auto &p : ports_) {
        if (!p->from.prepare_sleep()) ready = true;
        if (!input_stopped_ && (p->reset_pending || !p->waiting.empty()) &&
            !p->to.prepare_wait_room(p->need)) {
            ready = true;
        }
    }
    return ready ? 0 : wanted;
}

void ConnServer::turn_events(int n) {
    for (int i = 0; i < n; i++) {
        uint64_t tag = events_[i].data.u64;
        uint32_t ev = events_[i].events;
        if (tag == kTagListen) {
            on_accept();
        } else if (tag == kTagWake) {
            ch_->conn_wake.drain();
        } else if (tag == kTagSignal) {
            struct signalfd_siginfo si;
            while (read(sig_fd_, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGTERM) quit_ = true;
                if (si.ssi_signo == SIGUSR1) {
                    std::string err;
                    if (!log_->reopen(&err)) {
                        log_->write(LogLevel::kError, "reopening the log: %s", err.c_str());
                    }
                }
                if (si.ssi_signo == SIGUSR2) reload_limits();
            }
        } else if (tag == kTagDeath) {
            log_->write(LogLevel::kWarn, "conn: the supervisor is gone; exiting");
            quit_ = true;
        } else {
            auto *c = reinterpret_cast<Connection *>(tag);
            if (c->closed) continue;
            if (ev & (EPOLLERR | EPOLLHUP)) {
                // Read what is left first: a client may send and close at once.
                on_readable(c);
                if (!c->closed) close_conn(c, ASYNCD_DOWN_ERROR);
                continue;
            }
            if (ev & EPOLLIN) on_readable(c);
            if ((ev & EPOLLOUT) && !c->closed) write_out(c);
        }
    }
}

void ConnServer::on_accept() {
    for (int i = 0; i < kAcceptsPerTurn; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN) return;
            shed_connection(errno);
            return;
        }
        if (live_ >= size_t(max_conns_)) {
            close(fd);
            bump(st_->refused);
            log_->write_limited(&refuse_log_, now_ms_, LogLevel::kWarn,
                                "max_conns (%d) reached: refusing new connections", max_conns_);
            continue;
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
            log_->write_limited(&refuse_log_, now_ms_, LogLevel::kWarn,
                                "all %zu connection slots are held (closed connections wait for "
                                "room in a worker's ring): refusing new connections",
                                ch_->npeers);
            continue;
        }
        auto *c = new Connection();
        slots_[slot] = c;
        c->fd = fd;
        c->id = (ch_->state->conn_serial.fetch_add(1) << kConnSlotBits) | slot;
        c->last_active_ms = now_ms_;
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
        if (cfg_.idle_timeout > 0) arm_check();
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.u64 = reinterpret_cast<uint64_t>(c);
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) {
            log_->write(LogLevel::kError, "epoll_ctl(ADD): %s", strerror(errno));
            close_conn(c, ASYNCD_DOWN_ERROR);
            continue;
        }
        c->events = EPOLLIN;
        if (!plugin_->exports().select_worker) {
            c->worker = next_worker();
            ports_[size_t(c->worker)]->conns++;
            note_bound(c);
            c->up_pending = true;
            push_up(c);
            update_events(c);
        }
    }
}

// accept failed for want of something. With the fds gone the listen socket stays readable
// and epoll would wake us for ever: give up the reserve fd to accept one waiting connection
// and close it (its client hears at once instead of waiting), stop watching the listen
// socket for a moment, and say so at most once a second.
void ConnServer::shed_connection(int err) {
    bool no_fds = err == EMFILE || err == ENFILE;
    if (no_fds) {
        bump(st_->fd_exhausted);
        if (reserve_fd_ >= 0) {
            close(reserve_fd_);
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd >= 0) close(fd);
            reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
    }
    bool scarce = no_fds || err == ENOBUFS || err == ENOMEM;
    log_->write_limited(&fd_log_, now_ms_, scarce ? LogLevel::kCrit : LogLevel::kError,
                        "accept: %s; %saccepting again in %d ms", strerror(err),
                        no_fds ? "closed one waiting connection, " : "", kAcceptPauseMs);
    epoll_ctl(ep_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    accept_resume_ms_ = now_ms_ + kAcceptPauseMs;
}

void ConnServer::resume_accepting() {
    accept_resume_ms_ = 0;
    if (reserve_fd_ < 0) reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (input_stopped_ || quiescing_) return;
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagListen;
    epoll_ctl(ep_, EPOLL_CTL_ADD, listen_fd_, &ev);
}

void ConnServer::on_readable(Connection *c) {
    if (c->queued || c->starved || input_stopped_) return;
    size_t max_read = kScratch;
    if (!budget_allows_read(c, &max_read)) return;
    ssize_t n = read(c->fd, scratch_.get(), max_read);
    if (n == 0) {
        close_conn(c, ASYNCD_DOWN_PEER_CLOSED);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo, "read from %s: %s", c->peer_text,
                            strerror(errno));
        close_conn(c, errno == ECONNRESET ? ASYNCD_DOWN_PEER_CLOSED : ASYNCD_DOWN_ERROR);
        return;
    }
    c->last_active_ms = now_ms_;
    bump(st_->bytes_in, uint64_t(n));
    uint64_t packets = c->packets;
    size_t used = 0;
    bool stored = true;
    if (c->in.empty()) {
        // The common case: whole packets go from the scratch buffer straight into the ring,
        // and only a partial or blocked tail is kept.
        feed(c, scratch_.get(), size_t(n), &used);
        if (!c->closed && used < size_t(n)) stored = c->in.append(scratch_.get() + used, n - used);
    } else {
        stored = c->in.append(scratch_.get(), size_t(n));
        if (stored) {
            feed(c, c->in.data(), c->in.size(), &used);
            if (!c->closed) c->in.consume(used);
        }
    }
    if (!stored) {
        log_->write(LogLevel::kCrit, "out of memory buffering input of %s", c->peer_text);
        close_conn(c, ASYNCD_DOWN_LIMIT);
        return;
    }
    if (c->closed) return;
    track_input(c);
    note_partial(c, c->packets != packets);
    update_events(c);
}

// Keeps input_pending_ (and the count of connections holding input) in step with c->in.
// Called after anything that changes c->in.
void ConnServer::track_input(Connection *c) {
    size_t now = c->in.size();
    if (now == c->in_counted) return;
    input_pending_ = input_pending_ + now - c->in_counted;
    if (!c->in_counted) input_holders_++;
    if (!now) input_holders_--;
    c->in_counted = now;
    set(st_->input_pending, input_pending_);
}

// input_budget (R-level: no client can make conn hold more than it): near the budget a
// connection that holds unfinished input is not read while it holds more than the average
// of those that hold some (the ones with the most go first), and above the budget none that
// holds any is read. A connection that holds nothing (its packets were whole) is still read,
// a little at a time, so that well-behaved clients keep being served. The connections not
// read keep their pkg_timeout clock: the ones that never finish are closed by it, which
// brings conn back under the budget, and reading resumes.
bool ConnServer::budget_allows_read(Connection *c, size_t *max_read) {
    size_t budget = cfg_.input_budget;
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
    log_->write_limited(&budget_log_, now_ms_, LogLevel::kWarn,
                        "input_budget (%zu bytes) reached: %zu bytes of %zu connections wait to "
                        "become packets; not reading from the ones holding the most (%s: %zu "
                        "bytes) until the unfinished ones finish or reach pkg_timeout",
                        budget, input_pending_, input_holders_, c->peer_text, c->in.size());
    update_events(c);
    return false;
}

// Below seven eighths of the budget, the connections it stopped are read again.
void ConnServer::resume_starved() {
    if (starved_.empty()) return;
    size_t budget = cfg_.input_budget;
    if (budget && input_pending_ + kScratch > budget - budget / 8) return;
    for (uint64_t id : starved_) {
        uint32_t slot = conn_slot(id);
        Connection *c = slot < slots_.size() ? slots_[slot] : nullptr;
        if (!c || c->id != id || c->closed || !c->starved) continue;
        c->starved = false;
        c->last_active_ms = now_ms_;
        update_events(c);
    }
    starved_.clear();
}

// Runs the whole-packet clock of c while it holds part of a packet that it is still sending
// (not while it waits for room in a ring: that is our doing). `fresh`: a packet completed,
// so what is left began with this read.
void ConnServer::note_partial(Connection *c, bool fresh) {
    if (c->in.empty() || c->queued || cfg_.pkg_timeout_ms <= 0) {
        c->pkg_start_ms = 0;
        return;
    }
    if (fresh || !c->pkg_start_ms) {
        c->pkg_start_ms = now_ms_;
        arm_check();
    }
}

int ConnServer::bind_worker(Connection *c, const uint8_t *pkg, size_t len) {
    int n = int(active_workers());
    int w = plugin_->exports().select_worker(c->id, pkg, len, n);
    // The plugin's choice stands while that worker can come back (a restart keeps the
    // packets in its ring); a slot that never will is no choice.
    if (w < 0 || w >= n || is_fatal(w)) w = next_worker();
    ports_[size_t(w)]->conns++;
    c->worker = w;
    note_bound(c);
    return w;
}

// Round-robin over the workers that serve now: ready, not dead or in back-off, so that a
// crash-looping or fatal slot gets no new clients. With none serving (all restarting), over
// every one that is not fatal: the packets wait in its ring for it.
int ConnServer::next_worker() {
    uint32_t n = active_workers();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            int w = int(next_worker_++ % n);
            if (pass == 0 ? is_serving(w) : !is_fatal(w)) return w;
        }
    }
    return int(next_worker_++ % n);
}

bool ConnServer::is_serving(int w) const {
    return ch_->state->serving[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1;
}

bool ConnServer::is_fatal(int w) const {
    return ch_->state->fatal[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1;
}

// A slot turned fatal: the connections bound to it would wait for ever. They are closed
// (their packets in its ring stay there, and a stop reports them).
void ConnServer::close_fatal_bound() {
    uint32_t gen = ch_->state->fatal_generation.load(std::memory_order_acquire);
    if (gen == fatal_generation_) return;
    fatal_generation_ = gen;
    for (auto &p : ports_) {
        if (!is_fatal(p->index)) continue;
        int closed = 0;
        for (Connection *c : slots_) {
            if (!c || c->closed || c->worker != p->index) continue;
            close_conn(c, ASYNCD_DOWN_ERROR);
            closed++;
        }
        if (closed) {
            log_->write(LogLevel::kWarn,
                        "closed %d connections bound to worker %d, which cannot start (fatal)",
                        closed, p->index);
        }
    }
}

// Tells the workers, through the peer table, that c is open and bound to its worker: one
// that starts links it up at once.
void ConnServer::note_bound(Connection *c) {
    ch_->peers[conn_slot(c->id)].bound.store(uint32_t(c->worker) + 1, std::memory_order_release);
}

bool ConnServer::must_wait(Port &p, Connection *c) {
    if (input_stopped_) return true;
    if (p.reset_pending || (!p.waiting.empty() && p.waiting.front() != c)) {
        enqueue(p, c);
        return true;
    }
    return false;
}

void ConnServer::enqueue(Port &p, Connection *c) {
    if (c->queued) return;
    if (p.waiting.empty() && !p.reset_pending) {
        bump(st_->ring_full_pauses);
        log_->write_limited(&ring_log_, now_ms_, LogLevel::kInfo,
                            "worker %d's ring is full: reading paused for its connections",
                            p.index);
    }
    c->queued = true;
    c->pkg_start_ms = 0;
    p.waiting.push_back(c);
}

bool ConnServer::push_up(Connection *c) {
    if (!c->up_pending) return true;
    Port &p = *ports_[size_t(c->worker)];
    if (must_wait(p, c)) return false;
    shmq::RecordMeta meta;
    meta.type = type_of(ToWorker::kLinkUp);
    meta.conn_id = c->id;
    shmq::PushStatus s = p.to.try_push(meta, &c->peer, sizeof c->peer);
    if (s == shmq::PushStatus::kFull) {
        p.need = sizeof c->peer;
        enqueue(p, c);
        return false;
    }
    if (s != shmq::PushStatus::kOk) {
        log_->write(LogLevel::kAlert, "push of LINK_UP to worker %d failed (%d)", c->worker,
                    int(s));
    }
    c->up_pending = false;
    c->linked = true;
    p.dirty = true;
    return true;
}

bool ConnServer::push_down(Connection *c) {
    Port &p = *ports_[size_t(c->worker)];
    if (must_wait(p, c)) return false;
    shmq::RecordMeta meta;
    meta.type = type_of(ToWorker::kLinkDown);
    meta.conn_id = c->id;
    meta.seq = uint64_t(c->down_reason);
    shmq::PushStatus s = p.to.try_push(meta, nullptr, 0);
    if (s == shmq::PushStatus::kFull) {
        p.need = 0;
        enqueue(p, c);
        return false;
    }
    if (s != shmq::PushStatus::kOk) {
        log_->write(LogLevel::kAlert, "push of LINK_DOWN to worker %d failed (%d)", c->worker,
                    int(s));
    }
    c->linked = false;
    p.dirty = true;
    return true;
}

bool ConnServer::feed(Connection *c, const uint8_t *data, size_t len, size_t *used) {
    while (*used < len) {
        size_t n;
        const char *why = "";
        Frame f = decoder_.decode(c->id, data + *used, len - *used, &n, &why);
        if (f == Frame::kNeedMore) return true;
        if (f == Frame::kError) {
            bump(st_->bad_frames);
            log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo, "closing %s: %s",
                                c->peer_text, why);
            close_conn(c, ASYNCD_DOWN_BAD_FRAME);
            return false;
        }
        if (c->worker < 0) {
            c->worker = bind_worker(c, data + *used, n);
            c->up_pending = true;
        }
        if (!push_up(c)) return false;
        Port &p = *ports_[size_t(c->worker)];
        if (must_wait(p, c)) return false;
        if (p.stream_done && n != c->stream_len) {
            // Part of this packet is in the ring already, framed at another length: the
            // plugin's get_pkg_len answered differently for the same bytes. Its contract is
            // broken, not one of asyncd's invariants: the connection goes, the ring's stream
            // is given up (drive), and everyone else is served on.
            bump(st_->plugin_frame_errors);
            log_->write_limited(&close_log_, now_ms_, LogLevel::kWarn,
                                "closing %s: plugin %s: get_pkg_len answered %zu for a packet it "
                                "had framed as %zu bytes (%zu of them in a ring already); "
                                "get_pkg_len must answer the same for the same bytes",
                                c->peer_text, cfg_.plugin.c_str(), n, c->stream_len, p.stream_done);
            close_conn(c, ASYNCD_DOWN_BAD_FRAME);
            return false;
        }
        shmq::RecordMeta meta;
        meta.type = type_of(ToWorker::kPacket);
        meta.conn_id = c->id;
        meta.seq = c->packets;
        shmq::PushStatus s = p.to.try_push_stream(meta, data + *used, n, &p.stream_done);
        if (s == shmq::PushStatus::kFull) {
            p.need = n - p.stream_done;
            c->stream_len = n;
            enqueue(p, c);
            return false;
        }
        if (s != shmq::PushStatus::kOk) {
            log_->write(LogLevel::kAlert, "push of a %zu-byte packet to worker %d failed (%d)", n,
                        c->worker, int(s));
            close_conn(c, ASYNCD_DOWN_ERROR);
            return false;
        }
        p.stream_done = 0;
        c->stream_len = 0;
        p.dirty = true;
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
void ConnServer::test_hook_after_push(Port &p, const uint8_t *pkg, size_t len) {
#ifdef ASYNCD_TEST_HOOKS
    static const char kMagic[] = "!CORRUPT!";
    uint64_t index = p.to.last_record_index();
    if (len < 4 + sizeof kMagic - 1 || memcmp(pkg + 4, kMagic, sizeof kMagic - 1) != 0 ||
        index == UINT64_MAX) {
        return;
    }
    p.in_ring->data()[(index & (p.in_ring->capacity() - 1)) + 12] ^= 0x40;
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
bool ConnServer::drive(Connection *c) {
    if (!c->closed) {
        if (!push_up(c)) return false;
        size_t used = 0;
        bool ok = feed(c, c->in.data(), c->in.size(), &used);
        if (!c->closed) {
            c->in.consume(used);
            track_input(c);
            if (!ok) return false;
        }
    }
    if (c->closed) {
        c->in.release();
        track_input(c);
        // It went away with a packet half streamed into the ring: that packet was never
        // accepted, and the ring must take other records again.
        Port *p = c->worker >= 0 ? ports_[size_t(c->worker)].get() : nullptr;
        if (p && p->stream_done && !p->waiting.empty() && p->waiting.front() == c) {
            p->to.abort_stream();
            p->stream_done = 0;
        }
        if (c->linked && !push_down(c)) return false;
        schedule_reap(c);
    }
    return true;
}

void ConnServer::serve_waiting(Port &p) {
    if (p.reset_pending) {
        shmq::RecordMeta meta;
        meta.type = type_of(ToWorker::kConnReset);
        if (p.to.try_push(meta, nullptr, 0) != shmq::PushStatus::kOk) return;
        p.reset_pending = false;
        p.dirty = true;
    }
    while (!p.waiting.empty()) {
        Connection *c = p.waiting.front();
        if (!drive(c)) return;
        p.waiting.pop_front();
        c->queued = false;
        if (c->closed) continue;
        c->last_active_ms = now_ms_;  // the time conn did not read it was not idleness
        note_partial(c, true);
        update_events(c);  // its buffer is through: read again
    }
}

void ConnServer::update_events(Connection *c) {
    if (c->closed) return;
    uint32_t want = 0;
    if (!c->queued && !c->starved && !input_stopped_) want |= EPOLLIN;
    if (!c->out.empty()) want |= EPOLLOUT;
    if (want == c->events) return;
    struct epoll_event ev = {};
    ev.events = want;
    ev.data.u64 = reinterpret_cast<uint64_t>(c);
    if (epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->events = want;
}

void ConnServer::close_conn(Connection *c, int reason) {
    if (c->closed) return;
    c->closed = true;
    c->down_reason = reason;
    log_->write(LogLevel::kDebug, "connection %s (%llx) closed: %s", c->peer_text,
                (unsigned long long)c->id, reason_name(reason));
    epoll_ctl(ep_, EPOLL_CTL_DEL, c->fd, nullptr);
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
        log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo,
                            "%s closed (%s) with %zu bytes it had sent not yet handed to a "
                            "worker: dropped",
                            c->peer_text, reason_name(reason), c->in.size());
    }
    if (c->queued) return;  // its turn in the queue pushes the LINK_DOWN
    c->in.release();
    track_input(c);
    if (!c->linked || push_down(c)) schedule_reap(c);
}

void ConnServer::schedule_reap(Connection *c) {
    if (c->reaped) return;
    c->reaped = true;
    reap_.push_back(c);
}

void ConnServer::reap() {
    for (Connection *c : reap_) {
        c->in.release();
        track_input(c);
        if (c->worker >= 0) ports_[size_t(c->worker)]->conns--;
        uint32_t slot = conn_slot(c->id);
        slots_[slot] = nullptr;
        free_slots_.push_back(slot);
        delete c;
    }
    reap_.clear();
}

bool ConnServer::drain_replies() {
    bool more = false;
    for (auto &pp : ports_) {
        Port &p = *pp;
        int count = 0;
        for (; count < kRepliesPerTurn; count++) {
            shmq::Message m;
            shmq::PopStatus s = p.from.peek(&m);
            if (s == shmq::PopStatus::kEmpty) break;
            if (s == shmq::PopStatus::kCorrupt) {
                // The reason first: discard_all() starts clean and forgets it.
                std::string why = p.from.error();
                uint64_t dropped = p.from.discard_all();
                log_->write(LogLevel::kAlert, "reply ring corrupt: %s; dropped %llu bytes",
                            why.c_str(), (unsigned long long)dropped);
                break;
            }
            handle_reply(m);
            p.from.commit();
        }
        if (count == kRepliesPerTurn) more = true;
        if (count) p.from.notify_room();
    }
    return more;
}

void ConnServer::handle_reply(const shmq::Message &m) {
    uint32_t slot = conn_slot(m.conn_id);
    Connection *c = slot < slots_.size() ? slots_[slot] : nullptr;
    if (!c || c->id != m.conn_id || c->closed) {
        bump(st_->stale_replies);
        log_->write(LogLevel::kDebug, "reply for gone connection %llx dropped",
                    (unsigned long long)m.conn_id);
        return;
    }
    if (FromWorker(m.type) == FromWorker::kReply) {
        bump(st_->reply_records);
        if (!output_fits(c, m.len)) return;
        if (!c->out.append(m.data, m.len)) {
            log_->write(LogLevel::kCrit, "out of memory buffering output of %s", c->peer_text);
            close_conn(c, ASYNCD_DOWN_LIMIT);
            return;
        }
        size_t size = c->out.size();
        if (size > get(st_->out_buf_peak)) set(st_->out_buf_peak, size);
        if (cfg_.out_buf_soft && size > cfg_.out_buf_soft && !c->soft_since_ms) {
            c->soft_since_ms = now_ms_;
            arm_check();
        }
    } else if (FromWorker(m.type) == FromWorker::kClose) {
        c->close_after_flush = true;
    } else {
        log_->write(LogLevel::kAlert, "unknown record type %u from worker %d", unsigned(m.type),
                    c->worker);
        return;
    }
    mark_dirty(c);
}

// The hard output limit (redis's client-output-buffer-limit): a client that does not read
// its replies may leave out_buf_hard bytes waiting and no more. A record bigger than that
// still goes into an empty buffer, so the buffer stays within the limit or one record.
bool ConnServer::output_fits(Connection *c, size_t len) {
    size_t hard = cfg_.out_buf_hard;
    if (!hard || c->out.empty() || c->out.size() + len <= hard) return true;
    write_out(c);  // what the socket takes now does not count against it
    if (c->closed) return false;
    if (c->out.empty() || c->out.size() + len <= hard) return true;
    bump(st_->out_buf_closed);
    log_->write_limited(&out_log_, now_ms_, LogLevel::kWarn,
                        "closing %s: output buffer would reach %zu bytes, over out_buf_hard "
                        "(%zu)",
                        c->peer_text, c->out.size() + len, hard);
    close_conn(c, ASYNCD_DOWN_LIMIT);
    return false;
}

void ConnServer::mark_dirty(Connection *c) {
    if (c->dirty) return;
    c->dirty = true;
    dirty_.push_back(c);
}

void ConnServer::flush_writes() {
    for (Connection *c : dirty_) {
        c->dirty = false;
        if (!c->closed) write_out(c);
    }
    dirty_.clear();
}

void ConnServer::write_out(Connection *c) {
    while (!c->out.empty()) {
        ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            c->out.consume(size_t(n));
            bump(st_->bytes_out, uint64_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo, "write to %s: %s", c->peer_text,
                            strerror(errno));
        close_conn(
            c, errno == EPIPE || errno == ECONNRESET ? ASYNCD_DOWN_PEER_CLOSED : ASYNCD_DOWN_ERROR);
        return;
    }
    if (c->soft_since_ms && c->out.size() <= cfg_.out_buf_soft) c->soft_since_ms = 0;
    if (c->out.empty() && c->close_after_flush) {
        close_conn(c, ASYNCD_DOWN_PLUGIN_CLOSE);
        return;
    }
    update_events(c);
}

void ConnServer::flush_ports() {
    for (auto &p : ports_) {
        if (!p->dirty) continue;
        p->dirty = false;
        p->to.flush();
        size_t used = p->in_ring->capacity() - p->to.free_bytes();
        ring_high_water_ = std::max(ring_high_water_, used);
        if (used > p->high_water) {  // rarely: the line is the worker's to write
            p->high_water = used;
            set(ch_->stats->workers[p->index].ring_high_water, used);
        }
    }
}

void ConnServer::arm_check() {
    if (check_every_ms_ && !next_check_ms_) next_check_ms_ = now_ms_ + check_every_ms_;
}

// idle_timeout, pkg_timeout and out_buf_soft_seconds. Looks only while some connection
// could trip one of them, so an idle conn sleeps.
void ConnServer::check_timeouts() {
    if (!next_check_ms_ || now_ms_ < next_check_ms_) return;
    next_check_ms_ = 0;
    uint64_t idle = cfg_.idle_timeout > 0 ? uint64_t(cfg_.idle_timeout) * 1000 : 0;
    uint64_t pkg = uint64_t(std::max(cfg_.pkg_timeout_ms, 0));
    bool again = false;
    for (Connection *c : slots_) {
        if (!c || c->closed) continue;
        // Not idle while conn itself does not read it (its worker's ring is full, or
        // input_budget): backpressure is not idleness.
        if (idle && !c->queued && !c->starved && now_ms_ - c->last_active_ms >= idle) {
            bump(st_->idle_closed);
            log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo, "closing %s: idle for %d s",
                                c->peer_text, cfg_.idle_timeout);
            close_conn(c, ASYNCD_DOWN_IDLE);
        } else if (pkg && c->pkg_start_ms && now_ms_ - c->pkg_start_ms >= pkg) {
            bump(st_->pkg_timeouts);
            log_->write_limited(&close_log_, now_ms_, LogLevel::kInfo,
                                "closing %s: no whole packet within pkg_timeout (%.3g s; %zu "
                                "bytes of it came)",
                                c->peer_text, double(pkg) / 1000, c->in.size());
            close_conn(c, ASYNCD_DOWN_LIMIT);
        } else if (c->soft_since_ms &&
                   now_ms_ - c->soft_since_ms >= uint64_t(cfg_.out_buf_soft_ms)) {
            bump(st_->out_buf_closed);
            log_->write_limited(&out_log_, now_ms_, LogLevel::kWarn,
                                "closing %s: output buffer over out_buf_soft (%zu) for %.3g s "
                                "(%zu bytes)",
                                c->peer_text, cfg_.out_buf_soft,
                                double(now_ms_ - c->soft_since_ms) / 1000, c->out.size());
            close_conn(c, ASYNCD_DOWN_LIMIT);
        } else if (idle || c->pkg_start_ms || c->soft_since_ms) {
            again = true;
        }
    }
    if (again) arm_check();
}

// epoll_wait's timeout: until the next timeout check or the end of an accept pause.
int ConnServer::next_timeout() {
    uint64_t next = next_check_ms_;
    if (accept_resume_ms_ && (!next || accept_resume_ms_ < next)) next = accept_resume_ms_;
    if (!next) return -1;
    uint64_t now = monotonic_ms();
    return next <= now ? 0 : int(std::min<uint64_t>(next - now, 60000));
}

void ConnServer::check_phase() {
    auto phase = Phase(ch_->state->phase.load(std::memory_order_acquire));
    if (phase >= Phase::kStopInput && !input_stopped_) {
        // Stop taking input: what is already in the rings is answered, what is still in
        // conn's own buffers was never accepted and is dropped with its connection.
        input_stopped_ = true;
        epoll_ctl(ep_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        for (Connection *c : slots_) {
            if (c && !c->closed) update_events(c);
        }
        // Packets pushed this turn are accepted: publish them before saying input has
        // stopped, or a worker told to drain could find its ring empty and leave them.
        flush_ports();
        ch_->note('I', 0);
    }
    if (phase == Phase::kDrainOutput) draining_ = true;
    if (!quiescing_ && ch_->state->quiesce.load(std::memory_order_acquire)) {
        quiescing_ = true;  // SIGQUIT: serve who is here, take nobody new
        epoll_ctl(ep_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        // New clients are refused at once rather than left waiting in the backlog.
        shutdown(listen_fd_, SHUT_RD);
    }
    // A retiring worker (a reload lowered `workers`) stops once its last client is gone.
    uint32_t active = active_workers();
    for (auto &p : ports_) {
        if (uint32_t(p->index) < active) {
            p->retire_noted = false;
        } else if (!p->retire_noted && p->conns == 0) {
            p->retire_noted = true;
            ch_->note('R', p->index);
        }
    }
    if (quiescing_ && !quiet_noted_ && live_ == 0) {
        quiet_noted_ = true;
        ch_->note('Q', 0);
    }
}

// The stop is through when no worker has a reply left and every connection has written
// everything it was given.
bool ConnServer::drained() {
    if (more_) return false;
    for (auto &p : ports_) {
        if (!p->from.empty()) return false;
    }
    for (Connection *c : slots_) {
        if (c && !c->closed && !c->out.empty()) return false;
    }
    return true;
}

}  // namespace asyncd::conn
