#include "work/worker.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "core/clock.h"
#include "core/loop_fds.h"
#include "work/in_callback.h"

namespace asyncd::work {

namespace {

constexpr int kBatch = 256;    // records per drain before timers and proc_events run
constexpr int kHandOver = 16;  // records after which a drain publishes its replies
constexpr int kTickMs = 100;   // proc_events runs at least this often
constexpr uint64_t kTagWake = 1;
constexpr uint64_t kTagSignal = 2;
constexpr uint64_t kTagDeath = 3;

Worker *g_worker = nullptr;

// Inside a callback, a wait that is not the plugin's doing (room in the reply ring, which
// conn makes): the clock stops for it and goes on from where it was.
class PauseCallbackClock {
  public:
    explicit PauseCallbackClock(WorkerState *s)
        : s_(s), since_(s->busy_since_ms.load(std::memory_order_relaxed)), paused_(coarse_ms()) {
        if (since_) s_->busy_since_ms.store(0, std::memory_order_relaxed);
    }
    ~PauseCallbackClock() {
        if (since_) {
            s_->busy_since_ms.store(since_ + (coarse_ms() - paused_), std::memory_order_relaxed);
        }
    }
    PauseCallbackClock(const PauseCallbackClock &) = delete;
    PauseCallbackClock &operator=(const PauseCallbackClock &) = delete;

  private:
    WorkerState *s_;
    uint64_t since_;
    uint64_t paused_;
};

// The strike rule: a record that two workers died on is not handed to a third.
constexpr uint64_t kQuarantineAttempts = 3;

}  // namespace

// This process's first call id: random high bits, so that a replacement's ids never meet
// the ones its predecessor made (a late answer to one of those is dropped, not misdelivered).
uint64_t first_call_id() {
    uint64_t r = monotonic_ns() ^ (uint64_t(getpid()) << 17);
    r ^= r >> 31;
    r *= 0x9e3779b97f4a7c15ULL;
    return ((r >> 33) << 32) | 1;
}

Worker *current_worker() {
    return g_worker;
}

Worker::Worker(const Config &cfg, Channels *ch, int index, Log *log)
    : cfg_(cfg),
      ch_(ch),
      index_(index),
      log_(log),
      link_(ch->workers[size_t(index)].get()),
      state_(&ch->state->workers[index]),
      stats_(&ch->stats->workers[index]),
      in_(&link_->in, &link_->wake, &ch->conn_wake),
      out_(&link_->out, &ch->conn_wake),
      calls_(first_call_id(), cfg.cluster ? cfg.cluster->pending_max : 100000) {
    busy_poll_us_ = cfg_.busy_poll_us;
    busy_poll_contended_us_ = cfg_.busy_poll_contended_us;
    call_timeout_ms_ = cfg_.cluster ? cfg_.cluster->call_timeout_ms : 5000;
    cpu_.share_poll_time(&ch->state->poll_ns);
    cpu_.count_own(&stats_->busy_poll_ns);
    callback_timer_.timing = worker_timing(ch->stats, index);
    callback_timer_.ns_per_tick_q32 = ch->stats->ns_per_tick_q32;
    if (cfg_.handler_timing) timing_ = &callback_timer_;
    callback_timer_.seed(uint32_t(cfg_.handler_timing), ticks() ^ uint64_t(getpid()) << 32);
    calls_.set_invoker(&Worker::invoke_call_done, this);
}

Worker::~Worker() {
    if (ep_ >= 0) close(ep_);
    if (sig_fd_ >= 0) close(sig_fd_);
}

bool Worker::setup(std::string *err) {
    LoopFds fds;
    bool ok = open_loop_fds({SIGTERM, SIGUSR1, SIGUSR2}, kTagSignal,
                            {{link_->wake.fd(), kTagWake}, {ch_->death_rd, kTagDeath}}, &fds, err);
    ep_ = fds.ep;
    sig_fd_ = fds.sig;
    return ok;
}

int Worker::run() {
    g_worker = this;
    std::string err;
    if (!setup(&err)) {
        log_->write(LogLevel::kError, "worker %d cannot start: %s", index_, err.c_str());
        return 1;
    }
    if (!plugin_.load(cfg_.plugin, &err)) {
        log_->write(LogLevel::kError, "%s", err.c_str());
        return 2;
    }
    resume_predecessor();
    // conn answers WORKER_DIED for the node calls a predecessor took and never answered.
    push_node(FromWorker::kNodeReset, 0, in_.position(), std::string(), nullptr, 0);
    out_.flush();
    const PluginExports &fns = plugin_.exports();
    if (fns.init_service) {
        InCallback in(state_, Callback::kInit, timing_);
        int rc = fns.init_service(index_);
        if (rc != 0) {
            log_->write(LogLevel::kError, "init_service(%d) returned %d: worker not started",
                        index_, rc);
            return 2;
        }
    }
    if (cfg_.worker_max_rss && rss_bytes() > cfg_.worker_max_rss) {
        // Over the cap before the first packet: every replacement would be too, and would be
        // recycled for ever. That is the config's fault, said once.
        log_->write(LogLevel::kError,
                    "worker %d: RSS %zu KiB right after init_service is above worker_max_rss "
                    "%zu KiB: raise worker_max_rss; worker not started",
                    index_, rss_bytes() >> 10, cfg_.worker_max_rss >> 10);
        if (fns.fini_service) {
            InCallback in(state_, Callback::kFini, timing_);
            fns.fini_service(index_);
        }
        return kExitFatal;
    }
    link_up_bound();
    limits_seq_ = ch_->state->limits.seq();
    ch_->note('W', index_);
    unsigned busy_turns = 0;
    while (!orphaned_) {
        // A reload's live limits first: the records drained next are served with them.
        if (ch_->state->limits.seq() != limits_seq_) {
            LiveLimits v;
            limits_seq_ = ch_->state->limits.read(&v);
            log_->set_level(LogLevel(v.log_level));  // a reload's log_level, or its undoing
            busy_poll_us_ = v.busy_poll_us;
            busy_poll_contended_us_ = v.busy_poll_contended_us;
            call_timeout_ms_ = v.call_timeout_ms;
            calls_.set_max_pending(size_t(v.pending_max));
        }
        int done = drain(kBatch);
        if (done) check_rss();
        // Replies first, then the requests they answer: see WorkerState::progress.
        out_.flush();
        if (done) {
            in_.commit_advanced();
            in_.notify_room();
            last_work_ns_ = monotonic_ns();
        }
        timers_.run(monotonic_ms(), [this](Timers::Fn fn, void *arg) {
            InCallback in(state_, Callback::kTimer, timing_);
            fn(arg);
        });
        run_calls();
        if (fns.proc_events) {
            InCallback in(state_, Callback::kEvents, timing_);
            fns.proc_events();
        }
        out_.flush();
        in_.commit_advanced();
        set(stats_->ring_depth, in_.backlog());
        check_rss();
        if (!stopping_ && ch_->state->workers_stop.load(std::memory_order_acquire)) {
            stopping_ = true;  // started during a stop: drain, and stop
        }
        // A stop outranks a recycle: the ring is answered first (the stop does not start a
        // replacement to do it).
        if (stopping_ && exit_code_ == kExitRecycle) exit_code_ = 0;
        if (exit_code_) break;
        if (stopping_ && in_.empty() && !holding_requests() && !awaiting_calls()) break;
        if (done < kBatch) {
            sleep_until_work();
        } else if (++busy_turns % 64 == 0) {
            poll_events(0);  // a worker that never sleeps still hears signals
        }
    }
    if (orphaned_) return 0;
    if (exit_code_ == 1) return 1;  // a corrupt ring: restart without trusting this process
    {
        // Every node_call gets its callback in the process that made it: those still out
        // end STOPPING.
        calls_.fail_all(ASYNCD_NODE_STOPPING);
        calls_.run(monotonic_ms(), ASYNCD_NODE_TIMEOUT);
    }
    out_.flush();
    // Every link_up gets its link_down in the process that made it: connections still open
    // at the stop end here. A recycled worker's connections live on, and its replacement
    // links them up again as it starts.
    if (fns.link_down_cli) {
        int reason = exit_code_ == kExitRecycle ? ASYNCD_DOWN_WORKER_RESTART : ASYNCD_DOWN_SHUTDOWN;
        for (uint64_t conn : live_) {
            InCallback in(state_, Callback::kLinkDown, timing_);
            fns.link_down_cli(conn, reason);
        }
    }
    live_.clear();
    last_live_ = 0;
    if (fns.fini_service) {
        InCallback in(state_, Callback::kFini, timing_);
        fns.fini_service(index_);
    }
    out_.flush();
    return exit_code_;
}

// Blocks until the ring has a record, a timer is due, a tick passes or a signal comes.
// Right after work it first polls the ring for busy_poll_us: under load the next record
// is usually that close, and a sleep would cost conn a wakeup write and us a wakeup.
void Worker::sleep_until_work() {
    uint64_t start = monotonic_ns();
    uint64_t poll_ns = cpu_.window(start, last_work_ns_, uint64_t(busy_poll_us_) * 1000,
                                   uint64_t(busy_poll_contended_us_) * 1000);
    if (cpu_.poll(start, last_work_ns_, poll_ns, [this] { return !in_.empty(); })) return;
    uint64_t now = monotonic_ms();
    int64_t next = timers_.next_in(now);
    uint64_t call_at;
    if (calls_.next_deadline_ms(&call_at)) {
        int64_t in = call_at <= now ? 0 : int64_t(call_at - now);
        if (next < 0 || in < next) next = in;
    }
    int timeout = (next >= 0 && next < kTickMs) ? int(next) : kTickMs;
    if (!in_.prepare_sleep()) return;
    poll_events(timeout);
    in_.withdraw_sleep();
}

void Worker::poll_events(int timeout) {
    struct epoll_event events[4];
    int n = epoll_wait(ep_, events, 4, timeout);
    for (int i = 0; i < n; i++) {
        if (events[i].data.u64 == kTagWake) {
            link_->wake.drain();
        } else if (events[i].data.u64 == kTagSignal) {
            struct signalfd_siginfo si;
            while (read(sig_fd_, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGTERM) stopping_ = true;
                if (si.ssi_signo == SIGUSR1) reopen_log();
                if (si.ssi_signo == SIGUSR2 && !exit_code_) {
                    // A reload with a new plugin: finish this batch, hand over, restart.
                    log_->write(LogLevel::kInfo, "worker %d: restarting for a reload", index_);
                    exit_code_ = kExitRecycle;
                }
            }
        } else if (events[i].data.u64 == kTagDeath) {
            orphaned_ = true;
        }
    }
}

int Worker::drain(int budget) {
    int n = 0;
    for (; n < budget; n++) {
        shmq::Message m;
        shmq::PopStatus s = in_.peek(&m);
        if (s == shmq::PopStatus::kEmpty) break;
        if (s == shmq::PopStatus::kCorrupt) {
            // Nothing in the ring past this point can be trusted: drop it, and restart so
            // that nothing of this process's state is trusted either.
            // The reason first: discard_all() starts clean and forgets it.
            std::string why = in_.error();
            uint64_t dropped = in_.discard_all();
            log_->write(LogLevel::kAlert,
                        "worker %d: request ring corrupt (%s); dropped %llu bytes, restarting",
                        index_, why.c_str(), (unsigned long long)dropped);
            exit_code_ = 1;
            break;
        }
        uint64_t attempts = in_.mark_in_flight();
        if (attempts >= kQuarantineAttempts) {
            quarantine(m, attempts);
        } else if (ToWorker(m.type) >= ToWorker::kNodeRequest) {
            dispatch_node(m, attempts);
        } else {
            dispatch(m);
        }
        in_.advance();
        note_progress();
        // Hand a long batch's first answers over while the rest is served: conn starts on
        // them at once instead of waiting for the whole batch (a convoy through the stages).
        if ((n & (kHandOver - 1)) == kHandOver - 1) out_.flush();
    }
    return n;
}

// A record two workers died on: logged, skipped, and its connection closed, so that one
// poisonous packet cannot keep a worker slot in a crash loop.
void Worker::quarantine(const shmq::Message &m, uint64_t attempts) {
    bump(stats_->quarantined);
    log_->write(
        LogLevel::kWarn,
        "worker %d: quarantined record type %u seq %llu of connection %llx: %llu "
        "workers started on it and %llu died; closing the connection",
        index_, unsigned(m.type),
        (unsigned long long)(ToWorker(m.type) == ToWorker::kPacket ? packet_count(m.seq) : m.seq),
        (unsigned long long)m.conn_id, (unsigned long long)attempts,
        (unsigned long long)(attempts - 1));
    if (ToWorker(m.type) == ToWorker::kPacket || ToWorker(m.type) == ToWorker::kLinkUp) {
        close_conn(m.conn_id);
    }
    forget_live(m.conn_id);
}

void Worker::note_progress() {
    uint32_t slot = 1 - state_->progress_slot.load(std::memory_order_relaxed);
    state_->progress[slot].in_next.store(in_.position(), std::memory_order_relaxed);
    state_->progress[slot].out_written.store(out_.written(), std::memory_order_relaxed);
    state_->progress[slot].out_last.store(out_.last_record_index(), std::memory_order_relaxed);
    state_->progress[slot].out_last_len.store(out_.last_record_len(), std::memory_order_relaxed);
    state_->progress_slot.store(slot, std::memory_order_release);
}

// A predecessor that died in mid-batch answered requests it did not commit and wrote
// replies it did not publish: publish those replies and skip those requests, so that only
// the record it was on when it died comes again.
void Worker::resume_predecessor() {
    const WorkerProgress &p =
        state_->progress[state_->progress_slot.load(std::memory_order_acquire)];
    uint64_t in_next = p.in_next.load(std::memory_order_relaxed);
    uint64_t out_written = p.out_written.load(std::memory_order_relaxed);
    uint64_t out_last = p.out_last.load(std::memory_order_relaxed);
    auto out_last_len = uint32_t(p.out_last_len.load(std::memory_order_relaxed));
    uint64_t from = in_.position();
    bool adopted = out_.adopt(out_written, out_last, out_last_len);
    bool skipped = in_next > from && in_.skip_to(in_next);
    if (adopted || skipped) {
        log_->write(LogLevel::kInfo,
                    "worker %d: took over from its predecessor: %s replies it had written, "
                    "skipped %llu bytes of requests it had answered",
                    index_, adopted ? "published" : "no",
                    (unsigned long long)(skipped ? in_next - from : 0));
    }
    note_progress();
}

void Worker::reopen_log() {
    std::string err;
    if (!log_->reopen(&err)) log_->write(LogLevel::kError, "reopening the log: %s", err.c_str());
}

// This process's resident set, 0 if /proc cannot say.
size_t Worker::rss_bytes() {
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return got == 2 ? size_t(resident) * size_t(sysconf(_SC_PAGESIZE)) : 0;
}

void Worker::check_rss() {
    if (cfg_.worker_max_rss == 0 || stopping_ || exit_code_) return;  // said once
    uint64_t now = monotonic_ms();
    if (now < next_rss_check_ms_) return;
    next_rss_check_ms_ = now + 1;  // after each batch, at most once a millisecond
    size_t rss = rss_bytes();
    if (rss <= cfg_.worker_max_rss) return;
    log_->write(LogLevel::kWarn, "worker %d: RSS %zu KiB above worker_max_rss %zu KiB: recycling",
                index_, rss >> 10, cfg_.worker_max_rss >> 10);
    exit_code_ = kExitRecycle;
}

// As it starts, before any record: link_up_cli for every open connection bound to this
// worker, so that a replacement (after a crash, a reload or a recycle) knows the quiet
// connections too, not only the ones that send. A LINK_UP of one of them still in the ring
// comes again and is skipped; its LINK_DOWN, when it comes, gets the link_down_cli.
void Worker::link_up_bound() {
    const PluginExports &fns = plugin_.exports();
    uint32_t me = uint32_t(index_) + 1;
    int linked = 0;
    size_t used = ch_->state->slots_used.load(std::memory_order_acquire);
    for (size_t i = 0; i < used && i < ch_->npeers; i++) {
        const PeerSlot &ps = ch_->peers[i];
        if (ps.bound.load(std::memory_order_acquire) != me) continue;
        uint64_t conn = ps.conn_id.load(std::memory_order_acquire);
        asyncd_peer_t peer;
        if (!conn || live_.count(conn) || !read_peer(*ch_, conn, &peer)) continue;
        live_.insert(conn);
        linked++;
        if (!fns.link_up_cli) continue;
        InCallback in(state_, Callback::kLinkUp, timing_);
        fns.link_up_cli(conn, &peer);
    }
    if (linked) {
        log_->write(LogLevel::kDebug, "worker %d: linked up %d open connections bound to it",
                    index_, linked);
    }
}

bool Worker::forget_live(uint64_t conn) {
    if (conn == last_live_) last_live_ = 0;
    return live_.erase(conn) != 0;
}

void Worker::ensure_linked(uint64_t conn) {
    if (conn == last_live_) return;  // packets come in runs of one connection
    if (live_.count(conn)) {
        last_live_ = conn;
        return;
    }
    // A connection this process never saw linked up: its predecessor did before it died.
    // The plugin gets the link_up it would have had, before the packet.
    live_.insert(conn);
    if (!plugin_.exports().link_up_cli) return;
    asyncd_peer_t peer;
    if (!read_peer(*ch_, conn, &peer)) memset(&peer, 0, sizeof peer);
    InCallback in(state_, Callback::kLinkUp, timing_);
    plugin_.exports().link_up_cli(conn, &peer);
}

void Worker::dispatch(const shmq::Message &m) {
    const PluginExports &fns = plugin_.exports();
    switch (ToWorker(m.type)) {
        case ToWorker::kPacket: {
            ensure_linked(m.conn_id);
            bump(stats_->packets);
            int rc;
            uint64_t started;
            {
                InCallback in(state_, Callback::kPacket, timing_, packet_stamp(m.seq) != 0);
                started = in.started();
                rc = fns.proc_pkg_cli(m.conn_id, m.data, m.len);
            }
            if (timing_) timing_->waited(started, packet_stamp(m.seq));
            if (rc != 0) close_conn(m.conn_id);
            break;
        }
        case ToWorker::kLinkUp: {
            if (live_.count(m.conn_id)) break;  // delivered again after a crash
            live_.insert(m.conn_id);
            asyncd_peer_t peer;
            memset(&peer, 0, sizeof peer);
            memcpy(&peer, m.data, m.len < sizeof peer ? m.len : sizeof peer);
            if (fns.link_up_cli) {
                InCallback in(state_, Callback::kLinkUp, timing_);
                fns.link_up_cli(m.conn_id, &peer);
            }
            break;
        }
        case ToWorker::kLinkDown:
            if (!forget_live(m.conn_id)) break;
            if (fns.link_down_cli) {
                InCallback in(state_, Callback::kLinkDown, timing_);
                fns.link_down_cli(m.conn_id, int(m.seq));
            }
            break;
        case ToWorker::kConnReset:
            if (fns.link_down_cli) {
                for (uint64_t conn : live_) {
                    InCallback in(state_, Callback::kLinkDown, timing_);
                    fns.link_down_cli(conn, ASYNCD_DOWN_CONN_RESTART);
                }
            }
            live_.clear();
            last_live_ = 0;
            // What the old conn held of our calls is gone with it: whether each ran is
            // unknown. Its requests to us have nobody to answer now.
            calls_.fail_all(ASYNCD_NODE_LINK_LOST);
            reqs_.clear();
            break;
        default:
            log_->write(LogLevel::kAlert, "worker %d: unknown record type %u", index_,
                        unsigned(m.type));
    }
}

int Worker::send(uint64_t conn, const void *buf, size_t len) {
    if (conn == 0 || len > cfg_.max_reply_len || (len && !buf)) return -1;
    return push_out(FromWorker::kReply, conn, buf, len) ? 0 : -1;
}

int Worker::close_conn(uint64_t conn) {
    if (conn == 0) return -1;
    return push_out(FromWorker::kClose, conn, nullptr, 0) ? 0 : -1;
}

uint64_t Worker::timer_add(uint32_t ms, Timers::Fn fn, void *arg) {
    if (!fn) return 0;
    return timers_.add(monotonic_ms(), ms, fn, arg);
}

// Replies never get lost to a full ring: the worker waits for conn to make room. conn
// always drains replies, so the wait ends; if the supervisor dies meanwhile, so do we.
bool Worker::push_out(FromWorker type, uint64_t conn, const void *buf, size_t len) {
    shmq::RecordMeta meta;
    meta.type = type_of(type);
    meta.conn_id = conn;
    if (type == FromWorker::kReply) bump(stats_->bytes_out, len);
    // Consecutive replies to one connection within a batch travel as one record.
    if (type == FromWorker::kReply && out_.try_append(meta, buf, len)) return true;
    size_t done = 0;
    for (;;) {
        shmq::PushStatus s = out_.try_push_stream(meta, buf, len, &done);
        if (s == shmq::PushStatus::kOk) return true;
        if (s != shmq::PushStatus::kFull) {
            log_->write(LogLevel::kAlert, "worker %d: reply push failed (%d)", index_, int(s));
            return false;
        }
        wait_room(len - done);
        if (orphaned_) _exit(0);
    }
}

void Worker::wait_room(size_t len) {
    if (!out_.prepare_wait_room(len)) return;
    PauseCallbackClock paused(state_);  // not hung: waiting for conn
    uint64_t wait_from = timing_ ? ticks() : 0;
    struct pollfd p[2] = {{link_->wake.fd(), POLLIN, 0}, {ch_->death_rd, POLLIN, 0}};
    int n = poll(p, 2, 1000);
    out_.finish_wait_room();
    if (n > 0 && p[0].revents) link_->wake.drain();
    if (n > 0 && p[1].revents) orphaned_ = true;
    if (timing_) timing_->paused += ticks() - wait_from;
}

}  // namespace asyncd::work
