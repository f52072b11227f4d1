// The admin listener (admin_listen): GET / (the status page) and GET /metrics (Prometheus
// text), served from the supervisor's loop. Every client socket is non-blocking and watched
// by that loop's epoll, so a client that sends nothing, or reads nothing, costs the
// supervisor one fd and never a wait: it is closed at its deadline, and beyond kMaxClients
// at once the one that has waited longest for its request makes room for a newcomer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/stats.h"

namespace asyncd {

class AdminServer {
  public:
    static constexpr int kMaxClients = 32;
    static constexpr uint64_t kDeadlineMs = 1000;  // to send the request and read the answer
    static constexpr size_t kMaxRequest = 8192;

    // listen_fd: the bound, non-blocking admin socket. ep: the supervisor's epoll, in which
    // the clients are watched with data tag_base + their slot.
    AdminServer(int listen_fd, int ep, uint64_t tag_base, const Stats *stats, Log *log);
    ~AdminServer();
    AdminServer(const AdminServer &) = delete;
    AdminServer &operator=(const AdminServer &) = delete;

    bool owns(uint64_t tag) const { return tag >= tag_base_ && tag < tag_base_ + kMaxClients; }
    void on_accept();
    void on_client(uint64_t tag, uint32_t events);
    // Closes the clients past their deadline; returns ms until the next deadline, or -1.
    int expire(uint64_t now_ms);
    // In a child after fork: the clients' fds are the supervisor's, not its own.
    void close_in_child();
    int clients() const;

  private:
    struct Client {
        int fd = -1;
        uint64_t deadline_ms = 0;
        std::string in;
        std::string out;
        size_t sent = 0;
    };
    void answer(Client &c);
    bool write_some(Client &c);
    void drop(Client &c);

    int listen_fd_;
    int ep_;
    uint64_t tag_base_;
    const Stats *stats_;
    Log *log_;
    std::vector<Client> clients_;
    LogLimit busy_log_{1};
};

// The HTTP answer to one request head: the status page, the metrics, or a 404.
std::string admin_response(const std::string &request, const Stats &stats);

}  // namespace asyncd
