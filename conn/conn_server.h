// The conn process: one event loop that owns every client socket. Its clients (accept,
// framing, buffers, limits) live in conn/clients, one worker's rings as conn sees them in
// conn/port; this is what ties them together: the loop and its hooks, conn's phase through a
// stop, signals, reloads, and the exit line.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "conn/clients.h"
#include "conn/nodes.h"
#include "conn/port.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/plugin.h"

namespace asyncd::conn {

// conn's phase. It only moves forward.
enum class ConnPhase : uint8_t {
    kServing,       // accepting and reading
    kQuiescing,     // after SIGQUIT: no new connections, the ones here are served
    kInputStopped,  // a stop: nothing more is read; the workers answer what the rings hold
    kDraining,      // the workers are done: write what is left, then exit
    kDone,
};
const char *phase_name(ConnPhase p);

class ConnServer {
  public:
    ConnServer(const Config &cfg, Channels *ch, int listen_fd, int node_fd, Log *log);
    ~ConnServer();
    ConnServer(const ConnServer &) = delete;
    ConnServer &operator=(const ConnServer &) = delete;

    // Runs until the supervisor's stop completes, SIGTERM, or the supervisor dies. Returns
    // the exit code: 0, or 2 when it cannot start at all (fatal, not restarted).
    int run();

  private:
    bool setup(std::string *err);
    void on_signal();
    void reload_limits();
    void reload_plugin();
    void after_events();
    void end_of_turn();
    bool may_sleep();
    void check_phase();
    void set_phase(ConnPhase p);
    void check_retirements();
    void close_fatal_bound();
    bool drained();
    void log_exit();

    Config cfg_;  // a copy: a reload changes the client limits in it
    Channels *ch_;
    int listen_fd_;
    Log *log_;
    Loop loop_;
    std::vector<std::unique_ptr<Port>> ports_;
    std::unique_ptr<Clients> clients_;
    int node_fd_;                   // the cluster listen socket (-1: no cluster)
    std::unique_ptr<Nodes> nodes_;  // the cluster's links, when there is one
    std::unique_ptr<Plugin> plugin_ = std::make_unique<Plugin>();
    uint32_t plugin_generation_ = 0;
    uint32_t fatal_generation_ = 0;  // the supervisor's, when conn last looked
    int sig_fd_ = -1;
    FnHandler signal_handler_;
    FnHandler wake_handler_;
    FnHandler death_handler_;
    ConnPhase phase_ = ConnPhase::kServing;
    bool more_ = false;        // a ring was left with work: do not sleep
    uint64_t moved_mark_ = 0;  // moved() at the end of the last turn
    uint64_t moved() const { return get(st_->packets_in) + get(st_->reply_records); }
    bool quiet_noted_ = false;  // told the supervisor the last client left
    bool quit_ = false;
    ConnStats *st_ = nullptr;  // conn's counters, in shared memory (core/stats.h)
};

}  // namespace asyncd::conn
