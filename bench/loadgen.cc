#include "bench/loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>

namespace asyncd::bench {

namespace {

constexpr uint64_t kTimerTag = ~uint64_t(0);
constexpr uint64_t kGraceNs = 2000000000ull;  // how long in-flight replies may finish
constexpr size_t kReadChunk = 64 << 10;

uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

struct Conn {
    int fd = -1;
    uint32_t id = 0;
    ReplyChecker checker;
    std::string in;
    std::string out;
    size_t out_off = 0;
    std::deque<uint64_t> sent_at;  // per request in flight: when it was (meant to be) sent
    uint64_t next_seq = 0;
    uint64_t next_due = 0;  // open loop: when the next request is meant to go
    uint32_t events = 0;
    bool dead = false;
    Conn(Proto p, size_t payload, uint32_t conn_id) : id(conn_id), checker(p, payload, conn_id) {}
};

// What all threads share.
struct Shared {
    const LoadSpec *spec = nullptr;
    LoadProgress *progress = nullptr;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::atomic<int64_t> tickets{0};  // requests left to send (count mode)
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    uint64_t start_ns = 0;
    uint64_t end_ns = 0;       // stop sending (duration mode, or max_seconds)
    uint64_t hard_end_ns = 0;  // stop waiting for replies
    std::mutex mu;
    LoadResult *result = nullptr;
};

int open_conn(const Shared &sh) {
    int fd = socket(sh.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<const sockaddr *>(&sh.addr), sh.addr_len) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

class Thread {
  public:
    Thread(Shared *sh, std::vector<uint32_t> conn_ids, int idle)
        : sh_(sh), spec_(*sh->spec), ids_(std::move(conn_ids)), idle_(idle) {}

    void run();

    LoadResult result;
    uint64_t last_ns = 0;  // when this thread counted its last reply

  private:
    bool connect_all();
    bool may_send();
    void queue_request(Conn &c, uint64_t intended);
    void queue_batch(Conn &c, uint64_t now);
    void flush(Conn &c);
    void on_readable(Conn &c, uint64_t now);
    void drop(Conn &c, const std::string &why);
    void update_events(Conn &c);
    void arm_timer(uint64_t at);
    void send_due(uint64_t now);
    bool finished(uint64_t now) const;

    Shared *sh_;
    const LoadSpec &spec_;
    std::vector<uint32_t> ids_;
    int idle_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<int> idle_fds_;
    int ep_ = -1;
    int timer_fd_ = -1;
    uint64_t interval_ns_ = 0;  // open loop, per connection
    uint64_t in_flight_ = 0;
    size_t alive_ = 0;
    bool sending_ = true;
    std::string scratch_;
    std::string request_;
};

bool Thread::connect_all() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return false;
    for (uint32_t id : ids_) {
        auto c = std::make_unique<Conn>(spec_.proto, spec_.payload, id);
        c->fd = open_conn(*sh_);
        if (c->fd < 0) {
            result.connect_errors++;
            if (result.first_error.empty()) {
                result.first_error = std::string("connect: ") + strerror(errno);
            }
            continue;
        }
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.ptr = c.get();
        epoll_ctl(ep_, EPOLL_CTL_ADD, c->fd, &ev);
        c->events = EPOLLIN;
        conns_.push_back(std::move(c));
    }
    for (int i = 0; i < idle_; i++) {
        int fd = open_conn(*sh_);
        if (fd < 0) {
            result.connect_errors++;
            continue;
        }
        idle_fds_.push_back(fd);
    }
    alive_ = conns_.size();
    if (spec_.rate > 0) {
        timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.u64 = kTimerTag;
        epoll_ctl(ep_, EPOLL_CTL_ADD, timer_fd_, &ev);
    }
    return true;
}

bool Thread::may_send() {
    if (!sending_) return false;
    if (spec_.requests == 0) return true;
    return sh_->tickets.fetch_sub(1, std::memory_order_relaxed) > 0;
}

// The request is built once per thread; each one is that copy with its conn and seq patched.
void Thread::queue_request(Conn &c, uint64_t intended) {
    if (request_.empty()) build_request(spec_.proto, spec_.payload, c.id, 0, &request_);
    size_t at = c.out.size();
    c.out.append(request_);
    patch_request(spec_.proto, spec_.payload, c.id, c.next_seq++, &c.out[at]);
    c.sent_at.push_back(intended);
    in_flight_++;
}

// Closed loop, batch mode: the next `pipeline` requests once every one before was answered.
void Thread::queue_batch(Conn &c, uint64_t now) {
    for (int k = 0; k < spec_.pipeline && may_send(); k++)
        queue_request(c, now);
}

void Thread::flush(Conn &c) {
    while (c.out_off < c.out.size()) {
        ssize_t n = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_off += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        drop(c, std::string("send: ") + strerror(errno));
        return;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    }
    update_events(c);
}

void Thread::update_events(Conn &c) {
    if (c.dead) return;
    uint32_t want = EPOLLIN | (c.out.empty() ? 0u : uint32_t(EPOLLOUT));
    if (want == c.events) return;
    struct epoll_event ev = {};
    ev.events = want;
    ev.data.ptr = &c;
    if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.events = want;
}

void Thread::drop(Conn &c, const std::string &why) {
    if (c.dead) return;
    c.dead = true;
    result.dropped++;
    if (result.first_error.empty()) result.first_error = why;
    in_flight_ -= c.sent_at.size();
    c.sent_at.clear();
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
    alive_--;
}

// One read per readable event, into the thread's buffer; replies are checked straight from
// there, and only a partial one is kept on the connection.
void Thread::on_readable(Conn &c, uint64_t now) {
    if (scratch_.size() < kReadChunk) scratch_.resize(kReadChunk);
    const char *data;
    size_t len;
    ssize_t n;
    do {
        n = recv(c.fd, &scratch_[0], kReadChunk, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        drop(c, "the server closed a connection");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN) drop(c, std::string("recv: ") + strerror(errno));
        return;
    }
    if (c.in.empty()) {
        data = scratch_.data();
        len = size_t(n);
    } else {
        c.in.append(scratch_.data(), size_t(n));
        data = c.in.data();
        len = c.in.size();
    }
    size_t used = 0;
    uint64_t errors = 0;
    bool fatal = false;
    size_t replies = c.checker.consume(data, len, &used, &errors, &fatal);
    if (data == scratch_.data()) {
        if (used < len) c.in.assign(data + used, len - used);
    } else {
        c.in.erase(0, used);
    }
    if (errors) {
        result.errors += errors;
        if (sh_->progress) sh_->progress->errors.fetch_add(errors, std::memory_order_relaxed);
        if (result.first_error.empty()) result.first_error = c.checker.last_error();
    }
    // A duration run counts only the replies that came within its duration. One clock read
    // (the caller's, per epoll batch) serves every reply of this read.
    bool counted = spec_.seconds <= 0 || now <= sh_->end_ns;
    size_t done = 0;
    bool window = spec_.rate <= 0 && !spec_.batch;
    for (size_t i = 0; i < replies && !c.sent_at.empty(); i++) {
        uint64_t sent = c.sent_at.front();
        c.sent_at.pop_front();
        in_flight_--;
        if (!counted) continue;
        done++;
        result.latency.record(now > sent ? now - sent : 0);
        if (window && may_send()) queue_request(c, now);
    }
    if (done) {
        last_ns = now;
        result.completed += done;
        uint64_t sec = (now - sh_->start_ns) / 1000000000ull;
        if (result.per_second.size() <= sec) result.per_second.resize(sec + 1, 0);
        result.per_second[sec] += done;
    }
    if (spec_.batch && spec_.rate <= 0 && c.sent_at.empty() && !fatal) queue_batch(c, now);
    if (sh_->progress) sh_->progress->completed.fetch_add(replies, std::memory_order_relaxed);
    if (fatal) {
        drop(c, c.checker.last_error());
        return;
    }
    if (!c.out.empty()) flush(c);
}

void Thread::arm_timer(uint64_t at) {
    struct itimerspec its = {};
    its.it_value.tv_sec = time_t(at / 1000000000ull);
    its.it_value.tv_nsec = long(at % 1000000000ull);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
}

// Open loop: every request whose time has come goes now, stamped with the time it was
// meant for, however late that is.
void Thread::send_due(uint64_t now) {
    uint64_t next = UINT64_MAX;
    for (auto &cp : conns_) {
        Conn &c = *cp;
        if (c.dead) continue;
        bool queued = false;
        while (sending_ && c.next_due <= now && c.next_due < sh_->end_ns) {
            if (spec_.requests && !may_send()) {
                sending_ = false;
                break;
            }
            queue_request(c, c.next_due);
            c.next_due += interval_ns_;
            queued = true;
        }
        if (queued) flush(c);
        next = std::min(next, c.next_due);
    }
    if (sending_ && next < sh_->end_ns) arm_timer(next);
}

bool Thread::finished(uint64_t now) const {
    if (alive_ == 0) return true;
    if (now >= sh_->hard_end_ns) return true;
    return !sending_ && in_flight_ == 0;
}

void Thread::run() {
    if (spec_.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(spec_.cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    connect_all();
    sh_->ready.fetch_add(1);
    while (!sh_->go.load(std::memory_order_acquire))
        std::this_thread::yield();
    uint64_t start = sh_->start_ns;
    if (spec_.rate > 0) {
        double per_conn = spec_.rate / double(std::max(1, spec_.conns));
        interval_ns_ = uint64_t(1e9 / per_conn);
        if (interval_ns_ == 0) interval_ns_ = 1;
        for (size_t i = 0; i < conns_.size(); i++) {
            // Spread the connections over one interval so the load is even.
            uint64_t global = conns_[i]->id;
            conns_[i]->next_due =
                start + interval_ns_ * global / uint64_t(std::max(1, spec_.conns));
        }
        send_due(now_ns());
    } else {
        uint64_t now = now_ns();
        for (auto &c : conns_) {
            queue_batch(*c, now);  // the first window, or the first batch
            flush(*c);
        }
    }
    struct epoll_event events[256];
    for (;;) {
        uint64_t now = now_ns();
        if (sending_ && now >= sh_->end_ns) sending_ = false;
        if (spec_.requests && spec_.rate <= 0 && in_flight_ == 0 && sending_) {
            sending_ = sh_->tickets.load() > 0;
        }
        if (finished(now)) break;
        int timeout = 100;
        int n = epoll_wait(ep_, events, 256, timeout);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == kTimerTag) {
                uint64_t expirations;
                ssize_t unused = read(timer_fd_, &expirations, sizeof expirations);
                (void)unused;
                send_due(now);
                continue;
            }
            Conn &c = *static_cast<Conn *>(events[i].data.ptr);
            if (c.dead) continue;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c, now);
            if (!c.dead && (events[i].events & EPOLLOUT)) flush(c);
        }
    }
    for (auto &c : conns_) {
        if (!c->dead) close(c->fd);
    }
    for (int fd : idle_fds_)
        close(fd);
    if (timer_fd_ >= 0) close(timer_fd_);
    if (ep_ >= 0) close(ep_);
}

bool resolve(const LoadSpec &spec, Shared *sh, std::string *err) {
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = nullptr;
    std::string port = std::to_string(spec.port);
    int rc = getaddrinfo(spec.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        *err = spec.host + ": " + gai_strerror(rc);
        return false;
    }
    memcpy(&sh->addr, res->ai_addr, res->ai_addrlen);
    sh->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

}  // namespace

LoadResult run_load(const LoadSpec &spec, LoadProgress *progress) {
    LoadResult total;
    Shared sh;
    sh.spec = &spec;
    sh.progress = progress;
    sh.result = &total;
    std::string err;
    if (!resolve(spec, &sh, &err)) {
        total.first_error = err;
        total.connect_errors = uint64_t(spec.conns);
        return total;
    }
    sh.tickets.store(int64_t(spec.requests));
    int nthreads = std::max(1, std::min(spec.threads, spec.conns));
    std::vector<std::unique_ptr<Thread>> threads;
    for (int t = 0; t < nthreads; t++) {
        std::vector<uint32_t> ids;
        for (int c = t; c < spec.conns; c += nthreads)
            ids.push_back(uint32_t(c));
        int idle = spec.idle / nthreads + (t < spec.idle % nthreads ? 1 : 0);
        threads.push_back(std::make_unique<Thread>(&sh, std::move(ids), idle));
    }
    std::vector<std::thread> running;
    for (auto &t : threads)
        running.emplace_back([&t] { t->run(); });
    while (sh.ready.load() < nthreads)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    sh.start_ns = now_ns();
    double limit = spec.seconds > 0 ? std::min(spec.seconds, spec.max_seconds) : spec.max_seconds;
    sh.end_ns = sh.start_ns + uint64_t(limit * 1e9);
    sh.hard_end_ns = spec.seconds > 0 ? sh.end_ns : sh.end_ns + kGraceNs;
    if (progress) progress->started.store(true);
    sh.go.store(true, std::memory_order_release);
    for (auto &t : running)
        t.join();
    uint64_t last = sh.start_ns;
    for (auto &t : threads) {
        LoadResult &r = t->result;
        last = std::max(last, t->last_ns);
        total.completed += r.completed;
        total.errors += r.errors;
        total.connect_errors += r.connect_errors;
        total.dropped += r.dropped;
        total.latency.merge(r.latency);
        if (total.per_second.size() < r.per_second.size()) {
            total.per_second.resize(r.per_second.size(), 0);
        }
        for (size_t i = 0; i < r.per_second.size(); i++)
            total.per_second[i] += r.per_second[i];
        if (total.first_error.empty()) total.first_error = r.first_error;
    }
    // A duration run lasts its duration; a count run lasts until its last reply.
    total.elapsed = spec.seconds > 0 ? limit : double(last - sh.start_ns) / 1e9;
    return total;
}

}  // namespace asyncd::bench
