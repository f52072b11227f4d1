#include "main/admin.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"

namespace asyncd {

std::string admin_response(const std::string &req, const Stats &stats) {
    std::string status = "200 OK", type = "text/plain; version=0.0.4", body;
    if (req.compare(0, 13, "GET /metrics ") == 0) {
        body = format_metrics(stats);
    } else if (req.compare(0, 17, "GET /status.json ") == 0) {
        type = "application/json";
        body = format_status_json(stats);
    } else if (req.compare(0, 6, "GET / ") == 0) {
        type = "text/html; charset=utf-8";
        body = format_html(stats);
    } else {
        status = "404 Not Found";
        type = "text/plain";
        body = "GET /, GET /metrics or GET /status.json\n";
    }
    return "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
           "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + body;
}

AdminServer::AdminServer(int listen_fd, int ep, uint64_t tag_base, const Stats *stats, Log *log)
    : listen_fd_(listen_fd),
      ep_(ep),
      tag_base_(tag_base),
      stats_(stats),
      log_(log),
      clients_(kMaxClients) {}

AdminServer::~AdminServer() {
    for (Client &c : clients_) {
        if (c.fd >= 0) close(c.fd);
    }
}

int AdminServer::clients() const {
    int n = 0;
    for (const Client &c : clients_)
        n += c.fd >= 0;
    return n;
}

void AdminServer::close_in_child() {
    for (Client &c : clients_) {
        if (c.fd >= 0) close(c.fd);
        c.fd = -1;
    }
}

void AdminServer::on_accept() {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or out of fds: the next readiness tries again
        Client *slot = nullptr;
        for (Client &c : clients_) {
            if (c.fd < 0) {
                slot = &c;
                break;
            }
        }
        if (!slot) {
            // Full: the client that has waited longest without sending a whole request
            // makes room, so that silent clients cannot keep a real one out.
            for (Client &c : clients_) {
                if (c.out.empty() && (!slot || c.deadline_ms < slot->deadline_ms)) slot = &c;
            }
            log_->write_limited(
                &busy_log_, monotonic_ms(), LogLevel::kWarn,
                "admin: %d clients at once already; closing %s", kMaxClients,
                slot ? "the one that has waited longest for a request" : "a newcomer");
            if (!slot) {
                close(fd);
                continue;
            }
            drop(*slot);
        }
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.u64 = tag_base_ + uint64_t(slot - clients_.data());
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        slot->fd = fd;
        slot->deadline_ms = monotonic_ms() + kDeadlineMs;
        slot->in.clear();
        slot->out.clear();
        slot->sent = 0;
    }
}

void AdminServer::on_client(uint64_t tag, uint32_t events) {
    Client &c = clients_[size_t(tag - tag_base_)];
    if (c.fd < 0) return;
    if (c.out.empty()) {
        char buf[2048];
        for (;;) {
            ssize_t n = recv(c.fd, buf, sizeof buf, 0);
            if (n > 0) {
                c.in.append(buf, size_t(n));
                if (c.in.size() >= kMaxRequest) break;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) break;
            // EOF or an error before a whole request: nothing to answer.
            if (c.in.find("\n\n") == std::string::npos &&
                c.in.find("\r\n\r\n") == std::string::npos) {
                drop(c);
                return;
            }
            break;
        }
        bool whole = c.in.find("\r\n\r\n") != std::string::npos ||
                     c.in.find("\n\n") != std::string::npos || c.in.size() >= kMaxRequest;
        if (!whole) return;
        answer(c);
        return;
    }
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        if (!write_some(c)) drop(c);
    }
}

void AdminServer::answer(Client &c) {
    c.out = admin_response(c.in, *stats_);
    c.sent = 0;
    if (!write_some(c)) {
        drop(c);
        return;
    }
    struct epoll_event ev = {};
    ev.events = EPOLLOUT;
    ev.data.u64 = tag_base_ + uint64_t(&c - clients_.data());
    if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) != 0) drop(c);  // nothing would ever write it
}

// Writes what the socket takes. False once it is all out, or the client is gone.
bool AdminServer::write_some(Client &c) {
    while (c.sent < c.out.size()) {
        ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && errno == EAGAIN;
    }
    return false;
}

void AdminServer::drop(Client &c) {
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    c.in.clear();
    c.out.clear();
    c.in.shrink_to_fit();
    c.out.shrink_to_fit();
}

int AdminServer::expire(uint64_t now_ms) {
    uint64_t next = 0;
    for (Client &c : clients_) {
        if (c.fd < 0) continue;
        if (now_ms >= c.deadline_ms) {
            drop(c);
            continue;
        }
        if (!next || c.deadline_ms < next) next = c.deadline_ms;
    }
    return next ? int(next - now_ms) : -1;
}

}  // namespace asyncd
