// Clients, the way out: the workers' replies, the output limits, the writes, and the
// timeouts (idle_timeout, pkg_timeout, out_buf_soft_seconds) that the periodic check applies.
// The way in (accept, read, frame, push, close and reap) is in clients.cc.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>

#include "conn/clients.h"
#include "core/records.h"

namespace asyncd::conn {

void Clients::handle_reply(const shmq::Message &m) {
    uint32_t slot = conn_slot(m.conn_id);
    Connection *c = slot < slots_.size() ? slots_[slot] : nullptr;
    if (!c || c->id != m.conn_id || c->closed()) {
        bump(st_->stale_replies);
        log_->write(LogLevel::kDebug, "reply for gone connection %llx dropped",
                    (unsigned long long)m.conn_id);
        return;
    }
    if (FromWorker(m.type) == FromWorker::kReply) {
        bump(st_->reply_records);
        c->last_active_ms = loop_->now_ms();
        if (!output_fits(c, m.len)) return;
        if (!c->out.append(m.data, m.len)) {
            log_->write(LogLevel::kCrit, "out of memory buffering output of %s", c->peer_text);
            close_conn(c, ASYNCD_DOWN_LIMIT);
            return;
        }
        size_t size = c->out.size();
        if (size > get(st_->out_buf_peak)) set(st_->out_buf_peak, size);
        if (cfg_->out_buf_soft && size > cfg_->out_buf_soft && !c->soft_since_ms) {
            c->soft_since_ms = loop_->now_ms();
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
bool Clients::output_fits(Connection *c, size_t len) {
    size_t hard = cfg_->out_buf_hard;
    if (!hard || c->out.empty() || c->out.size() + len <= hard) return true;
    write_out(c);  // what the socket takes now does not count against it
    if (c->closed()) return false;
    if (c->out.empty() || c->out.size() + len <= hard) return true;
    bump(st_->out_buf_closed);
    log_->write_limited(&out_log_, loop_->now_ms(), LogLevel::kWarn,
                        "closing %s: output buffer would reach %zu bytes, over out_buf_hard "
                        "(%zu)",
                        c->peer_text, c->out.size() + len, hard);
    close_conn(c, ASYNCD_DOWN_LIMIT);
    return false;
}

void Clients::mark_dirty(Connection *c) {
    if (c->dirty) return;
    c->dirty = true;
    dirty_.push_back(c);
}

void Clients::flush_writes() {
    for (Connection *c : dirty_) {
        c->dirty = false;
        if (!c->closed()) write_out(c);
    }
    dirty_.clear();
}

void Clients::write_out(Connection *c) {
    while (!c->out.empty()) {
        ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            c->out.consume(size_t(n));
            bump(st_->bytes_out, uint64_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        log_->write_limited(&close_log_, loop_->now_ms(), LogLevel::kInfo, "write to %s: %s",
                            c->peer_text, strerror(errno));
        close_conn(
            c, errno == EPIPE || errno == ECONNRESET ? ASYNCD_DOWN_PEER_CLOSED : ASYNCD_DOWN_ERROR);
        return;
    }
    if (c->soft_since_ms && c->out.size() <= cfg_->out_buf_soft) c->soft_since_ms = 0;
    if (c->out.empty() && c->close_after_flush) {
        close_conn(c, ASYNCD_DOWN_PLUGIN_CLOSE);
        return;
    }
    update_events(c);
}

bool Clients::all_written() const {
    for (const Connection *c : slots_) {
        if (c && !c->closed() && !c->out.empty()) return false;
    }
    return true;
}

void Clients::arm_check() {
    if (!check_every_ms_ || check_timer_) return;
    check_timer_ = loop_->add_periodic(uint32_t(check_every_ms_), [this] { check_timeouts(); });
}

// idle_timeout, pkg_timeout and out_buf_soft_seconds. The periodic timer runs only while
// some connection could trip one of them, so an idle conn sleeps.
void Clients::check_timeouts() {
    uint64_t now = loop_->now_ms();
    uint64_t idle = cfg_->idle_timeout > 0 ? uint64_t(cfg_->idle_timeout) * 1000 : 0;
    uint64_t pkg = uint64_t(std::max(cfg_->pkg_timeout_ms, 0));
    bool again = false;
    for (Connection *c : slots_) {
        if (!c || c->closed()) continue;
        // Not idle while conn itself does not read it (its worker's ring is full,
        // input_budget, or a stop): backpressure is not idleness. An answer it gets is
        // activity too (handle_reply).
        if (idle && !input_stopped_ && !c->waiting_for_room() && !c->starved &&
            now - c->last_active_ms >= idle) {
            bump(st_->idle_closed);
            log_->write_limited(&close_log_, now, LogLevel::kInfo, "closing %s: idle for %d s",
                                c->peer_text, cfg_->idle_timeout);
            close_conn(c, ASYNCD_DOWN_IDLE);
        } else if (pkg && c->pkg_start_ms && now - c->pkg_start_ms >= pkg) {
            bump(st_->pkg_timeouts);
            log_->write_limited(&close_log_, now, LogLevel::kInfo,
                                "closing %s: no whole packet within pkg_timeout (%.3g s; %zu "
                                "bytes of it came)",
                                c->peer_text, double(pkg) / 1000, c->in.size());
            close_conn(c, ASYNCD_DOWN_LIMIT);
        } else if (c->soft_since_ms && now - c->soft_since_ms >= uint64_t(cfg_->out_buf_soft_ms)) {
            bump(st_->out_buf_closed);
            log_->write_limited(&out_log_, now, LogLevel::kWarn,
                                "closing %s: output buffer over out_buf_soft (%zu) for %.3g s "
                                "(%zu bytes)",
                                c->peer_text, cfg_->out_buf_soft,
                                double(now - c->soft_since_ms) / 1000, c->out.size());
            close_conn(c, ASYNCD_DOWN_LIMIT);
        } else if (idle || c->pkg_start_ms || c->soft_since_ms) {
            again = true;
        }
    }
    if (!again && check_timer_) {
        loop_->cancel_timer(check_timer_);
        check_timer_ = 0;
    }
}

}  // namespace asyncd::conn
