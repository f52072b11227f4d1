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
    // What a child slot is doing. Set only by set_state(), which logs each change.
    enum class ChildState : uint8_t {
        kIdle,      // wanted, not started yet
        kStarting,  // running, not ready yet
        kServing,   // ready
        kRolling,   // told to exit for a reload; its replacement starts at once
        kRetiring,  // told to stop for good (a reload lowered `workers`)
        kBackoff,   // dead; restart_at_ms says when it starts again
        kFatal,     // exited with code 2: never restarted
        kRetired,   // not part of the running `workers`
        kStopped,   // gone during a stop, not to be restarted
    };
    static const char *state_name(ChildState s);

    // One child slot: the conn process, or worker `index`.
    struct Child {
        bool is_conn = false;
        int index = 0;
        pid_t pid = 0;
        ChildState state = ChildState::kIdle;
        uint64_t started_ms = 0;
        uint64_t restart_at_ms = 0;  // 0: no restart pending
        int restarts = 0;
        bool hang_killed = false;
        // The roll of a reload: this slot was told to roll, and its replacement's ready note
        // moves the roll on; the process now running was started for it.
        bool rolling = false;
        bool roll_spawned = false;
        bool retire_cancelled = false;  // retiring, and wanted again before it stopped
        bool ready_seen = false;        // the process now running said it was ready
        bool wanted() const { return state != ChildState::kRetired; }
        bool given_up = false;          // a stop gave up on the records left in its ring
        int stop_spawns = 0;            // started during a stop to answer what its ring holds
        uint64_t packets_at_start = 0;  // its packets counter when this process started
        uint64_t config_id = 0;         // the worker config this process was started with
        Backoff backoff;
    };

    // The stop's steps; kKilled: a second stop signal killed every child, and nothing is
    // started or waited for but their exits.
    enum class Stop { kNone, kInput, kWorkers, kOutput, kKilled };

    bool check_plugin(const Config &cfg);
    static std::string file_id(const std::string &path);
    void reload();
    void roll_next();
    void announce_plugin();
    void resize_workers(int from, int to);
    void retire(int index);
    bool bind_listen(std::string *err);
    // The cluster table conn applies (at start and at a reload).
    bool publish_cluster(const Config &cfg);
    void check_ready();
    void set_state(Child &c, ChildState s);
    std::vector<Child *> all_children();
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
    Config prev_cfg_;        // the config before the last reload, to go back to
    std::string plugin_id_;  // file_id() of the plugin the workers were started with
    // What a worker is started with (plugin, its plugin.* values, worker_max_rss) changes
    // only by a reload that rolls the workers: each such config has an id, and a roll
    // restarts the workers started with another one.
    uint64_t config_id_ = 1, prev_config_id_ = 1, last_config_id_ = 1;
    size_t roll_index_ = 257;  // the worker a reload restarts next; past the end: none
    Log *log_;
    Channels ch_;
    int listen_fd_ = -1;
    int node_fd_ = -1;   // the cluster listen socket, when there is a cluster
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
    uint64_t next_sample_ms_ = 0;  // the status history's next one-a-second sample
    HistoryRecorder history_;
};

}  // namespace asyncd
