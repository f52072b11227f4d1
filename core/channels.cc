#include "core/channels.h"

#include <algorithm>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <new>

namespace asyncd {

Channels::~Channels() {
    for (int fd : {event_rd, event_wr, death_rd, death_wr, stats_fd}) {
        if (fd >= 0) close(fd);
    }
    if (shared_) munmap(shared_, shared_size_);
}

bool Channels::create(const Config &cfg, std::string *err) {
    npeers = conn_table_slots(cfg.max_conns);
    size_t state_size = (sizeof(SharedState) + 4095) & ~size_t(4095);
    shared_size_ = state_size + npeers * sizeof(PeerSlot);
    shared_ = mmap(nullptr, shared_size_, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (shared_ == MAP_FAILED) {
        shared_ = nullptr;
        *err = std::string("mmap of the shared state: ") + strerror(errno);
        return false;
    }
    state = new (shared_) SharedState();
    peers = reinterpret_cast<PeerSlot *>(static_cast<char *>(shared_) + state_size);
    state->conn_serial.store(1);
    state->active_workers.store(uint32_t(cfg.workers));
    state->limits.publish(cfg);
    if (!create_stats(cfg.max_workers, &stats, &stats_fd, err)) return false;
    snprintf(stats->node_name, sizeof stats->node_name, "%s", cfg.node_name.c_str());

    shmq::RingParams in_params, out_params;
    in_params.capacity = out_params.capacity = cfg.ring_size;
    in_params.max_msg = cfg.max_pkg_len;
    // A node message reaches the worker whole (conn gathers its parts), with its names.
    if (cfg.cluster)
        in_params.max_msg = std::max(in_params.max_msg, cfg.cluster->max_message + 1024);
    out_params.max_msg = cfg.max_reply_len;
    if (cfg.cluster) {
        out_params.max_msg = std::max(out_params.max_msg, cfg.cluster->max_message + 1024);
        // A node message up to a little over 64 KiB (64 KiB of payload with its names) goes
        // in one record, not as parts the other side copies together again.
        in_params.max_record = out_params.max_record =
            std::min<size_t>(cfg.ring_size / 4, 72 << 10);
    }
    for (int i = 0; i < cfg.max_workers; i++) {
        auto link = std::make_unique<WorkerLink>();
        if (!link->in.create(in_params, err) || !link->out.create(out_params, err) ||
            !link->wake.open(shmq::WakerKind::kEventfd, err)) {
            return false;
        }
        workers.push_back(std::move(link));
    }
    if (!conn_wake.open(shmq::WakerKind::kEventfd, err)) return false;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        *err = std::string("pipe2: ") + strerror(errno);
        return false;
    }
    event_rd = fds[0];
    event_wr = fds[1];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        *err = std::string("pipe2: ") + strerror(errno);
        return false;
    }
    death_rd = fds[0];
    death_wr = fds[1];
    return true;
}

void Channels::enter_child() {
    close(stats_fd);  // the mapping stays; the fd is how others find it, the supervisor's
    stats_fd = -1;
    close(death_wr);
    death_wr = -1;
    close(event_rd);
    event_rd = -1;
}

void Channels::note(char kind, int index) const {
    ChildNote n{};
    n.kind = kind;
    n.index = uint16_t(index);
    n.pid = int32_t(getpid());
    ssize_t unused = write(event_wr, &n, sizeof n);  // full pipe: the supervisor is stuck
    (void)unused;
}

const char *callback_name(Callback cb) {
    switch (cb) {
        case Callback::kNone:
            return "no callback";
        case Callback::kInit:
            return "init_service";
        case Callback::kPacket:
            return "proc_pkg_cli";
        case Callback::kLinkUp:
            return "link_up_cli";
        case Callback::kLinkDown:
            return "link_down_cli";
        case Callback::kEvents:
            return "proc_events";
        case Callback::kTimer:
            return "a timer";
        case Callback::kFini:
            return "fini_service";
        case Callback::kNode:
            return "proc_pkg_node";
        case Callback::kNodeLink:
            return "link_up_node/link_down_node";
        case Callback::kCallDone:
            return "a node_call callback";
    }
    return "?";
}

void LiveLimitsSlot::publish(const Config &cfg) {
    LiveLimits v{};
    v.max_conns = cfg.max_conns;
    v.idle_timeout = cfg.idle_timeout;
    v.pkg_timeout_ms = cfg.pkg_timeout_ms;
    v.out_buf_soft_ms = cfg.out_buf_soft_ms;
    v.busy_poll_us = cfg.busy_poll_us;
    v.busy_poll_contended_us = cfg.busy_poll_contended_us;
    v.log_level = int(cfg.log_level);
    v.out_buf_soft = cfg.out_buf_soft;
    v.out_buf_hard = cfg.out_buf_hard;
    v.input_budget = cfg.input_budget;
    v.call_timeout_ms = cfg.cluster ? cfg.cluster->call_timeout_ms : 5000;
    v.pending_max = cfg.cluster ? cfg.cluster->pending_max : 100000;
    uint64_t w[kWords];
    memcpy(w, &v, sizeof v);
    uint32_t s = seq_.load(std::memory_order_relaxed);
    seq_.store(s + 1, std::memory_order_relaxed);  // odd: being written
    std::atomic_thread_fence(std::memory_order_release);
    for (int i = 0; i < kWords; i++)
        words_[i].store(w[i], std::memory_order_relaxed);
    seq_.store(s + 2, std::memory_order_release);
}

uint32_t LiveLimitsSlot::read(LiveLimits *out) const {
    uint64_t w[kWords];
    for (;;) {
        uint32_t before = seq_.load(std::memory_order_acquire);
        if (before & 1) continue;  // the supervisor is writing: a few stores, it is done soon
        for (int i = 0; i < kWords; i++)
            w[i] = words_[i].load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (seq_.load(std::memory_order_relaxed) == before) {
            memcpy(out, w, sizeof *out);
            return before;
        }
    }
}

void LiveLimitsSlot::apply(const LiveLimits &v, Config *cfg) {
    cfg->max_conns = v.max_conns;
    cfg->idle_timeout = v.idle_timeout;
    cfg->pkg_timeout_ms = v.pkg_timeout_ms;
    cfg->out_buf_soft_ms = v.out_buf_soft_ms;
    cfg->busy_poll_us = v.busy_poll_us;
    cfg->busy_poll_contended_us = v.busy_poll_contended_us;
    cfg->log_level = LogLevel(v.log_level);
    cfg->out_buf_soft = size_t(v.out_buf_soft);
    cfg->out_buf_hard = size_t(v.out_buf_hard);
    cfg->input_budget = size_t(v.input_budget);
}

bool read_peer(const Channels &ch, uint64_t conn_id, asyncd_peer_t *peer_out) {
    uint32_t slot = conn_slot(conn_id);
    if (slot >= ch.npeers) return false;
    const PeerSlot &p = ch.peers[slot];
    if (p.conn_id.load(std::memory_order_acquire) != conn_id) return false;
    memcpy(peer_out, &p.peer, sizeof *peer_out);
    std::atomic_thread_fence(std::memory_order_acquire);
    return p.conn_id.load(std::memory_order_relaxed) == conn_id;
}

}  // namespace asyncd
