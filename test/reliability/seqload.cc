#include "test/reliability/seqload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/blackbox/harness.h"

namespace asyncd::test {

SeqLoad::SeqLoad(uint16_t port, int conns, int window)
    : port_(port), window_(window), conns_(size_t(conns)) {}

SeqLoad::~SeqLoad() {
    stop();
    for (auto &c : conns_) {
        if (c.fd >= 0) close(c.fd);
    }
}

bool SeqLoad::connect_all() {
    for (auto &c : conns_) {
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (c.fd < 0 || connect(c.fd, reinterpret_cast<sockaddr *>(&a), sizeof a) < 0) return false;
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    }
    return true;
}

void SeqLoad::start() {
    running_.store(true);
    thread_ = std::thread([this] { loop(); });
}

void SeqLoad::stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
}

void SeqLoad::inject(int i, const std::string &payload) {
    std::lock_guard<std::mutex> lock(mu_);
    injected_.emplace_back(i, payload);
}

SeqStats SeqLoad::stats() {
    std::lock_guard<std::mutex> lock(mu_);
    SeqStats s = stats_;
    s.answered = answered_.load();
    s.unanswered = s.unanswered_on_closed = 0;
    for (auto &c : conns_) {
        (c.closed ? s.unanswered_on_closed : s.unanswered) += c.next - c.expected;
    }
    return s;
}

bool SeqLoad::wait_answered(std::chrono::milliseconds deadline) {
    return eventually(
        [&] {
            std::lock_guard<std::mutex> lock(mu_);
            for (auto &c : conns_) {
                if (!c.closed && (c.expected < c.next || c.extra > 0)) return false;
            }
            return true;
        },
        deadline);
}

// Payload: "<conn>:<seq>:" then filler, 48 bytes in all.
static std::string payload_for(int conn, uint64_t seq) {
    char buf[49];
    int n = snprintf(buf, sizeof buf, "%d:%llu:", conn, (unsigned long long)seq);
    memset(buf + n, 'x', sizeof buf - 1 - size_t(n));
    return std::string(buf, sizeof buf - 1);
}

void SeqLoad::on_reply(int i, const std::string &payload) {
    Conn &c = conns_[size_t(i)];
    int conn = -1;
    unsigned long long seq = 0;
    if (sscanf(payload.c_str(), "%d:%llu:", &conn, &seq) != 2 || conn != i ||
        payload != payload_for(i, seq)) {
        if (c.extra > 0) {  // the answer to an injected packet
            c.extra--;
            return;
        }
        stats_.wrong++;
        return;
    }
    if (seq < c.expected) {
        stats_.duplicates++;
        return;
    }
    if (seq > c.expected) stats_.lost += seq - c.expected;
    c.expected = seq + 1;
    answered_.fetch_add(1);
}

void SeqLoad::loop() {
    std::vector<pollfd> pfds(conns_.size());
    char buf[65536];
    while (running_.load()) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            for (auto &[i, p] : injected_) {
                conns_[size_t(i)].out += frame(p);
                conns_[size_t(i)].extra++;
            }
            injected_.clear();
            bool send = sending_.load();
            for (size_t i = 0; i < conns_.size(); i++) {
                Conn &c = conns_[i];
                while (send && !c.closed && c.next - c.expected < uint64_t(window_)) {
                    c.out += frame(payload_for(int(i), c.next++));
                    stats_.sent++;
                }
                pfds[i] = {c.closed ? -1 : c.fd, short(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0};
            }
        }
        if (poll(pfds.data(), pfds.size(), 20) <= 0) continue;
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t i = 0; i < conns_.size(); i++) {
            Conn &c = conns_[i];
            if (c.closed) continue;
            if (pfds[i].revents & POLLOUT) {
                ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
                if (n > 0) c.out.erase(0, size_t(n));
            }
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = recv(c.fd, buf, sizeof buf, 0);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                    c.closed = true;
                    stats_.closed++;
                    continue;
                }
                if (n > 0) c.in.append(buf, size_t(n));
                while (c.in.size() >= 4) {
                    uint32_t total = (uint32_t(uint8_t(c.in[0])) << 24) |
                                     (uint32_t(uint8_t(c.in[1])) << 16) |
                                     (uint32_t(uint8_t(c.in[2])) << 8) | uint32_t(uint8_t(c.in[3]));
                    if (total < 4 || total > (1u << 20)) {
                        stats_.wrong++;
                        c.closed = true;
                        break;
                    }
                    if (c.in.size() < total) break;
                    on_reply(int(i), c.in.substr(4, total - 4));
                    c.in.erase(0, total);
                }
            }
        }
    }
}

}  // namespace asyncd::test
