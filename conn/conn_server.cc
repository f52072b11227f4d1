#include "conn/conn_server.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>

#include "core/clock.h"
#include "core/loop_fds.h"

namespace asyncd::conn {

namespace {

// Buffers above this are mapped on their own and unmapped when freed, so that what a slow
// reader made conn take goes back to the system (glibc's sliding threshold would keep them).
constexpr int kMmapThreshold = 128 << 10;

}  // namespace

const char *phase_name(ConnPhase p) {
    switch (p) {
        case ConnPhase::kServing:
            return "serving";
        case ConnPhase::kQuiescing:
            return "quiescing";
        case ConnPhase::kInputStopped:
            return "input stopped";
        case ConnPhase::kDraining:
            return "draining";
        case ConnPhase::kDone:
            return "done";
    }
    return "?";
}

ConnServer::ConnServer(const Config &cfg, Channels *ch, int listen_fd, int node_fd, Log *log)
    : cfg_(cfg),
      ch_(ch),
      listen_fd_(listen_fd),
      log_(log),
      node_fd_(node_fd),
      signal_handler_([this](uint32_t) { on_signal(); }),
      wake_handler_([this](uint32_t) { ch_->conn_wake.drain(); }),
      death_handler_([this](uint32_t) {
          log_->write(LogLevel::kWarn, "conn: the supervisor is gone; exiting");
          quit_ = true;
      }) {}

ConnServer::~ConnServer() {
    nodes_.reset();
    clients_.reset();  // its connections leave the loop before the loop goes
    if (sig_fd_ >= 0) close(sig_fd_);
}

bool ConnServer::setup(std::string *err) {
    plugin_generation_ = ch_->state->plugin_generation.load(std::memory_order_acquire);
    // A private copy: a plugin file written over in place (cp new.so plugin.so) must not
    // change the code conn runs, nor what dlclose runs when a reload replaces it.
    if (!plugin_->load_fresh(cfg_.plugin, err)) return false;
    if (cfg_.frame == FrameMode::kPlugin && !plugin_->exports().get_pkg_len) {
        *err = "frame plugin needs get_pkg_len, and plugin " + cfg_.plugin + " does not export it";
        return false;
    }
    // The counts live in shared memory: a restarted conn carries its predecessor's on.
    st_ = &ch_->stats->conn;
    set(st_->pid, uint64_t(getpid()));
    set(st_->connections, 0);
    bool restarted = ch_->state->conn_epoch.load() > 1;
    for (size_t i = 0; i < ch_->workers.size(); i++) {
        WorkerLink &link = *ch_->workers[i];
        ports_.push_back(std::make_unique<Port>(int(i), &link.in, &link.out, &link.wake,
                                                &ch_->conn_wake, st_, &ch_->stats->workers[i],
                                                log_));
        // Only the slots that run: a slot that never started has no connections to forget,
        // and a record in its ring would make a stop start a worker to answer it.
        if (restarted && i < ch_->active_workers()) ports_.back()->owe_reset();
    }
    // A restarted conn knows nothing of its predecessor's connections: none is open now. Their
    // peers stay, for the records of theirs still in the rings.
    size_t used = ch_->state->slots_used.load(std::memory_order_acquire);
    for (size_t i = 0; i < used && i < ch_->npeers; i++) {
        if (ch_->peers[i].bound.load(std::memory_order_relaxed))
            ch_->peers[i].bound.store(0, std::memory_order_release);
    }

    sig_fd_ = open_signal_fd({SIGTERM, SIGUSR1, SIGUSR2}, err);
    if (sig_fd_ < 0 || !loop_.open(err)) return false;
    if (!loop_.add(sig_fd_, EPOLLIN, &signal_handler_) ||
        !loop_.add(ch_->conn_wake.fd(), EPOLLIN, &wake_handler_) ||
        !loop_.add(ch_->death_rd, EPOLLIN, &death_handler_)) {
        *err = std::string("epoll_ctl(ADD): ") + strerror(errno);
        return false;
    }
    clients_ = std::make_unique<Clients>(&cfg_, ch_, log_, &loop_, &ports_, listen_fd_);
    clients_->set_plugin(plugin_->exports());
    if (!clients_->open(err)) return false;
    // Without a cluster file too: a worker's calls to "." go through it.
    nodes_ = std::make_unique<Nodes>(&cfg_, ch_, &loop_, &ports_, node_fd_, st_, log_);
    if (!nodes_->open(err)) return false;
    clients_->set_node_handler(
        [this](int w, const shmq::Message &m) { nodes_->from_worker(w, m); });
    mallopt(M_MMAP_THRESHOLD, kMmapThreshold);

    // The turn: events, then after_events (the rings and the writes), the timers (timeouts,
    // the accept pause), end_of_turn (reap). Around the wait, the rings' sleep protocol.
    loop_.set_busy_poll_us(cfg_.busy_poll_us, cfg_.busy_poll_contended_us);
    loop_.cpu().share_poll_time(&ch_->state->poll_ns);
    loop_.cpu().count_own(&ch_->stats->conn.busy_poll_ns);
    loop_.on_after_events([this] { after_events(); });
    loop_.on_end_of_turn([this] { end_of_turn(); });
    loop_.on_may_sleep([this](int) { return may_sleep(); });
    loop_.on_after_wake([this] {
        for (auto &p : ports_)
            p->after_wake();
    });
    loop_.on_ready([this] {
        for (auto &p : ports_) {
            if (p->ready(!clients_->input_stopped())) return true;
        }
        return false;
    });
    return true;
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
    while (!quit_ && phase_ != ConnPhase::kDone) {
        if (!loop_.turn()) {
            log_->write(LogLevel::kAlert, "epoll_wait: %s", strerror(errno));
            return 1;
        }
        if (nodes_->refused()) return kExitFatal;  // said in one CRIT line; not restarted
    }
    log_exit();
    return 0;
}

// Announces the sleep on every reply ring (and the wait for room on every ring conn is
// blocked on); false if any of them already has what we wait for.
bool ConnServer::may_sleep() {
    bool ready = false;
    for (auto &p : ports_) {
        if (!p->prepare_sleep(!clients_->input_stopped())) ready = true;
    }
    return !ready;
}

void ConnServer::after_events() {
    if (quit_) return;
    check_phase();
    close_fatal_bound();
    more_ = clients_->serve();
    nodes_->flush();
    // Records the links' frames gave the workers this turn.
    for (auto &p : ports_)
        p->flush();
    loop_.set_more(more_);
    // A turn that moved packets (in its reads, or from the waiters) or replies opens the
    // busy-poll window.
    if (moved() != moved_mark_) loop_.note_work(monotonic_ns());
}

void ConnServer::end_of_turn() {
    moved_mark_ = moved();
    clients_->end_turn();
    nodes_->end_turn();
    if (phase_ == ConnPhase::kDraining && drained()) set_phase(ConnPhase::kDone);
}

void ConnServer::on_signal() {
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
}

// A reload, or one sent back: the client limits change live to the supervisor's validated
// snapshot (conn never reads the file), and a new plugin's get_pkg_len and select_worker
// take over from the next packet on.
void ConnServer::reload_limits() {
    LiveLimits v;
    ch_->state->limits.read(&v);
    LiveLimitsSlot::apply(v, &cfg_);
    log_->set_level(cfg_.log_level);
    loop_.set_busy_poll_us(cfg_.busy_poll_us, cfg_.busy_poll_contended_us);
    clients_->limits_changed();
    nodes_->reload_cluster();
    reload_plugin();
    log_->write(LogLevel::kInfo,
                "reload: limits now max_conns %d, idle_timeout %d s, pkg_timeout %.3g s, "
                "out_buf_soft %zu for %.3g s, out_buf_hard %zu",
                clients_->max_conns(), cfg_.idle_timeout, cfg_.pkg_timeout_ms / 1000.0,
                cfg_.out_buf_soft, cfg_.out_buf_soft_ms / 1000.0, cfg_.out_buf_hard);
}

// conn calls a plugin only from this loop, so once the pointers are switched nothing of the
// old one can run: it is unloaded, and reloads do not pile up mapped copies.
void ConnServer::reload_plugin() {
    uint32_t gen = ch_->state->plugin_generation.load(std::memory_order_acquire);
    if (gen == plugin_generation_) return;
    std::string path = ch_->state->plugin_path;  // the supervisor's, not the file's
    std::string err;
    auto fresh = std::make_unique<Plugin>();
    if (!fresh->load_fresh(path, &err)) {
        log_->write(LogLevel::kError, "reload: conn keeps its plugin: %s", err.c_str());
        return;
    }
    if (cfg_.frame == FrameMode::kPlugin && !fresh->exports().get_pkg_len) {
        log_->write(LogLevel::kError, "reload: conn keeps its plugin: %s has no get_pkg_len",
                    path.c_str());
        return;
    }
    std::unique_ptr<Plugin> old = std::move(plugin_);
    plugin_ = std::move(fresh);
    clients_->set_plugin(plugin_->exports());
    old->unload();
    cfg_.plugin = path;
    plugin_generation_ = gen;
    log_->write(LogLevel::kInfo, "reload: conn frames with plugin %s", cfg_.plugin.c_str());
}

// The one place conn's phase changes.
void ConnServer::set_phase(ConnPhase p) {
    if (p <= phase_) return;
    log_->write(LogLevel::kDebug, "conn: %s -> %s", phase_name(phase_), phase_name(p));
    phase_ = p;
}

// Follows the supervisor: a stop's steps, SIGQUIT, and the workers a reload retired.
void ConnServer::check_phase() {
    auto stop = Phase(ch_->state->phase.load(std::memory_order_acquire));
    if (stop >= Phase::kStopInput && phase_ < ConnPhase::kInputStopped) {
        clients_->stop_input();
        nodes_->stop();  // GOAWAY: the peers send no new calls
        set_phase(ConnPhase::kInputStopped);
        // Packets pushed this turn are accepted: publish them before saying input has
        // stopped, or a worker told to drain could find its ring empty and leave them.
        for (auto &p : ports_)
            p->flush();
        ch_->note('I', 0);
    }
    if (stop == Phase::kDrainOutput && phase_ < ConnPhase::kDraining) {
        set_phase(ConnPhase::kDraining);
        // Clients that do not read their answers must not hold the stop past its deadline:
        // a little before the supervisor would kill conn, they are closed, said in one line.
        uint64_t deadline = ch_->state->stop_deadline_ms.load(std::memory_order_acquire);
        uint64_t margin = std::min<uint64_t>(1000, uint64_t(cfg_.shutdown_timeout) * 200);
        uint64_t now = monotonic_ms();
        uint64_t in = deadline > now + margin ? deadline - now - margin : 0;
        loop_.add_timer(uint32_t(std::min<uint64_t>(in, UINT32_MAX)),
                        [this] { clients_->abandon_unwritten(); });
    }
    if (ch_->state->quiesce.load(std::memory_order_acquire)) {
        clients_->stop_accepting();  // SIGQUIT: serve who is here, take nobody new
        set_phase(ConnPhase::kQuiescing);
        if (!quiet_noted_ && clients_->live() == 0) {
            quiet_noted_ = true;
            ch_->note('Q', 0);
        }
    }
    check_retirements();
}

// A retiring worker (a reload lowered `workers`) stops once its last client is gone.
void ConnServer::check_retirements() {
    uint32_t active = ch_->active_workers();
    for (auto &p : ports_) {
        if (uint32_t(p->index()) < active) {
            p->retire_noted = false;
        } else if (!p->retire_noted && p->conns == 0) {
            p->retire_noted = true;
            ch_->note('R', p->index());
        }
    }
}

// A slot turned fatal: the connections bound to it would wait for ever.
void ConnServer::close_fatal_bound() {
    uint32_t gen = ch_->state->fatal_generation.load(std::memory_order_acquire);
    if (gen == fatal_generation_) return;
    fatal_generation_ = gen;
    for (auto &p : ports_) {
        int w = p->index();
        if (ch_->state->fatal[w / 64].load(std::memory_order_acquire) >> (w % 64) & 1)
            clients_->close_bound_to(w);
    }
}

// The stop is through when no worker has a reply left and every connection has written
// everything it was given.
bool ConnServer::drained() {
    if (more_) return false;
    for (auto &p : ports_) {
        if (!p->from().empty()) return false;
    }
    return clients_->all_written() && nodes_->written();
}

void ConnServer::log_exit() {
    // Every wakeup write any side made on any ring since the rings were created.
    uint64_t wakeups = 0;
    for (auto &link : ch_->workers) {
        for (shmq::Ring *r : {&link->in, &link->out}) {
            wakeups += r->wakeups() + r->control()->room_wakeups.load(std::memory_order_relaxed);
        }
    }
    size_t high_water = 0;
    for (auto &p : ports_)
        high_water = std::max(high_water, p->high_water());
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
        high_water, (unsigned long long)get(st_->packets_in),
        (unsigned long long)get(st_->reply_records), (unsigned long long)wakeups,
        (unsigned long long)get(st_->input_budget_pauses),
        (unsigned long long)get(st_->input_dropped),
        (unsigned long long)get(st_->plugin_frame_errors));
}

}  // namespace asyncd::conn
