#include "main/supervisor.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conn/conn_server.h"
#include "core/clock.h"
#include "core/loop_fds.h"
#include "core/plugin.h"
#include "main/proctitle.h"
#include "work/worker.h"

namespace asyncd {

namespace {

constexpr uint64_t kTagSignal = 1;
constexpr uint64_t kTagNotes = 2;
constexpr uint64_t kTagAdmin = 3;
constexpr uint64_t kTagAdminClient = 256;  // .. + AdminServer::kMaxClients: its clients

// A slot a stop starts this many times to answer what its ring holds, at most: a worker
// that keeps dying on it has had its chances (quarantine takes a poison record out in two).
constexpr int kMaxStopSpawns = 4;

// A worker recycled at worker_max_rss after this few packets goes through the back-off.
constexpr uint64_t kShortLifePackets = 2;

}  // namespace

Supervisor::Supervisor(const Config &cfg, Log *log) : cfg_(cfg), log_(log) {
    conn_.is_conn = true;
    workers_.resize(size_t(cfg_.max_workers));
    for (int i = 0; i < cfg_.max_workers; i++) {
        workers_[size_t(i)].index = i;
        workers_[size_t(i)].state = i < cfg_.workers ? ChildState::kIdle : ChildState::kRetired;
    }
}

Supervisor::~Supervisor() {
    for (int fd : {listen_fd_, node_fd_, ep_, sig_fd_}) {
        if (fd >= 0) close(fd);
    }
}

std::string Supervisor::name(const Child &c) const {
    return c.is_conn ? std::string("conn") : "worker " + std::to_string(c.index);
}

// A non-blocking listening socket on HOST:PORT; *bound says where it got (port 0 lets the
// kernel pick).
bool listen_on(const std::string &host, uint16_t port_num, const std::string &text, int *fd_out,
               std::string *bound, std::string *err) {
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    struct addrinfo *res = nullptr;
    std::string port = std::to_string(port_num);
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        *err = text + ": " + gai_strerror(rc);
        return false;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = std::string("socket: ") + strerror(errno);
        freeaddrinfo(res);
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 511) < 0) {
        *err = "bind " + text + ": " + strerror(errno);
        close(fd);
        freeaddrinfo(res);
        return false;
    }
    freeaddrinfo(res);
    *fd_out = fd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char h[64] = "";
    char serv[16] = "";
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0 &&
        getnameinfo(reinterpret_cast<sockaddr *>(&ss), len, h, sizeof h, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        *bound = ss.ss_family == AF_INET6 ? "[" + std::string(h) + "]:" + serv
                                          : std::string(h) + ":" + serv;
    } else {
        *bound = text;
    }
    return true;
}

bool Supervisor::bind_listen(std::string *err) {
    if (!listen_on(cfg_.listen_host, cfg_.listen_port, "listen " + cfg_.listen, &listen_fd_,
                   &bound_, err)) {
        return false;
    }
    if (cfg_.cluster) {
        const cluster::NodeEntry *me = cfg_.cluster->find(cfg_.node_name);
        std::string at;
        if (!listen_on(me->host, me->port,
                       "cluster node " + me->name + " " + me->host + ":" + std::to_string(me->port),
                       &node_fd_, &at, err)) {
            return false;
        }
        log_->write(LogLevel::kInfo, "cluster: node %s listening for nodes on %s", me->name.c_str(),
                    at.c_str());
    }
    if (cfg_.admin_listen.empty()) return true;
    std::string where;
    if (!listen_on(cfg_.admin_host, cfg_.admin_port, "admin_listen " + cfg_.admin_listen,
                   &admin_fd_, &where, err)) {
        return false;
    }
    log_->write(LogLevel::kInfo, "admin: http://%s/ (status page), http://%s/metrics",
                where.c_str(), where.c_str());
    return true;
}

bool Supervisor::setup_events(std::string *err) {
    LoopFds fds;
    bool ok = open_loop_fds({SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1}, kTagSignal,
                            {{ch_.event_rd, kTagNotes}}, &fds, err);
    ep_ = fds.ep;
    sig_fd_ = fds.sig;
    if (ok && admin_fd_ >= 0) {
        struct epoll_event ev = {};
        ev.events = EPOLLIN;
        ev.data.u64 = kTagAdmin;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, admin_fd_, &ev) != 0) {
            *err = std::string("epoll_ctl(ADD) of admin_listen: ") + strerror(errno);
            return false;
        }
        admin_ = std::make_unique<AdminServer>(admin_fd_, ep_, kTagAdminClient, ch_.stats, log_);
    }
    return ok;
}

// Loads the plugin once in a short-lived child before anything starts, so that a plugin
// that cannot load (wrong ABI, missing symbols, no proc_pkg_cli) is one clear line and a
// refusal to start, instead of every child failing on it. The child keeps plugin code and
// its constructors out of the supervisor.
bool Supervisor::check_plugin(const Config &cfg) {
    pid_t pid = fork();
    if (pid < 0) {
        log_->write(LogLevel::kCrit, "fork for the plugin check: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        log_->set_role("check", -1);
        Plugin plugin;
        std::string err;
        if (!plugin.load(cfg.plugin, &err)) {
            log_->write(LogLevel::kError, "%s", err.c_str());
            _exit(2);
        }
        if (cfg.frame == FrameMode::kPlugin && !plugin.exports().get_pkg_len) {
            log_->write(LogLevel::kError, "frame plugin needs get_pkg_len; %s does not export it",
                        cfg.plugin.c_str());
            _exit(2);
        }
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    return false;
}

int Supervisor::run() {
    self_ = getpid();
    std::string err;
    if (!check_plugin(cfg_)) {
        log_->write(LogLevel::kError, "the plugin check failed: not starting");
        return 1;
    }
    plugin_id_ = file_id(cfg_.plugin);
    if (!bind_listen(&err) || !ch_.create(cfg_, &err) || !setup_events(&err)) {
        log_->write(LogLevel::kError, "cannot start: %s", err.c_str());
        return 1;
    }
    if (!publish_cluster(cfg_)) return 1;
    if (!spawn(conn_)) return 1;
    for (Child &w : workers_) {
        if (w.wanted() && !spawn(w)) {
            begin_stop(1);
            break;
        }
    }
    struct epoll_event events[8];
    while (!done_) {
        int n = epoll_wait(ep_, events, 8, next_timeout());
        if (n < 0 && errno != EINTR) {
            log_->write(LogLevel::kAlert, "epoll_wait: %s", strerror(errno));
            kill_all(SIGKILL);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag == kTagAdmin) {
                admin_->on_accept();
            } else if (admin_ && admin_->owns(tag)) {
                admin_->on_client(tag, events[i].events);
            } else if (events[i].data.u64 == kTagSignal) {
                struct signalfd_siginfo si;
                while (read(sig_fd_, &si, sizeof si) == sizeof si)
                    on_signal(int(si.ssi_signo));
            } else {
                ChildNote note;
                while (read(ch_.event_rd, &note, sizeof note) == sizeof note)
                    on_note(note);
            }
        }
        run_timers();
    }
    log_->write(LogLevel::kInfo, "asyncd stopped");
    return exit_code_;
}

bool Supervisor::spawn(Child &c) {
    if (c.is_conn) {
        ch_.state->conn_epoch.fetch_add(1);
    } else {
        ch_.state->workers[c.index].busy_since_ms.store(0);  // the dead one's stamp
    }
    c.hang_killed = false;
    pid_t pid = fork();
    if (pid < 0) {
        log_->write(LogLevel::kCrit, "fork for %s: %s", name(c).c_str(), strerror(errno));
        return false;
    }
    if (pid == 0) child_main(c);
    c.pid = pid;
    c.ready_seen = false;
    set_state(c, ChildState::kStarting);
    c.config_id = config_id_;
    c.roll_spawned = c.rolling;
    if (!c.is_conn) c.packets_at_start = get(ch_.stats->workers[c.index].packets);
    if (!c.is_conn) set(ch_.stats->workers[c.index].pid, uint64_t(pid));
    c.started_ms = monotonic_ms();
    c.restart_at_ms = 0;
    return true;
}

void Supervisor::child_main(Child &c) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != self_) _exit(0);  // the supervisor died before the line above
    // Undo what the supervisor set up for itself. Ctrl-C reaches the whole process group:
    // the supervisor alone decides what happens, so children ignore SIGINT.
    close(sig_fd_);
    close(ep_);
    if (pid_fd_ >= 0) close(pid_fd_);
    if (admin_fd_ >= 0) close(admin_fd_);
    if (admin_) admin_->close_in_child();
    // USR1 (reopen the log) and USR2 (reload) stay blocked until the child's own signalfd
    // takes them: one that came before would otherwise kill it.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_SETMASK, &set, nullptr);
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    ch_.enter_child();
    int rc;
    if (c.is_conn) {
        proctitle_set("asyncd: conn", "asyncd-conn");
        log_->set_role("conn", -1);
        conn::ConnServer server(cfg_, &ch_, listen_fd_, node_fd_, log_);
        rc = server.run();
    } else {
        close(listen_fd_);
        if (node_fd_ >= 0) close(node_fd_);
        std::string title = "asyncd: work " + std::to_string(c.index);
        std::string pname = "asyncd-work" + std::to_string(c.index);
        proctitle_set(title.c_str(), pname.c_str());
        log_->set_role("work", c.index);
        work::Worker worker(cfg_, &ch_, c.index, log_);
        rc = worker.run();
    }
    _exit(rc);
}

void Supervisor::on_signal(int signo) {
    switch (signo) {
        case SIGCHLD:
            reap_children();
            break;
        case SIGQUIT:
            if (stop_ == Stop::kNone && !quit_deadline_ms_) {
                // Graceful: stop accepting, let the clients finish and leave (at most
                // shutdown_timeout), then the stop in order.
                log_->write(LogLevel::kInfo,
                            "signal %d: not accepting; stopping once the clients have left "
                            "(at most %d s)",
                            signo, cfg_.shutdown_timeout);
                quit_deadline_ms_ = monotonic_ms() + uint64_t(cfg_.shutdown_timeout) * 1000;
                ch_.state->quiesce.store(1, std::memory_order_release);
                ch_.conn_wake.signal();
                break;
            }
            [[fallthrough]];
        case SIGTERM:
        case SIGINT:
            if (stop_ != Stop::kNone) {
                log_->write(LogLevel::kWarn, "second stop signal: killing every child");
                stop_ = Stop::kKilled;
                kill_all(SIGKILL);
                exit_code_ = 1;
                advance_stop();
                break;
            }
            log_->write(LogLevel::kInfo, "signal %d: stopping", signo);
            begin_stop(0);
            break;
        case SIGHUP:
            if (stop_ == Stop::kNone) reload();
            break;
        case SIGUSR1: {
            std::string err;
            if (!log_->reopen(&err)) {
                log_->write(LogLevel::kError, "reopening the log: %s", err.c_str());
            } else {
                log_->write(LogLevel::kInfo, "reopened the log file");
            }
            if (conn_.pid) kill(conn_.pid, SIGUSR1);
            for (Child &w : workers_) {
                if (w.pid) kill(w.pid, SIGUSR1);
            }
            break;
        }
    }
}

// The identity of a file: a plugin rebuilt in place is a changed plugin.
std::string Supervisor::file_id(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return "";
    return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
           std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
}

// SIGHUP: re-read and check the whole config first; a bad one changes nothing. Then what
// can change live changes, what cannot is named, and a changed plugin restarts the workers
// one at a time, each after it has drained (no client connection is dropped).
bool Supervisor::publish_cluster(const Config &cfg) {
    if (!cfg.cluster) return true;
    std::string blob = cluster::encode_cluster(*cfg.cluster);
    if (blob.size() > sizeof ch_.state->cluster_table) {
        log_->write(LogLevel::kError, "cluster %s: %zu bytes as a table, above %zu",
                    cfg.cluster_file.c_str(), blob.size(), sizeof ch_.state->cluster_table);
        return false;
    }
    memcpy(ch_.state->cluster_table, blob.data(), blob.size());
    ch_.state->cluster_len.store(uint32_t(blob.size()), std::memory_order_relaxed);
    ch_.state->cluster_generation.fetch_add(1, std::memory_order_release);
    return true;
}

void Supervisor::reload() {
    Config next;
    std::string err;
    if (!load_config(cfg_.path, &next, &err)) {
        log_->write(LogLevel::kError, "reload: %s; keeping the running config", err.c_str());
        return;
    }
    if (!check_plugin(next)) {
        log_->write(LogLevel::kError,
                    "reload: the plugin check failed; keeping the running config");
        return;
    }
    // What the rings, the listen socket and the process layout were made from needs a
    // restart: keep the running values and say so. The config's key table says which.
    // A file that does not name max_workers keeps the running one (its default follows
    // `workers`, and the rings were made at start).
    if (!next.max_workers_set) next.max_workers = cfg_.max_workers;
    std::string kept;
    for (const ConfigKey &k : config_keys()) {
        if (k.on_reload != OnReload::kRestart) continue;
        if (k.differs(next, cfg_)) kept += kept.empty() ? k.name : std::string(", ") + k.name;
        k.keep(&next, cfg_);
    }
    // The cluster: its nodes and options apply live (conn drains what changed); turning it
    // on or off, or moving this node's own address, needs a restart.
    if (!next.cluster != !cfg_.cluster) {
        log_->write(LogLevel::kWarn,
                    "reload: the cluster was turned %s, which needs a restart: kept as running",
                    next.cluster ? "on" : "off");
        next.cluster = cfg_.cluster;
        next.cluster_file = cfg_.cluster_file;
    } else if (next.cluster) {
        const cluster::NodeEntry *was = cfg_.cluster->find(cfg_.node_name);
        const cluster::NodeEntry *now = next.cluster->find(next.node_name);
        if (was && now && (was->host != now->host || was->port != now->port)) {
            log_->write(LogLevel::kWarn,
                        "reload: node %s's own address changed (%s:%u), which needs a restart: "
                        "kept the running cluster table",
                        next.node_name.c_str(), now->host.c_str(), unsigned(now->port));
            next.cluster = cfg_.cluster;
            next.cluster_file = cfg_.cluster_file;
        }
    }
    if (next.workers > cfg_.max_workers) {
        log_->write(LogLevel::kWarn,
                    "reload: workers %d is above max_workers %d, which needs a restart: "
                    "keeping %d",
                    next.workers, cfg_.max_workers, cfg_.workers);
        next.workers = cfg_.workers;
    }
    if (!kept.empty()) {
        log_->write(LogLevel::kWarn, "reload: %s changed, which needs a restart: kept as running",
                    kept.c_str());
    }
    std::string id = file_id(next.plugin);
    bool plugin_changed = next.plugin != cfg_.plugin || id != plugin_id_;
    // What a worker reads only as it starts: a change of it restarts them one at a time, and
    // is sent back if the first cannot start with it.
    bool roll = plugin_changed || next.plugin_values != cfg_.plugin_values ||
                next.worker_max_rss != cfg_.worker_max_rss ||
                next.handler_timing != cfg_.handler_timing;
    // The config to go back to is the last one known to start: while a roll has not proven
    // the previous reload, a new one does not make it the fallback.
    bool proving = roll_index_ <= workers_.size();
    if (!proving) prev_cfg_ = cfg_;
    auto old_cluster = cfg_.cluster;
    cfg_ = next;
    bump(ch_.stats->reloads);
    plugin_id_ = id;
    log_->set_level(cfg_.log_level);
    if (plugin_changed) announce_plugin();
    if (roll) {
        if (!proving) prev_config_id_ = config_id_;
        config_id_ = ++last_config_id_;
    }
    ch_.state->limits.publish(cfg_);
    if (cfg_.cluster != old_cluster) publish_cluster(cfg_);
    if (conn_.pid) kill(conn_.pid, SIGUSR2);  // conn takes its limits (and plugin) from it
    if (cfg_.workers != prev_cfg_.workers) resize_workers(prev_cfg_.workers, cfg_.workers);
    log_->write(LogLevel::kInfo, "reload: %s applied%s", cfg_.path.c_str(),
                !roll ? ""
                : plugin_changed
                    ? "; restarting the workers one at a time for the new plugin"
                    : "; restarting the workers one at a time for the new plugin settings");
    if (roll) {
        rolling_back_ = false;
        roll_index_ = 0;
        roll_next();
    }
}

// The new plugin of a reload did not come up in the first worker restarted for it (init
// refused, crashed, or the process left before it was ready): the reload goes back. conn
// goes back to the old plugin, and so does every worker already started with the new one.
void Supervisor::revert_reload(Child &c, const char *how) {
    log_->write(LogLevel::kError,
                "reload: %s (pid %d) %s with the new plugin before it was ready; going back to "
                "the old config",
                name(c).c_str(), int(c.pid), how);
    int workers_now = cfg_.workers;
    cfg_ = prev_cfg_;
    plugin_id_ = file_id(cfg_.plugin);
    config_id_ = prev_config_id_;
    log_->set_level(cfg_.log_level);
    announce_plugin();  // conn goes back too, to the old plugin and the old limits
    ch_.state->limits.publish(cfg_);
    publish_cluster(cfg_);
    if (conn_.pid) kill(conn_.pid, SIGUSR2);
    if (workers_now != cfg_.workers) resize_workers(workers_now, cfg_.workers);
    for (Child &w : workers_)
        w.rolling = w.roll_spawned = false;
    rolling_back_ = true;
    roll_index_ = 0;
    roll_next();  // the workers that run the new plugin already, if any
}

// A reload changed `workers`. New slots start at once and take new connections; a retiring
// worker takes no new connections, serves the ones it has, and is stopped when conn says
// its last one has closed (note 'R'), so that no client is dropped.
void Supervisor::resize_workers(int from, int to) {
    for (int i = 0; i < int(workers_.size()); i++) {
        Child &w = workers_[size_t(i)];
        if (i < to && w.state == ChildState::kRetired) {
            set_state(w, ChildState::kIdle);
            w.backoff = Backoff();
            // A new slot starts with the reload's config: like a roll's first worker, one
            // that cannot come up sends the reload back.
            if (!w.pid && spawn(w)) w.roll_spawned = true;
        } else if (i < to && w.state == ChildState::kRetiring) {
            w.retire_cancelled = true;  // it stops, and starts again at once
        }
    }
    ch_.state->active_workers.store(uint32_t(to), std::memory_order_release);
    ch_.conn_wake.signal();
    if (to > from) {
        log_->write(LogLevel::kInfo, "reload: workers %d -> %d: started %d", from, to, to - from);
    } else {
        log_->write(LogLevel::kInfo,
                    "reload: workers %d -> %d: workers %d..%d take no new connections and stop "
                    "when their last one closes",
                    from, to, to, from - 1);
    }
}

void Supervisor::retire(int index) {
    if (index < 0 || index >= int(workers_.size())) return;
    Child &w = workers_[size_t(index)];
    if (index < cfg_.workers || !w.wanted() || stop_ != Stop::kNone) return;  // wanted again
    if (w.state == ChildState::kRetiring) return;
    if (!w.pid) {
        set_state(w, ChildState::kRetired);
        w.restart_at_ms = 0;
        return;
    }
    w.retire_cancelled = false;
    set_state(w, ChildState::kRetiring);
    kill(w.pid, SIGTERM);  // it answers what is in its ring and exits
}

// Tells conn which plugin to frame and route with: the path, then a new generation.
void Supervisor::announce_plugin() {
    snprintf(ch_.state->plugin_path, sizeof ch_.state->plugin_path, "%s", cfg_.plugin.c_str());
    ch_.state->plugin_generation.fetch_add(1, std::memory_order_release);
}

// Asks the next worker of a reload to finish its batch and exit; its replacement starts
// with the new config, and its ready note moves the roll on.
void Supervisor::roll_next() {
    for (; roll_index_ < workers_.size(); roll_index_++) {
        Child &w = workers_[roll_index_];
        if (stop_ != Stop::kNone || w.config_id == config_id_) continue;
        if (w.pid && w.state == ChildState::kStarting) {
            // Not ready yet (started for an earlier reload, or restarting): its ready note
            // rolls it, or its death before that sends the reload back.
            w.rolling = true;
            return;
        }
        if (w.pid && w.state == ChildState::kServing) {
            w.rolling = true;
            set_state(w, ChildState::kRolling);
            kill(w.pid, SIGUSR2);
            return;
        }
        if (w.state == ChildState::kBackoff) {
            // Down, waiting out its back-off: it is tried with the new config now, so that a
            // plugin that will not start on it sends the reload back too.
            w.rolling = true;
            if (spawn(w)) return;
            w.rolling = false;
        }
    }
    if (roll_index_ == workers_.size()) {
        log_->write(LogLevel::kInfo, "reload: every worker runs plugin %s", cfg_.plugin.c_str());
        roll_index_ = workers_.size() + 1;
        rolling_back_ = false;
    }
}

void Supervisor::reap_children() {
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        if (conn_.pid == pid) {
            on_exit(conn_, status);
            continue;
        }
        for (Child &w : workers_) {
            if (w.pid == pid) on_exit(w, status);
        }
    }
}

void Supervisor::on_exit(Child &c, int status) {
    pid_t pid = c.pid;
    bool was_ready = c.ready_seen;  // this process said it was ready
    bool told_to_roll = c.state == ChildState::kRolling;
    bool retiring = c.state == ChildState::kRetiring;
    c.pid = 0;
    if (!c.is_conn) set(ch_.stats->workers[c.index].pid, 0);
    bool recycled = WIFEXITED(status) && WEXITSTATUS(status) == kExitRecycle;
    // A worker in back-off takes no new connections (conn sends them to those that serve);
    // one recycled between two packets is back at once and keeps its place.
    if (!c.is_conn && !recycled) set_serving(c, false);
    if (retiring && stop_ == Stop::kNone) {
        if (c.retire_cancelled) {
            c.retire_cancelled = false;
            set_state(c, ChildState::kBackoff);
            c.restart_at_ms = monotonic_ms();
            log_->write(LogLevel::kInfo, "%s (pid %d) stopped; wanted again: restarting now",
                        name(c).c_str(), int(pid));
            return;
        }
        set_state(c, ChildState::kRetired);
        log_->write(LogLevel::kInfo, "%s (pid %d) retired", name(c).c_str(), int(pid));
        return;
    }
    uint64_t now = monotonic_ms();
    char how[96];
    if (WIFSIGNALED(status)) {
        snprintf(how, sizeof how, "killed by signal %d (%s%s), %s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), c.hang_killed ? ", a hang" : "",
                 WCOREDUMP(status) ? "core dumped" : "no core");
    } else {
        snprintf(how, sizeof how, "exited with code %d", WEXITSTATUS(status));
    }
    if (stop_ != Stop::kNone) {
        log_->write(LogLevel::kInfo, "%s (pid %d) %s", name(c).c_str(), int(pid), how);
        bool fatal = WIFEXITED(status) && WEXITSTATUS(status) == kExitFatal;
        set_state(c, fatal ? ChildState::kFatal : ChildState::kStopped);
        // Until conn says its input has stopped, it may still put packets into the rings: a
        // worker gone meanwhile does not move the stop on (restart_for_stop starts it again
        // once conn is through), conn gone does.
        if (stop_ != Stop::kInput || c.is_conn) advance_stop();
        return;
    }
    if (!c.is_conn && c.roll_spawned && !was_ready && !rolling_back_) {
        // Started with the reload's plugin, and gone before it was ready.
        c.pid = pid;  // for the line
        revert_reload(c, how);
        c.pid = 0;
        if (!c.is_conn && c.index >= cfg_.workers) {
            set_state(c, ChildState::kRetired);  // a slot only the reload wanted
            c.restart_at_ms = 0;
            return;
        }
        set_state(c, ChildState::kBackoff);
        c.restart_at_ms = now;
        return;
    }
    if (!c.is_conn && !was_ready && c.config_id != config_id_ && !recycled) {
        // Started with a config that has been sent back since: its failure says nothing
        // about the config that runs now. Its slot starts again with that one (or retires,
        // if only the sent-back config wanted it).
        log_->write(LogLevel::kInfo, "%s (pid %d) %s, started with a config since sent back",
                    name(c).c_str(), int(pid), how);
        c.roll_spawned = false;
        if (c.index >= cfg_.workers) {
            set_state(c, ChildState::kRetired);
            c.restart_at_ms = 0;
        } else {
            set_state(c, ChildState::kBackoff);
            c.restart_at_ms = now;
        }
        return;
    }
    if (recycled && !c.is_conn) {
        set_state(c, ChildState::kBackoff);
        // Recycled on purpose (worker_max_rss, or a reload), between two packets: no
        // back-off, unless it passes worker_max_rss as soon as it serves (a life of one or
        // two packets: the plugin's working size is above the cap, not a leak).
        uint64_t served = get(ch_.stats->workers[c.index].packets) - c.packets_at_start;
        if (!told_to_roll && served <= kShortLifePackets) {
            uint64_t delay = c.backoff.next_delay(c.started_ms, now);
            c.restarts++;
            bump(ch_.stats->workers[c.index].restarts);
            c.restart_at_ms = now + delay;
            log_->write(LogLevel::kWarn,
                        "%s (pid %d) recycled at worker_max_rss after %llu packets: restart #%d "
                        "in %llu ms (is worker_max_rss below what the plugin needs to serve?)",
                        name(c).c_str(), int(pid), (unsigned long long)served, c.restarts,
                        (unsigned long long)delay);
            return;
        }
        c.restart_at_ms = now;
        log_->write(LogLevel::kInfo, "%s (pid %d) recycled%s: restarting now", name(c).c_str(),
                    int(pid), told_to_roll ? " for the reload" : " at worker_max_rss");
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == kExitFatal) {
        set_state(c, ChildState::kFatal);
        if (!c.is_conn) set_fatal(c);
        log_->write(LogLevel::kError, "%s (pid %d) %s (fatal): not restarted", name(c).c_str(),
                    int(pid), how);
        bool any = false;
        for (const Child &w : workers_)
            any = any || (w.wanted() && w.state != ChildState::kFatal);
        if (c.is_conn || !any) {
            log_->write(LogLevel::kError, "nothing can serve: stopping");
            begin_stop(1);
        } else {
            check_ready();
        }
        return;
    }
    uint64_t delay = c.backoff.next_delay(c.started_ms, now);
    c.restarts++;
    if (!c.is_conn) bump(ch_.stats->workers[c.index].restarts);
    set_state(c, ChildState::kBackoff);
    c.restart_at_ms = now + delay;
    log_->write(LogLevel::kWarn, "%s (pid %d) %s; restart #%d in %llu ms", name(c).c_str(),
                int(pid), how, c.restarts, (unsigned long long)delay);
}

void Supervisor::on_note(const ChildNote &n) {
    if (n.kind == 'C') {
        if (conn_.state == ChildState::kStarting) set_state(conn_, ChildState::kServing);
    } else if (n.kind == 'W' && n.index < workers_.size()) {
        workers_[n.index].ready_seen = true;
        if (workers_[n.index].state == ChildState::kStarting) {
            set_state(workers_[n.index], ChildState::kServing);
        }
        set_serving(workers_[n.index], true);
        Child &w = workers_[n.index];
        w.roll_spawned = false;
        if (w.rolling && w.config_id != config_id_ && stop_ == Stop::kNone) {
            // Ready, but on an older config than the roll's: roll it now.
            set_state(w, ChildState::kRolling);
            kill(w.pid, SIGUSR2);
        } else if (w.rolling) {
            w.rolling = false;
            roll_index_ = n.index + 1;
            roll_next();
        }
        if (workers_[n.index].restarts) {
            log_->write(LogLevel::kInfo, "worker %u (pid %d) serving again", unsigned(n.index),
                        int(n.pid));
        }
    } else if (n.kind == 'I') {
        if (stop_ == Stop::kInput) advance_stop();
        return;
    } else if (n.kind == 'R') {
        retire(n.index);
        return;
    } else if (n.kind == 'Q') {
        if (quit_deadline_ms_ && stop_ == Stop::kNone) {
            log_->write(LogLevel::kInfo, "every client has left: stopping");
            begin_stop(0);
        }
        return;
    }
    check_ready();
}

// "asyncd ready" once conn and every worker that can serve are up (a fatal slot does not
// hold it back: it is said once, at ERROR, and takes no connections).
void Supervisor::check_ready() {
    if (ready_logged_ || conn_.state != ChildState::kServing) return;
    int serving = 0;
    for (const Child &w : workers_) {
        bool settled = w.state == ChildState::kServing || w.state == ChildState::kFatal ||
                       w.state == ChildState::kRetired;
        if (!settled) return;
        serving += w.state == ChildState::kServing;
    }
    if (!serving) return;
    ready_logged_ = true;
    log_->write(LogLevel::kInfo, "asyncd ready: listening on %s, %d workers, plugin %s",
                bound_.c_str(), serving, cfg_.plugin.c_str());
}

// The workers conn may bind new connections to: ready, and not dead or in back-off.
void Supervisor::set_serving(const Child &c, bool serving) {
    std::atomic<uint64_t> &word = ch_.state->serving[c.index / 64];
    uint64_t bit = uint64_t(1) << (c.index % 64);
    uint64_t was = word.load(std::memory_order_relaxed);
    uint64_t now = serving ? was | bit : was & ~bit;
    if (now == was) return;
    word.store(now, std::memory_order_release);
    ch_.conn_wake.signal();
}

// A slot that will never serve: conn closes the connections bound to it.
void Supervisor::set_fatal(const Child &c) {
    std::atomic<uint64_t> &word = ch_.state->fatal[c.index / 64];
    word.store(word.load(std::memory_order_relaxed) | (uint64_t(1) << (c.index % 64)),
               std::memory_order_release);
    ch_.state->fatal_generation.fetch_add(1, std::memory_order_release);
    ch_.conn_wake.signal();
}

// The stop, in order: conn stops taking input; the workers drain their rings, call
// fini_service and exit; conn writes what they answered and exits. Each step starts when
// the one before is through; shutdown_timeout bounds the whole.
void Supervisor::begin_stop(int exit_code) {
    if (stop_ != Stop::kNone) return;
    exit_code_ = exit_code;
    stop_ = Stop::kInput;
    stop_deadline_ms_ = monotonic_ms() + uint64_t(cfg_.shutdown_timeout) * 1000;
    ch_.state->stop_deadline_ms.store(stop_deadline_ms_, std::memory_order_release);
    for (Child *c : all_children()) {
        if (c->state == ChildState::kBackoff) set_state(*c, ChildState::kStopped);
        c->restart_at_ms = 0;
    }
    ch_.state->phase.store(uint32_t(Phase::kStopInput), std::memory_order_release);
    ch_.conn_wake.signal();
    if (!conn_.pid) advance_stop();
}

void Supervisor::advance_stop() {
    if (stop_ == Stop::kInput) {
        stop_ = Stop::kWorkers;
        // A worker started from now on drains its ring and stops without being told.
        ch_.state->workers_stop.store(1, std::memory_order_release);
        for (Child &w : workers_) {
            if (w.pid) kill(w.pid, SIGTERM);
        }
    }
    if (stop_ == Stop::kWorkers) restart_for_stop();
    if (stop_ == Stop::kWorkers && !any_worker_running()) {
        stop_ = Stop::kOutput;
        ch_.state->phase.store(uint32_t(Phase::kDrainOutput), std::memory_order_release);
        ch_.conn_wake.signal();
    }
    if (stop_ == Stop::kOutput && !conn_.pid) done_ = true;
    if (stop_ == Stop::kKilled && !conn_.pid && !any_worker_running()) done_ = true;
}

// In a stop, every packet accepted into a ring is answered: a slot whose worker is not
// running (in back-off, or gone before its ring was empty) is started for it, at once. A slot
// that cannot (fatal, or dead kMaxStopSpawns times on it) says what it gives up.
bool Supervisor::restart_for_stop() {
    bool started = false;
    for (Child &w : workers_) {
        if (w.pid || w.given_up) continue;
        shmq::Ring &ring = ch_.workers[size_t(w.index)]->in;
        if (ring.used_bytes() == 0) continue;
        if (w.state == ChildState::kFatal) {
            report_abandoned(w, "its plugin cannot start (fatal)");
            continue;
        }
        if (w.stop_spawns >= kMaxStopSpawns) {
            report_abandoned(w, "its worker kept dying on them");
            continue;
        }
        w.stop_spawns++;
        log_->write(LogLevel::kInfo, "stop: starting %s to answer the %llu records in its ring",
                    name(w).c_str(), (unsigned long long)ring.count_messages());
        if (spawn(w)) {
            started = true;
        } else {
            report_abandoned(w, "fork failed");
        }
    }
    return started;
}

void Supervisor::report_abandoned(Child &w, const char *why) {
    w.given_up = true;
    shmq::Ring &ring = ch_.workers[size_t(w.index)]->in;
    log_->write(LogLevel::kWarn,
                "stop: giving up %llu records (%llu bytes) in %s's ring, never handed to the "
                "plugin: %s",
                (unsigned long long)ring.count_messages(), (unsigned long long)ring.used_bytes(),
                name(w).c_str(), why);
}

const char *Supervisor::state_name(ChildState s) {
    switch (s) {
        case ChildState::kIdle:
            return "idle";
        case ChildState::kStarting:
            return "starting";
        case ChildState::kServing:
            return "serving";
        case ChildState::kRolling:
            return "rolling";
        case ChildState::kRetiring:
            return "retiring";
        case ChildState::kBackoff:
            return "back-off";
        case ChildState::kFatal:
            return "fatal";
        case ChildState::kRetired:
            return "retired";
        case ChildState::kStopped:
            return "stopped";
    }
    return "?";
}

// The one place a child slot's state changes.
void Supervisor::set_state(Child &c, ChildState s) {
    if (c.state == s) return;
    log_->write(LogLevel::kDebug, "%s: %s -> %s", name(c).c_str(), state_name(c.state),
                state_name(s));
    c.state = s;
}

std::vector<Supervisor::Child *> Supervisor::all_children() {
    std::vector<Child *> all{&conn_};
    for (Child &w : workers_)
        all.push_back(&w);
    return all;
}

bool Supervisor::any_worker_running() const {
    for (const Child &w : workers_) {
        if (w.pid) return true;
    }
    return false;
}

void Supervisor::kill_all(int sig) {
    if (conn_.pid) kill(conn_.pid, sig);
    for (Child &w : workers_) {
        if (w.pid) kill(w.pid, sig);
    }
}

int Supervisor::next_timeout() {
    uint64_t now = monotonic_ms();
    uint64_t next = UINT64_MAX;
    if (stop_ != Stop::kNone) next = stop_deadline_ms_;
    if (quit_deadline_ms_ && stop_ == Stop::kNone) next = quit_deadline_ms_;
    if (cfg_.handler_timeout_ms > 0) next = std::min(next, next_hang_check_ms_);
    next = std::min(next, next_sample_ms_);
    if (admin_) {
        int in = admin_->expire(now);  // closes the admin clients past their deadline
        if (in >= 0) next = std::min(next, now + uint64_t(in));
    }
    if (conn_.restart_at_ms) next = std::min(next, conn_.restart_at_ms);
    for (const Child &w : workers_) {
        if (w.restart_at_ms) next = std::min(next, w.restart_at_ms);
    }
    if (next == UINT64_MAX) return -1;
    return next <= now ? 0 : int(std::min<uint64_t>(next - now, 60000));
}

// A worker that has been inside one plugin callback for longer than handler_timeout is
// hung: kill it (its record gets a strike, being in flight) and let it be restarted.
void Supervisor::check_hangs(uint64_t now) {
    if (cfg_.handler_timeout_ms <= 0 || now < next_hang_check_ms_) return;
    // Checked 10 times per timeout (at most every 500 ms): a hang is caught within 1.1x.
    next_hang_check_ms_ = now + std::min<uint64_t>(500, uint64_t(cfg_.handler_timeout_ms) / 10 + 1);
    for (Child &w : workers_) {
        if (!w.pid || w.hang_killed) continue;
        const WorkerState &s = ch_.state->workers[w.index];
        uint64_t since = s.busy_since_ms.load(std::memory_order_relaxed);
        if (!since || now <= since || now - since < uint64_t(cfg_.handler_timeout_ms)) continue;
        log_->write(LogLevel::kWarn,
                    "worker %d (pid %d) stuck in %s for %llu ms (handler_timeout %d ms): killing",
                    w.index, int(w.pid), callback_name(Callback(s.callback.load())),
                    (unsigned long long)(now - since), cfg_.handler_timeout_ms);
        w.hang_killed = true;
        kill(w.pid, SIGKILL);
    }
}

void Supervisor::run_timers() {
    uint64_t now = monotonic_ms();
    check_hangs(now);
    if (now >= next_sample_ms_) {
        history_.sample(ch_.stats);
        next_sample_ms_ =
            next_sample_ms_ ? std::max(next_sample_ms_ + 1000, now + 500) : now + 1000;
    }
    if (quit_deadline_ms_ && stop_ == Stop::kNone && now >= quit_deadline_ms_) {
        log_->write(LogLevel::kWarn,
                    "shutdown_timeout (%d s) passed with clients connected: "
                    "stopping",
                    cfg_.shutdown_timeout);
        begin_stop(0);
    }
    if (stop_ != Stop::kNone) {
        if (now < stop_deadline_ms_ || done_) return;
        log_->write(LogLevel::kError, "shutdown_timeout (%d s) passed: killing what is left",
                    cfg_.shutdown_timeout);
        for (Child &w : workers_) {
            if (!w.given_up && ch_.workers[size_t(w.index)]->in.used_bytes()) {
                report_abandoned(w, "shutdown_timeout passed");
            }
        }
        kill_all(SIGKILL);
        stop_deadline_ms_ = now + 1000;
        exit_code_ = 1;
        return;
    }
    Child *due[1 + 256];
    size_t ndue = 0;
    if (conn_.restart_at_ms && conn_.restart_at_ms <= now) due[ndue++] = &conn_;
    for (Child &w : workers_) {
        if (w.restart_at_ms && w.restart_at_ms <= now) due[ndue++] = &w;
    }
    for (size_t i = 0; i < ndue; i++) {
        if (!spawn(*due[i])) due[i]->restart_at_ms = now + due[i]->backoff.current_ms();
    }
}

}  // namespace asyncd
