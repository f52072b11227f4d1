// conn's side of discovery (README, "Discovery"): the membership module (a shared object
// speaking cluster/discovery_abi.h, the ZooKeeper one by default) loaded with dlopen, its
// eventfd watched in conn's loop, and the views it reports turned into node addresses for
// Nodes, which merges them with the cluster file's table. Nothing here blocks: the module's
// own threads talk to the service.
//
// The last good view can be kept in a file (zk_cache): read at start, so that a node
// restarted while the service is away still knows its peers; written after each change.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/config.h"
#include "core/log.h"
#include "core/loop.h"

namespace asyncd::conn {

// One other node as the service lists it.
struct DiscoveredNode {
    std::string host;  // numeric, as the cluster file's
    uint16_t port = 0;
    std::string data;  // its registration, "addr=HOST:PORT workers=N ..."
};
using DiscoveredView = std::map<std::string, DiscoveredNode>;

// The module's path for cfg (zk_module, or asyncd_zk.so beside the binary, then
// ../lib/asyncd/ from it): "" with *err when none is there.
std::string discovery_module_path(const Config &cfg, std::string *err);
// What -t and a start check: the module loads and exports the interface. It is unloaded again.
bool check_discovery_module(const Config &cfg, std::string *err);

// text with its control bytes as '?', cut at max bytes: what the service said is never
// trusted to be one clean log line.
std::string printable(const char *text, size_t max = 512);

// "addr=HOST:PORT ..." into host and port; false when it names no numeric address.
bool parse_registration(const std::string &data, std::string *host, uint16_t *port);

class Discovery {
  public:
    // on_view: a new whole view (never called while the service is unreachable).
    Discovery(const Config *cfg, Loop *loop, Log *log,
              std::function<void(const DiscoveredView &)> on_view);
    ~Discovery();
    Discovery(const Discovery &) = delete;
    Discovery &operator=(const Discovery &) = delete;

    // Loads the module and starts it with this node's registration. The cached view, if
    // any, is handed to on_view first.
    [[nodiscard]] bool open(const std::string &self_addr, const std::string &data,
                            std::string *err);
    // A live node holds our name: conn must not serve (one CRIT line was written).
    bool refused() const { return refused_; }
    bool registered() const { return registered_; }

  private:
    void on_ready();
    void on_event(int kind, const char *a, const char *b);
    void read_cache();
    void write_cache(const DiscoveredView &v);

    const Config *cfg_;
    Loop *loop_;
    Log *log_;
    std::function<void(const DiscoveredView &)> on_view_;
    int efd_ = -1;
    void *dl_ = nullptr;
    void *handle_ = nullptr;
    void (*take_)(void *, void (*)(void *, int, const char *, const char *), void *) = nullptr;
    void (*close_)(void *) = nullptr;
    std::unique_ptr<FnHandler> handler_;
    DiscoveredView building_;  // a view being taken
    bool in_view_ = false;
    bool refused_ = false;
    bool registered_ = false;
    LogLimit log_limit_{20};  // lines about bad registrations
    struct Repeat {
        uint64_t last_ms = 0;
        uint64_t held = 0;
    };
    static constexpr uint64_t kRepeatMs = 30000;
    std::map<std::string, Repeat> repeats_;  // the library's lines, by kind
};

}  // namespace asyncd::conn
