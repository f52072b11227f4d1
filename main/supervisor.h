// The supervisor: binds the listen socket, creates every ring and pipe, forks the conn
// process and the workers, restarts the ones that die (with back-off), and runs the stop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include <memory>

#include "core/backoff.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/log.h"
#include "main/admin.h"

namespace asyncd {

class Supervisor {
  public:
    Supervisor(const Config &cfg, Log *log);
    ~Supervisor();
    Supervisor(const Supervisor &) = delete;
    Supervisor &operator=(const Supervisor &) = delete;

    // Runs until stopped. Returns the process exit code: 0 after a clean stop, 1 when it
    // could not start or nothing could serve.
    int run();
    // The locked pid file: children close it, so that its lock is the supervisor's alone.
    void set_pid_fd(int fd) { pid_fd_ = fd; }

  private:
    // One child slot: the conn process, or worker `index`.
    struct Child {
        bool is_conn = false;
        int index = 0;
        pid_t pid = 0;
        uint64_t started_ms = 0;
        uint64_t restart_at_ms = 0;  // 0: no restart pending
        int restarts = 0;
        bool fatal = false;
        bool ready = false;
        bool hang_killed = false;
        bool rolling = false;           // asked to exit for a reload; its replacement moves it on
        bool enabled = true;            // a slot of the running `workers` (or one retiring)
        bool retired = false;           // stopped for good: its exit is not a death
        bool roll_spawned = false;      // this process was started by a reload and is not ready yet
        bool given_up = false;          // a stop gave up on the records left in its ring
        int stop_spawns = 0;            // started during a stop to answer what its ring holds
        uint64_t packets_at_start = 0;  // its packets counter when this process started
        std::string plugin_id;          // file_id() of the plugin this process was started with
        Backoff backoff;
    };

    enum class Stop { kNone, kInput, kWorkers, kOutput };

    bool check_plugin(const Config &cfg);
    static std::string file_id(const std::string &path);
    void reload();
    void roll_next();
    void announce_plugin();
    void resize_workers(int from, int to);
    void retire(int index);
    bool bind_listen(std::string *err);
    void check_ready();
    void set_serving(const Child &c, bool serving);
    void set_fatal(const Child &c);
    bool restart_for_stop();
    void report_abandoned(Child &w, const char *why);
    void revert_reload(Child &c, const char *how);
    bool setup_events(std::string *err);
    bool spawn(Child &c);
    [[noreturn]] void child_main(Child &c);
    void on_signal(int signo);
    void reap_children();
    void on_exit(Child &c, int status);
    void on_note(const ChildNote &n);
    void begin_stop(int exit_code);
    void advance_stop();
    void kill_all(int sig);
    int next_timeout();
    void run_timers();
    void check_hangs(uint64_t now);
    bool any_worker_running() const;
    std::string name(const Child &c) const;

    Config cfg_;
    Config prev_cfg_;          // the config before the last reload, to go back to
    std::string plugin_id_;    // file_id() of the plugin the workers were started with
    size_t roll_index_ = 257;  // the worker a reload restarts next; past the end: none
    Log *log_;
    Channels ch_;
    int listen_fd_ = -1;
    std::string bound_;  // the address the listen socket got
    int ep_ = -1;
    int sig_fd_ = -1;
    int pid_fd_ = -1;
    int admin_fd_ = -1;
    std::unique_ptr<AdminServer> admin_;
    bool rolling_back_ = false;  // the roll in progress puts the previous config back
    pid_t self_ = 0;
    Child conn_;
    std::vector<Child> workers_;
    Stop stop_ = Stop::kNone;
    uint64_t stop_deadline_ms_ = 0;
    uint64_t quit_deadline_ms_ = 0;  // after SIGQUIT: when to stop with clients still there
    int exit_code_ = 0;
    bool done_ = false;
    bool ready_logged_ = false;
    uint64_t next_hang_check_ms_ = 0;
};

}  // namespace asyncd
