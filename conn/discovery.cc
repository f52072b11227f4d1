#include "conn/discovery.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "cluster/cluster_config.h"
#include "cluster/discovery_abi.h"
#include "core/clock.h"

namespace asyncd::conn {

namespace {

using OpenFn = void *(*)(const asyncd_discovery_args *, char *, size_t);
using TakeFn = void (*)(void *, asyncd_discovery_fn, void *);
using CloseFn = void (*)(void *);

std::string exe_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, size_t(n));
    size_t slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

bool numeric_host(const std::string &h) {
    unsigned char buf[16];
    return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

// dlopen and the three symbols; false with the loader's reason.
bool load(const std::string &path, void **dl, OpenFn *o, TakeFn *t, CloseFn *c, std::string *err) {
    *dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!*dl) {
        const char *why = dlerror();
        *err = "discovery module " + path + " cannot be loaded: " + (why ? why : "?");
        return false;
    }
    *o = reinterpret_cast<OpenFn>(dlsym(*dl, "asyncd_discovery_open"));
    *t = reinterpret_cast<TakeFn>(dlsym(*dl, "asyncd_discovery_take"));
    *c = reinterpret_cast<CloseFn>(dlsym(*dl, "asyncd_discovery_close"));
    if (!*o || !*t || !*c) {
        *err =
            "discovery module " + path + " does not export asyncd_discovery_open, _take and _close";
        dlclose(*dl);
        *dl = nullptr;
        return false;
    }
    return true;
}

}  // namespace

std::string printable(const char *text, size_t max) {
    std::string out;
    for (const char *p = text; *p; p++) {
        if (out.size() >= max) {
            out += "...";
            break;
        }
        unsigned char ch = (unsigned char)*p;
        out += ch < 0x20 || ch == 0x7f ? '?' : char(ch);
    }
    return out;
}

std::string discovery_module_path(const Config &cfg, std::string *err) {
    struct stat st;
    if (!cfg.zk_module.empty()) {
        if (stat(cfg.zk_module.c_str(), &st) == 0) return cfg.zk_module;
        *err = "zk_module " + cfg.zk_module + ": " + strerror(errno);
        return "";
    }
    std::string dir = exe_dir();
    for (const std::string &p : {dir + "/asyncd_zk.so", dir + "/../lib/asyncd/asyncd_zk.so"}) {
        if (stat(p.c_str(), &st) == 0) return p;
    }
    *err =
        "discovery zookeeper: the module asyncd_zk.so is not built (it is built where "
        "libzookeeper-mt-dev is installed), nor found beside " +
        dir + "/asyncd or in " + dir + "/../lib/asyncd/; or name it with zk_module";
    return "";
}

bool check_discovery_module(const Config &cfg, std::string *err) {
    if (cfg.discovery.empty()) return true;
    std::string path = discovery_module_path(cfg, err);
    if (path.empty()) return false;
    void *dl;
    OpenFn o;
    TakeFn t;
    CloseFn c;
    if (!load(path, &dl, &o, &t, &c, err)) return false;
    dlclose(dl);
    return true;
}

bool parse_registration(const std::string &data, std::string *host, uint16_t *port) {
    std::istringstream in(data);
    std::string word;
    while (in >> word) {
        if (word.compare(0, 5, "addr=") != 0) continue;
        std::string a = word.substr(5);
        size_t colon = a.rfind(':');
        if (colon == std::string::npos || colon == 0) return false;
        std::string h = a.substr(0, colon);
        if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
        char *end = nullptr;
        unsigned long p = strtoul(a.c_str() + colon + 1, &end, 10);
        if (!numeric_host(h) || !end || *end || p == 0 || p > 65535) return false;
        *host = h;
        *port = uint16_t(p);
        return true;
    }
    return false;
}

Discovery::Discovery(const Config *cfg, Loop *loop, Log *log,
                     std::function<void(const DiscoveredView &)> on_view)
    : cfg_(cfg), loop_(loop), log_(log), on_view_(std::move(on_view)) {}

Discovery::~Discovery() {
    if (handle_) close_(handle_);  // ends the session: our registration goes at once
    if (handler_) loop_->remove(efd_);
    if (efd_ >= 0) close(efd_);
    // The module stays mapped: the library's threads are gone, but its atexit handlers and
    // thread-local destructors may still point into it.
}

bool Discovery::open(const std::string &self_addr, const std::string &data, std::string *err) {
    std::string path = discovery_module_path(*cfg_, err);
    if (path.empty()) return false;
    OpenFn open_fn;
    TakeFn take;
    CloseFn close_fn;
    if (!load(path, &dl_, &open_fn, &take, &close_fn, err)) return false;
    take_ = take;
    close_ = close_fn;
    efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) {
        *err = std::string("eventfd: ") + strerror(errno);
        return false;
    }
    handler_ = std::make_unique<FnHandler>([this](uint32_t) { on_ready(); });
    if (!loop_->add(efd_, EPOLLIN, handler_.get())) {
        handler_.reset();
        *err = std::string("epoll_ctl(ADD) of the discovery eventfd: ") + strerror(errno);
        return false;
    }
    read_cache();
    asyncd_discovery_args a{};
    a.abi = ASYNCD_DISCOVERY_ABI;
    a.servers = cfg_->zk_servers.c_str();
    a.root = cfg_->zk_root.c_str();
    a.name = cfg_->node_name.c_str();
    a.data = data.c_str();
    a.addr = self_addr.c_str();
    a.session_ms = cfg_->zk_session_ms;
    a.event_fd = efd_;
    char why[256] = "";
    handle_ = open_fn(&a, why, sizeof why);
    if (!handle_) {
        *err = "discovery module " + path + ": " + why;
        return false;
    }
    log_->write(LogLevel::kInfo, "discovery: registering %s as %s at %s%s/nodes", data.c_str(),
                cfg_->node_name.c_str(), cfg_->zk_servers.c_str(), cfg_->zk_root.c_str());
    return true;
}

void Discovery::on_ready() {
    uint64_t n;
    while (read(efd_, &n, sizeof n) == ssize_t(sizeof n)) {
    }
    take_(
        handle_,
        [](void *ctx, int kind, const char *a, const char *b) {
            static_cast<Discovery *>(ctx)->on_event(kind, a, b);
        },
        this);
}

void Discovery::on_event(int kind, const char *a, const char *b) {
    switch (kind) {
        case ASYNCD_DISC_LOG: {
            LogLevel lv = !strcmp(a, "error")  ? LogLevel::kError
                          : !strcmp(a, "warn") ? LogLevel::kWarn
                                               : LogLevel::kInfo;
            // The library repeats its lines every reconnect attempt while the service is
            // away: each kind of line (its text without the numbers) goes out once every
            // 30 s, with the count of the ones held back.
            std::string shape;
            for (const char *p = b; *p; p++) {
                if (*p < '0' || *p > '9') shape += *p;
            }
            Repeat &r = repeats_[shape];
            uint64_t now = monotonic_ms();
            if (r.last_ms && now - r.last_ms < kRepeatMs) {
                r.held++;
                break;
            }
            if (r.held) {
                log_->write(lv, "discovery: %s (and %llu more like it in the last %llu s)",
                            printable(b).c_str(), (unsigned long long)r.held,
                            (unsigned long long)((now - r.last_ms) / 1000));
            } else {
                log_->write(lv, "discovery: %s", printable(b).c_str());
            }
            r.last_ms = now;
            r.held = 0;
            if (repeats_.size() > 256) repeats_.clear();  // the kinds are few; bounded anyway
            break;
        }
        case ASYNCD_DISC_STATE:
            if (!strcmp(a, "registered")) {
                registered_ = true;
                log_->write(LogLevel::kInfo, "discovery: registered as %s", b);
            } else if (!strcmp(a, "connected")) {
                log_->write(LogLevel::kInfo, "discovery: connected to %s",
                            cfg_->zk_servers.c_str());
            } else if (!strcmp(a, "connecting")) {
                log_->write(LogLevel::kWarn,
                            "discovery: the service is unreachable; the node table is kept as "
                            "it is until it answers again");
            } else if (!strcmp(a, "expired")) {
                registered_ = false;
                log_->write(LogLevel::kWarn,
                            "discovery: the session expired; registering again in a new one");
            }
            break;
        case ASYNCD_DISC_REFUSED:
            refused_ = true;
            log_->write(LogLevel::kCrit, "discovery: refused: %s; this node does not serve",
                        printable(b).c_str());
            break;
        case ASYNCD_DISC_VIEW:
            building_.clear();
            in_view_ = true;
            break;
        case ASYNCD_DISC_NODE: {
            if (!in_view_ || !strcmp(a, cfg_->node_name.c_str())) break;
            uint64_t held = 0;
            if (!cluster::valid_node_name(a)) {
                if (log_limit_.allow(monotonic_ms(), &held)) {
                    log_->write(LogLevel::kWarn,
                                "discovery: a znode named '%s' is not a valid node name: ignored",
                                printable(a, 80).c_str());
                }
                break;
            }
            DiscoveredNode n;
            n.data = printable(b, 1024);  // it goes into the log and the cache as one line
            if (!parse_registration(n.data, &n.host, &n.port)) {
                if (log_limit_.allow(monotonic_ms(), &held)) {
                    log_->write(LogLevel::kWarn,
                                "discovery: node %s registered no numeric addr= ('%s'): ignored", a,
                                printable(b, 200).c_str());
                }
                break;
            }
            building_[a] = std::move(n);
            break;
        }
        case ASYNCD_DISC_VIEW_END:
            if (!in_view_) break;
            in_view_ = false;
            write_cache(building_);
            on_view_(building_);
            break;
        default:
            break;
    }
}

// The cache: one "NAME DATA" line per node, written whole to a new file and renamed over.
void Discovery::read_cache() {
    if (cfg_->zk_cache.empty()) return;
    std::ifstream in(cfg_->zk_cache);
    if (!in) return;
    DiscoveredView v;
    std::string line;
    while (std::getline(in, line)) {
        size_t sp = line.find(' ');
        if (sp == std::string::npos || sp == 0) continue;
        DiscoveredNode n;
        n.data = line.substr(sp + 1);
        std::string name = line.substr(0, sp);
        if (name == cfg_->node_name || !cluster::valid_node_name(name) ||
            !parse_registration(n.data, &n.host, &n.port))
            continue;
        v[name] = std::move(n);
    }
    if (v.empty()) return;
    log_->write(LogLevel::kInfo, "discovery: %zu nodes from the cache %s until the service answers",
                v.size(), cfg_->zk_cache.c_str());
    on_view_(v);
}

void Discovery::write_cache(const DiscoveredView &v) {
    if (cfg_->zk_cache.empty()) return;
    std::string tmp = cfg_->zk_cache + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        for (auto &e : v)
            out << e.first << ' ' << e.second.data << '\n';
        out.flush();
        if (!out) {
            log_->write(LogLevel::kWarn, "discovery: cannot write the cache %s: %s", tmp.c_str(),
                        strerror(errno));
            return;
        }
    }
    if (rename(tmp.c_str(), cfg_->zk_cache.c_str()) != 0) {
        log_->write(LogLevel::kWarn, "discovery: cannot rename %s: %s", tmp.c_str(),
                    strerror(errno));
    }
}

}  // namespace asyncd::conn
