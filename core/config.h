// The config file: `key value` lines, `#` comments, `include FILE`. Every key has a default
// (README lists them); an unknown key, a bad value or a missing plugin is an error naming
// the file and the line. `plugin.KEY VALUE` lines are the plugin's own, handed to it as they
// are (asyncd_config("KEY")).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cluster/cluster_config.h"
#include "core/log.h"

namespace asyncd {

enum class FrameMode { kLen32Be, kLen32Le, kPlugin };

inline constexpr int kMaxWorkers = 256;

const char *frame_mode_name(FrameMode mode);

struct Config {
    std::string path;  // the file it was loaded from

    std::string listen = "127.0.0.1:7000";
    std::string listen_host = "127.0.0.1";
    uint16_t listen_port = 7000;
    int workers = 2;
    int max_workers = 0;  // rings made at start; a reload may set workers up to it (0: workers)
    std::string plugin;   // resolved against the folder of the file that names it
    FrameMode frame = FrameMode::kLen32Be;
    size_t max_pkg_len = size_t(1) << 20;
    size_t max_reply_len = size_t(16) << 20;
    size_t ring_size = size_t(4) << 20;
    int max_conns = 10000;
    int idle_timeout = 0;  // seconds; 0: off
    int shutdown_timeout = 10;
    int busy_poll_us = 50;            // after work, poll this long before sleeping
    int busy_poll_contended_us = 20;  // the same while no CPU would sit idle
    int handler_timing = 64;  // the workers time one plugin callback in N of each kind; 0: none
    int handler_timeout_ms = 5000;          // a plugin callback running longer is a hang; 0: off
    int pkg_timeout_ms = 30000;             // a packet must be whole this long after its first byte
    size_t out_buf_soft = size_t(8) << 20;  // replies a client may leave unread for a while,
    int out_buf_soft_ms = 10000;            // this long,
    size_t out_buf_hard = size_t(64) << 20;  // and at most; 0 turns each off
    size_t worker_max_rss = 0;               // bytes; a worker above it is recycled; 0: off
    // The most bytes conn holds, over all connections, that it has read and not yet handed to
    // a worker (unfinished packets, and whole ones waiting for room in a ring); 0: off.
    // Default ("auto"): a sixteenth of the machine's memory, within 64M..1G, and at least
    // twice max_pkg_len.
    size_t input_budget = 0;
    bool input_budget_auto = true;
    LogLevel log_level = LogLevel::kInfo;
    std::string log_file = "-";
    bool daemon = false;       // detach from the terminal after the checks
    std::string admin_listen;  // HOST:PORT of the status page and /metrics; "": off
    std::string admin_host;
    uint16_t admin_port = 0;
    bool admin_allow_remote = false;  // admin_listen may be a non-loopback address
    // Written and locked while running; default asyncd.pid beside the config file, so that
    // `asyncd -s` always finds the running asyncd; "" ("-" or off in the file): none.
    std::string pid_file = "";
    bool pid_file_set = false;
    bool max_workers_set = false;  // the file names max_workers (else it has room to grow)

    std::vector<std::pair<std::string, std::string>> plugin_values;

    // The cluster: this node's name and the cluster file, parsed and validated with the rest
    // (both or neither). Shared: conn and the workers get it by fork.
    std::string node_name;
    std::string cluster_file;
    std::shared_ptr<const cluster::ClusterConfig> cluster;
    // Discovery (README, "Discovery"): the other nodes from a membership service, beside the
    // cluster file's. Off ("") or "zookeeper"; the module conn loads for it (resolved at load
    // time: "" means asyncd_zk.so beside the binary, then PREFIX/lib/asyncd/).
    std::string discovery;
    std::string zk_servers;           // HOST:PORT,HOST:PORT
    std::string zk_root = "/asyncd";  // this cluster's znodes live under it
    int zk_session_ms = 6000;
    std::string zk_module;
    std::string zk_cache;  // the last good view, read at start while the service is away

    // The plugin's own value for key, or nullptr.
    const char *plugin_value(const char *key) const;
};

// What a reload does with a key's new value.
enum class OnReload {
    kLive,     // applied to the running processes (conn's limits, the supervisor's timers)
    kRoll,     // the workers are restarted one at a time with it (and it is sent back if the
               // first cannot start)
    kRestart,  // needs a restart: the running value is kept, and the reload says so
};
const char *on_reload_name(OnReload r);  // as the README's table says it

// The one table of config keys: the parser accepts exactly these (and plugin.KEY), the
// reload names the kRestart ones it keeps, and a test checks that the README lists each
// with its default and what a reload does with it.
struct ConfigKey {
    const char *name;
    const char *default_text;  // as the README's table shows it
    OnReload on_reload;
    // kRestart keys: whether the reload's value differs from the running one, and putting
    // the running one back (with what is derived from it).
    bool (*differs)(const Config &next, const Config &running);
    void (*keep)(Config *next, const Config &running);
};
const std::vector<ConfigKey> &config_keys();
const ConfigKey *find_config_key(const std::string &name);

// Parses path (and what it includes) into *out, starting from the defaults. On error
// returns false with "FILE:LINE: reason" (or "FILE: reason") in *err.
[[nodiscard]] bool load_config(const std::string &path, Config *out, std::string *err);

// input_budget's "auto": a sixteenth of physical memory, within 64M..1G, at least twice
// max_pkg_len.
size_t auto_input_budget(size_t max_pkg_len);

// A duration: "1.5" (seconds), "500ms", "5s", "2m", "1h". *ms_out in milliseconds. False
// on anything else, or above max_ms.
[[nodiscard]] bool parse_duration(const std::string &text, uint64_t max_ms, uint64_t *ms_out);

// max_workers when the file does not say: room for a reload to grow `workers` to 8 (or to
// twice workers) without a restart. The rings of slots never started cost address space, not
// memory.
int default_max_workers(int workers);

// "4M" -> 4194304. Suffixes K, M, G (powers of 1024), either case. False on anything else.
[[nodiscard]] bool parse_size(const std::string &text, size_t *out);

// "HOST:PORT" or "[V6]:PORT".
[[nodiscard]] bool parse_listen(const std::string &text, std::string *host, uint16_t *port);

}  // namespace asyncd
