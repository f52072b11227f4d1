#include "core/config.h"

#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <fstream>
#include <sstream>

namespace asyncd {

namespace {

constexpr int kMaxIncludeDepth = 16;
constexpr size_t kMaxPkgLen = size_t(1) << 30;
constexpr int kMaxConns = (1 << 24) - 1;  // connection ids keep the slot in 24 bits

std::string trim(const std::string &s) {
    size_t b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) return "";
    size_t e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

std::string dir_of(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

// "HOST:PORT[,HOST:PORT...]", each with a port above 0 (the ZooKeeper client's form).
bool valid_zk_servers(const std::string &text) {
    size_t from = 0;
    while (true) {
        size_t comma = text.find(',', from);
        std::string one = text.substr(from, comma == std::string::npos ? comma : comma - from);
        std::string host;
        uint16_t port = 0;
        if (!parse_listen(one, &host, &port) || port == 0) return false;
        if (comma == std::string::npos) return true;
        from = comma + 1;
    }
}

std::string resolve(const std::string &base_dir, const std::string &path) {
    if (path.empty() || path[0] == '/') return path;
    return base_dir + "/" + path;
}

bool parse_int(const std::string &text, long min, long max, long *out) {
    if (text.empty()) return false;
    char *end = nullptr;
    errno = 0;
    long v = strtol(text.c_str(), &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

class Parser {
  public:
    explicit Parser(Config *cfg) : cfg_(cfg) {}

    bool parse_file(const std::string &path, int depth, std::string *err) {
        if (depth > kMaxIncludeDepth) {
            *err = path + ": includes nested deeper than 16 (a cycle?)";
            return false;
        }
        std::ifstream in(path);
        if (!in) {
            *err = path + ": cannot open: " + strerror(errno);
            return false;
        }
        std::string line;
        int lineno = 0;
        while (std::getline(in, line)) {
            lineno++;
            size_t hash = line.find('#');
            if (hash != std::string::npos) line.resize(hash);
            line = trim(line);
            if (line.empty()) continue;
            size_t sp = line.find_first_of(" \t");
            std::string key = line.substr(0, sp);
            std::string value = sp == std::string::npos ? "" : trim(line.substr(sp));
            std::string where = path + ":" + std::to_string(lineno) + ": ";
            if (value.empty()) {
                *err = where + "'" + key + "' needs a value";
                return false;
            }
            if (key == "include") {
                if (!parse_file(resolve(dir_of(path), value), depth + 1, err)) return false;
                continue;
            }
            std::string why;
            if (!apply(key, value, dir_of(path), &why)) {
                *err = where + why;
                return false;
            }
            if (key == "plugin") plugin_where_ = where;
        }
        return true;
    }

    const std::string &plugin_where() const { return plugin_where_; }

  private:
    bool apply(const std::string &key, const std::string &value, const std::string &dir,
               std::string *why) {
        long n = 0;
        if (key.compare(0, 7, "plugin.") == 0 && key.size() > 7) {
            cfg_->plugin_values.emplace_back(key.substr(7), value);
            return true;
        }
        if (!find_config_key(key)) {
            *why = "unknown key '" + key + "'";
            return false;
        }
        bool single = value.find_first_of(" \t") == std::string::npos;
        if (!single) {
            *why = "'" + key + "' takes one value, got '" + value + "'";
            return false;
        }
        if (key == "listen") {
            if (!parse_listen(value, &cfg_->listen_host, &cfg_->listen_port)) {
                *why = "listen wants HOST:PORT, got '" + value + "'";
                return false;
            }
            cfg_->listen = value;
        } else if (key == "workers") {
            if (!parse_int(value, 1, kMaxWorkers, &n)) {
                *why = "workers must be 1 to 256, got '" + value + "'";
                return false;
            }
            cfg_->workers = int(n);
        } else if (key == "max_workers") {
            if (!parse_int(value, 1, kMaxWorkers, &n)) {
                *why = "max_workers must be 1 to 256, got '" + value + "'";
                return false;
            }
            cfg_->max_workers = int(n);
            cfg_->max_workers_set = true;
        } else if (key == "plugin") {
            cfg_->plugin = resolve(dir, value);
        } else if (key == "frame") {
            if (value == "len32be") {
                cfg_->frame = FrameMode::kLen32Be;
            } else if (value == "len32le") {
                cfg_->frame = FrameMode::kLen32Le;
            } else if (value == "plugin") {
                cfg_->frame = FrameMode::kPlugin;
            } else {
                *why = "frame must be len32be, len32le or plugin, got '" + value + "'";
                return false;
            }
        } else if (key == "max_pkg_len" || key == "max_reply_len") {
            size_t v;
            if (!parse_size(value, &v) || v < 4 || v > kMaxPkgLen) {
                *why = key + " must be a size from 4 to 1G, got '" + value + "'";
                return false;
            }
            (key == "max_pkg_len" ? cfg_->max_pkg_len : cfg_->max_reply_len) = v;
        } else if (key == "ring_size") {
            size_t v;
            if (!parse_size(value, &v) || v < (size_t(64) << 10) || v > (size_t(1) << 32) ||
                (v & (v - 1))) {
                *why = "ring_size must be a power of two from 64K to 4G, got '" + value + "'";
                return false;
            }
            cfg_->ring_size = v;
        } else if (key == "max_conns") {
            if (!parse_int(value, 1, kMaxConns, &n)) {
                *why = "max_conns must be 1 to 16777215, got '" + value + "'";
                return false;
            }
            cfg_->max_conns = int(n);
        } else if (key == "idle_timeout" || key == "shutdown_timeout") {
            uint64_t ms;
            if (!parse_duration(value, uint64_t(86400) * 365 * 1000, &ms) || ms % 1000) {
                *why = key + " must be whole seconds (30, 30s, 5m, 1h), got '" + value + "'";
                return false;
            }
            (key == "idle_timeout" ? cfg_->idle_timeout : cfg_->shutdown_timeout) = int(ms / 1000);
        } else if (key == "handler_timeout" || key == "pkg_timeout" ||
                   key == "out_buf_soft_seconds") {
            uint64_t ms64;
            if (!parse_duration(value, 3600 * 1000, &ms64)) {
                *why = key + " must be a duration from 0 (off) to 1h (1.5, 500ms, 5s, 2m), got '" +
                       value + "'";
                return false;
            }
            int ms = int(ms64);
            if (key == "handler_timeout") cfg_->handler_timeout_ms = ms;
            if (key == "pkg_timeout") cfg_->pkg_timeout_ms = ms;
            if (key == "out_buf_soft_seconds") cfg_->out_buf_soft_ms = ms;
        } else if (key == "out_buf_soft" || key == "out_buf_hard") {
            size_t v;
            if (!parse_size(value, &v) || (v != 0 && v < 1024)) {
                *why = key + " must be a size of at least 1K, or 0 (off), got '" + value + "'";
                return false;
            }
            (key == "out_buf_soft" ? cfg_->out_buf_soft : cfg_->out_buf_hard) = v;
        } else if (key == "worker_max_rss") {
            size_t v;
            if (value == "off" || value == "0") {
                cfg_->worker_max_rss = 0;
            } else if (!parse_size(value, &v) || v < (size_t(1) << 20)) {
                *why = "worker_max_rss must be a size of at least 1M, or off, got '" + value + "'";
                return false;
            } else {
                cfg_->worker_max_rss = v;
            }
        } else if (key == "input_budget") {
            size_t v;
            if (value == "auto") {
                cfg_->input_budget_auto = true;
            } else if (value == "off" || value == "0") {
                cfg_->input_budget_auto = false;
                cfg_->input_budget = 0;
            } else if (!parse_size(value, &v) || v < (size_t(1) << 20)) {
                *why =
                    "input_budget must be a size of at least 1M, auto or off, got '" + value + "'";
                return false;
            } else {
                cfg_->input_budget_auto = false;
                cfg_->input_budget = v;
            }
        } else if (key == "busy_poll_us") {
            if (!parse_int(value, 0, 100000, &n)) {
                *why = "busy_poll_us must be 0 to 100000 microseconds, got '" + value + "'";
                return false;
            }
            cfg_->busy_poll_us = int(n);
        } else if (key == "busy_poll_contended_us") {
            if (!parse_int(value, 0, 100000, &n)) {
                *why =
                    "busy_poll_contended_us must be 0 to 100000 microseconds, got '" + value + "'";
                return false;
            }
            cfg_->busy_poll_contended_us = int(n);
        } else if (key == "log_level") {
            if (!parse_log_level(value, &cfg_->log_level)) {
                *why = "log_level must be debug, info, warn, error, crit or alert, got '" + value +
                       "'";
                return false;
            }
        } else if (key == "log_file") {
            cfg_->log_file = value == "-" ? value : resolve(dir, value);
        } else if (key == "pid_file") {
            cfg_->pid_file = value == "-" || value == "off" ? "" : resolve(dir, value);
            cfg_->pid_file_set = true;
        } else if (key == "admin_listen") {
            if (value == "off" || value == "-") {
                cfg_->admin_listen.clear();
            } else if (!parse_listen(value, &cfg_->admin_host, &cfg_->admin_port)) {
                *why = "admin_listen wants HOST:PORT or off, got '" + value + "'";
                return false;
            } else {
                cfg_->admin_listen = value;
            }
        } else if (key == "admin_allow_remote") {
            if (value != "yes" && value != "no") {
                *why = "admin_allow_remote must be yes or no, got '" + value + "'";
                return false;
            }
            cfg_->admin_allow_remote = value == "yes";
        } else if (key == "node_name") {
            if (!cluster::valid_node_name(value)) {
                *why = "node_name must be 1 to 64 of A-Z a-z 0-9 _ . -, and not '.', got '" +
                       value + "'";
                return false;
            }
            cfg_->node_name = value;
        } else if (key == "cluster") {
            cfg_->cluster_file = value == "off" || value == "-" ? "" : resolve(dir, value);
        } else if (key == "discovery") {
            if (value != "off" && value != "zookeeper") {
                *why = "discovery must be off or zookeeper, got '" + value + "'";
                return false;
            }
            cfg_->discovery = value == "off" ? "" : value;
        } else if (key == "zk_servers") {
            if (!valid_zk_servers(value)) {
                *why = "zk_servers wants HOST:PORT[,HOST:PORT...], got '" + value + "'";
                return false;
            }
            cfg_->zk_servers = value;
        } else if (key == "zk_root") {
            if (value.size() < 2 || value[0] != '/' || value.back() == '/' ||
                value.find("//") != std::string::npos ||
                value.find_first_of(" \t") != std::string::npos) {
                *why =
                    "zk_root must be a path like /asyncd/game (no trailing /), got '" + value + "'";
                return false;
            }
            cfg_->zk_root = value;
        } else if (key == "zk_session_timeout") {
            uint64_t ms;
            if (!parse_duration(value, 600 * 1000, &ms) || ms < 1000) {
                *why = "zk_session_timeout must be a duration from 1s to 10m, got '" + value + "'";
                return false;
            }
            cfg_->zk_session_ms = int(ms);
        } else if (key == "zk_module") {
            cfg_->zk_module = resolve(dir, value);
        } else if (key == "zk_cache") {
            cfg_->zk_cache = value == "off" || value == "-" ? "" : resolve(dir, value);
        } else if (key == "handler_timing") {
            char *end = nullptr;
            long every = value == "off" ? 0 : strtol(value.c_str(), &end, 10);
            if (value != "off" && (value.empty() || *end || every < 0 || every > 65536)) {
                *why =
                    "handler_timing must be off (or 0) or N, one callback in N timed (1 to "
                    "65536), got '" +
                    value + "'";
                return false;
            }
            cfg_->handler_timing = int(every);
        } else if (key == "daemon") {
            if (value != "yes" && value != "no") {
                *why = "daemon must be yes or no, got '" + value + "'";
                return false;
            }
            cfg_->daemon = value == "yes";
        } else {
            // In the key table but not here: a test (ConfigKeys) keeps the two in step.
            *why = "key '" + key + "' is not handled by the parser";
            return false;
        }
        return true;
    }

    Config *cfg_;
    std::string plugin_where_;
};

}  // namespace

const char *frame_mode_name(FrameMode mode) {
    switch (mode) {
        case FrameMode::kLen32Be:
            return "len32be";
        case FrameMode::kLen32Le:
            return "len32le";
        case FrameMode::kPlugin:
            return "plugin";
    }
    return "?";
}

const char *Config::plugin_value(const char *key) const {
    for (const auto &kv : plugin_values) {
        if (kv.first == key) return kv.second.c_str();
    }
    return nullptr;
}

bool parse_duration(const std::string &text, uint64_t max_ms, uint64_t *ms_out) {
    size_t digits = text.find_first_not_of("0123456789.");
    std::string number = text.substr(0, digits),
                unit = digits == std::string::npos ? "" : text.substr(digits);
    if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1)
        return false;
    double scale;
    if (unit.empty() || unit == "s") {
        scale = 1000;
    } else if (unit == "ms") {
        scale = 1;
    } else if (unit == "m") {
        scale = 60 * 1000;
    } else if (unit == "h") {
        scale = 3600 * 1000;
    } else {
        return false;
    }
    double ms = atof(number.c_str()) * scale;
    // Below a millisecond but not 0 would round to 0, which means off: refused, not guessed.
    if (ms < 0 || ms > double(max_ms) || (ms > 0 && ms < 0.5)) return false;
    *ms_out = uint64_t(ms + 0.5);
    return true;
}

int default_max_workers(int workers) {
    return std::min(kMaxWorkers, std::max(8, workers * 2));
}

const char *on_reload_name(OnReload r) {
    switch (r) {
        case OnReload::kLive:
            return "live";
        case OnReload::kRoll:
            return "rolls the workers";
        case OnReload::kRestart:
            return "restart";
    }
    return "?";
}

namespace {

// A kRestart key whose value lives in one field (and, for the addresses, the fields parsed
// from it).
#define RESTART_KEY(key, dflt, field, ...)                                       \
    ConfigKey {                                                                  \
        key, dflt, OnReload::kRestart,                                           \
            [](const Config &n, const Config &r) { return n.field != r.field; }, \
            [](Config *n, const Config &r) {                                     \
                n->field = r.field;                                              \
                __VA_ARGS__;                                                     \
            }                                                                    \
    }
#define OTHER_KEY(key, dflt, effect)        \
    ConfigKey {                             \
        key, dflt, effect, nullptr, nullptr \
    }

const std::vector<ConfigKey> kKeys = {
    RESTART_KEY("listen", "127.0.0.1:7000", listen, n->listen_host = r.listen_host,
                n->listen_port = r.listen_port),
    OTHER_KEY("workers", "2", OnReload::kLive),
    RESTART_KEY("max_workers", "the larger of 8 and twice `workers`", max_workers),
    OTHER_KEY("plugin", "none: required", OnReload::kRoll),
    RESTART_KEY("frame", "len32be", frame),
    RESTART_KEY("max_pkg_len", "1M", max_pkg_len),
    RESTART_KEY("max_reply_len", "16M", max_reply_len),
    RESTART_KEY("ring_size", "4M", ring_size),
    OTHER_KEY("max_conns", "10000", OnReload::kLive),
    OTHER_KEY("idle_timeout", "0", OnReload::kLive),
    OTHER_KEY("pkg_timeout", "30", OnReload::kLive),
    OTHER_KEY("out_buf_hard", "64M", OnReload::kLive),
    OTHER_KEY("out_buf_soft", "8M", OnReload::kLive),
    OTHER_KEY("out_buf_soft_seconds", "10", OnReload::kLive),
    OTHER_KEY("shutdown_timeout", "10", OnReload::kLive),
    OTHER_KEY("handler_timeout", "5", OnReload::kLive),
    OTHER_KEY("handler_timing", "64", OnReload::kRoll),
    OTHER_KEY("worker_max_rss", "off", OnReload::kRoll),
    OTHER_KEY("input_budget", "auto", OnReload::kLive),
    OTHER_KEY("busy_poll_us", "50", OnReload::kLive),
    OTHER_KEY("busy_poll_contended_us", "20", OnReload::kLive),
    OTHER_KEY("log_level", "info", OnReload::kLive),
    RESTART_KEY("log_file", "-", log_file),
    RESTART_KEY("pid_file", "`asyncd.pid` beside the config file", pid_file),
    RESTART_KEY("daemon", "no", daemon),
    RESTART_KEY("admin_listen", "off", admin_listen, n->admin_host = r.admin_host,
                n->admin_port = r.admin_port),
    RESTART_KEY("admin_allow_remote", "no", admin_allow_remote),
    RESTART_KEY("node_name", "none", node_name),
    OTHER_KEY("cluster", "off", OnReload::kLive),
    RESTART_KEY("discovery", "off", discovery),
    RESTART_KEY("zk_servers", "none", zk_servers),
    RESTART_KEY("zk_root", "/asyncd", zk_root),
    RESTART_KEY("zk_session_timeout", "6s", zk_session_ms),
    RESTART_KEY("zk_module", "`asyncd_zk.so` beside the binary, then `../lib/asyncd/`", zk_module),
    RESTART_KEY("zk_cache", "off", zk_cache),
};

#undef RESTART_KEY
#undef OTHER_KEY

}  // namespace

const std::vector<ConfigKey> &config_keys() {
    return kKeys;
}

const ConfigKey *find_config_key(const std::string &name) {
    for (const ConfigKey &k : kKeys) {
        if (name == k.name) return &k;
    }
    return nullptr;
}

size_t auto_input_budget(size_t max_pkg_len) {
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    size_t mem = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 30;
    size_t budget = std::clamp(mem / 16, size_t(64) << 20, size_t(1) << 30);
    return std::max(budget, 2 * max_pkg_len);
}

bool parse_size(const std::string &text, size_t *out) {
    if (text.empty() || !isdigit((unsigned char)text[0])) return false;
    char *end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(text.c_str(), &end, 10);
    if (errno) return false;
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
            case 'k':
            case 'K':
                shift = 10;
                break;
            case 'm':
            case 'M':
                shift = 20;
                break;
            case 'g':
            case 'G':
                shift = 30;
                break;
            default:
                return false;
        }
        if (end[1]) return false;
    }
    if (shift && v > (ULLONG_MAX >> shift)) return false;
    *out = size_t(v << shift);
    return true;
}

bool parse_listen(const std::string &text, std::string *host, uint16_t *port) {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    std::string h = text.substr(0, colon);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    long p;
    if (h.empty() || !parse_int(text.substr(colon + 1), 0, 65535, &p)) return false;
    *host = h;
    *port = uint16_t(p);
    return true;
}

// 127.0.0.0/8, ::1 or localhost.
static bool is_loopback(const std::string &host) {
    struct in_addr v4;
    if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return host == "::1" || host == "localhost";
}

bool load_config(const std::string &path, Config *out, std::string *err) {
    Config cfg;
    cfg.path = path;
    Parser parser(&cfg);
    if (!parser.parse_file(path, 0, err)) return false;
    if (cfg.plugin.empty()) {
        *err = path + ": 'plugin' is not set (plugin PATH, relative to the config's folder)";
        return false;
    }
    struct stat st;
    if (stat(cfg.plugin.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        *err = parser.plugin_where() + "plugin '" + cfg.plugin + "' not found";
        return false;
    }
    if (!cfg.admin_listen.empty() && !cfg.admin_allow_remote && !is_loopback(cfg.admin_host)) {
        *err = path + ": admin_listen " + cfg.admin_listen +
               " is not a loopback address; the status page and /metrics are for this machine "
               "unless admin_allow_remote yes";
        return false;
    }
    if (!cfg.max_workers_set) cfg.max_workers = default_max_workers(cfg.workers);
    if (!cfg.pid_file_set) cfg.pid_file = resolve(dir_of(path), "asyncd.pid");
    if (cfg.max_workers < cfg.workers) {
        *err = path + ": workers (" + std::to_string(cfg.workers) + ") is above max_workers (" +
               std::to_string(cfg.max_workers) + ")";
        return false;
    }
    if (cfg.daemon && cfg.log_file == "-") {
        *err = path + ": daemon yes needs a log_file (a daemon has no stderr)";
        return false;
    }
    if (cfg.out_buf_soft && cfg.out_buf_hard && cfg.out_buf_soft > cfg.out_buf_hard) {
        *err = path + ": out_buf_soft (" + std::to_string(cfg.out_buf_soft) +
               ") is above out_buf_hard (" + std::to_string(cfg.out_buf_hard) + ")";
        return false;
    }
    if (cfg.input_budget_auto) cfg.input_budget = auto_input_budget(cfg.max_pkg_len);
    if (cfg.input_budget && cfg.input_budget < 2 * cfg.max_pkg_len) {
        // Below that, one packet of max_pkg_len beside another could never be finished.
        *err = path + ": input_budget (" + std::to_string(cfg.input_budget) +
               ") is below twice max_pkg_len (" + std::to_string(cfg.max_pkg_len) + ")";
        return false;
    }
    if (cfg.node_name.empty() != cfg.cluster_file.empty()) {
        *err = path + (cfg.node_name.empty() ? ": cluster needs node_name (this node's name in it)"
                                             : ": node_name needs cluster (the cluster file)");
        return false;
    }
    if (!cfg.discovery.empty() && (cfg.cluster_file.empty() || cfg.zk_servers.empty())) {
        *err = path + ": discovery " + cfg.discovery +
               " needs node_name, cluster (a file with at least this node's own line) and "
               "zk_servers";
        return false;
    }
    if (!cfg.cluster_file.empty()) {
        auto cl = std::make_shared<cluster::ClusterConfig>();
        if (!cluster::load_cluster(cfg.cluster_file, cfg.node_name, cl.get(), err)) return false;
        cfg.cluster = std::move(cl);
    }
    char real[PATH_MAX];
    if (realpath(cfg.plugin.c_str(), real)) cfg.plugin = real;
    *out = std::move(cfg);
    return true;
}

}  // namespace asyncd
