// The ZooKeeper membership provider (cluster/discovery_abi.h), built only where the
// ZooKeeper C client (libzookeeper-mt) is installed, and loaded by conn with dlopen.
//
// Layout: ROOT/nodes/NAME, ephemeral, holding this node's registration ("addr=HOST:PORT
// workers=N incarnation=X proto=1"). The name is the znode's name, not a sequential suffix,
// so a second process claiming a live node's name is seen: it is refused. A znode of that
// name left by our own earlier life (same address, its session not yet expired) is waited
// for, up to the session timeout.
//
// Only the asynchronous API is used. Its callbacks run on the library's completion thread:
// they update the view under a mutex and write conn's eventfd; conn takes the view on its
// own thread. Every callback carries the generation of the handle it was made for, and one
// from an older handle is dropped. One keeper thread makes handles: at start and after an
// expiry (close the old one, make a new one, re-create our node, re-list: the view is
// replaced by what the new session lists), and it retries a claim that waits for our old
// znode. While the service is unreachable the view is frozen: it only changes on answers.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/discovery_abi.h"

namespace {

struct Event {
    int kind;
    std::string a, b;
};

class Zk;
Zk *g_zk = nullptr;
struct Ctx;
void sent(int rc, Ctx *c);  // for the library's log callback, which carries no context

// What a completion needs to know: whose, for which handle, and which child.
struct Ctx {
    Zk *zk;
    uint32_t gen;
    std::string name;
    bool initial = false;  // a read of a new session's first listing
};

class Zk {
  public:
    explicit Zk(const asyncd_discovery_args &a)
        : servers_(a.servers),
          root_(a.root),
          name_(a.name),
          data_(a.data),
          addr_(a.addr),
          session_ms_(a.session_ms),
          efd_(a.event_fd) {
        nodes_ = root_ + "/nodes";
        self_ = nodes_ + "/" + name_;
    }

    void start() {
        keeper_ = std::thread([this] { keep(); });
    }

    void stop() {
        {
            std::lock_guard<std::mutex> g(mu_);
            closing_ = true;
        }
        cv_.notify_all();
        keeper_.join();
    }

    void take(asyncd_discovery_fn fn, void *ctx) {
        std::vector<Event> ev;
        {
            std::lock_guard<std::mutex> g(mu_);
            ev.swap(out_);
            if (view_dirty_ && !initial_reads_) {
                view_dirty_ = false;
                ev.push_back({ASYNCD_DISC_VIEW, "", ""});
                for (auto &e : view_)
                    ev.push_back({ASYNCD_DISC_NODE, e.first, e.second});
                ev.push_back({ASYNCD_DISC_VIEW_END, "", ""});
            }
        }
        for (auto &e : ev)
            fn(ctx, e.kind, e.a.c_str(), e.b.c_str());
    }

    void log_line(const char *msg) {
        // "...:ZOO_WARN@fn@line: text": the level is the word after ZOO_.
        const char *lv = strstr(msg, "ZOO_");
        const char *level = "info";
        if (lv && !strncmp(lv, "ZOO_ERROR", 9)) level = "error";
        if (lv && !strncmp(lv, "ZOO_WARN", 8)) level = "warn";
        std::string line = lv ? lv : msg;
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
            line.pop_back();
        std::lock_guard<std::mutex> g(mu_);
        if (out_.size() < 1000) out_.push_back({ASYNCD_DISC_LOG, level, "zookeeper: " + line});
        wake_locked();
    }

    // The library's callbacks (its completion thread).
    static void on_watch(zhandle_t *zh, int type, int state, const char *path, void *wctx);
    static void on_created(int rc, const char *value, const void *data);
    static void on_parent(int rc, const char *value, const void *data);
    static void on_existing(int rc, const char *value, int len, const struct Stat *st,
                            const void *data);
    static void on_stat(int rc, const struct Stat *st, const void *data);
    static void on_set(int rc, const struct Stat *st, const void *data);
    static void on_children(int rc, const struct String_vector *names, const void *data);
    static void on_data(int rc, const char *value, int len, const struct Stat *st,
                        const void *data);

  private:
    void keep();
    void session_event(uint32_t gen, int state);
    void setup();             // with mu_ held
    void make_path_locked();  // ROOT/nodes and the znodes above it
    void forget_locked(const std::string &name);
    void claim_locked();
    void list_locked();
    bool get_locked(const std::string &name, bool initial = false);  // false: not sent
    uint64_t stuck_ms() const { return std::max<uint64_t>(10 * uint64_t(session_ms_), 30000); }
    bool current(uint32_t gen) const { return gen == gen_ && zh_ && !closing_; }
    void note_locked(int kind, const char *a, const std::string &b = "") {
        out_.push_back({kind, a, b});
        wake_locked();
    }
    void wake_locked() {
        uint64_t one = 1;
        ssize_t n = write(efd_, &one, sizeof one);
        (void)n;  // a full eventfd already says there is something to take
    }
    Ctx *ctx(const std::string &name = "", bool initial = false) {
        return new Ctx{this, gen_, name, initial};
    }

    const std::string servers_, root_, name_, data_, addr_;
    std::string nodes_, self_;
    const int session_ms_;
    const int efd_;

    std::mutex mu_;
    std::condition_variable cv_;
    std::thread keeper_;
    zhandle_t *zh_ = nullptr;
    uint32_t gen_ = 0;
    bool closing_ = false;
    bool expired_ = false;              // the keeper makes a new handle
    bool registered_ = false;           // our znode is ours in this session
    bool refused_ = false;              // a live node holds our name: nothing more is tried
    uint64_t claim_retry_ms_ = 0;       // waiting for our earlier life's znode to go: retry then
    uint64_t claim_until_ms_ = 0;       // and give up then
    bool listed_ = false;               // the view holds this session's listing
    int initial_reads_ = 0;             // reads of the first listing not back: the view waits
    std::set<std::string> unread_;      // reads that failed (a lost connection): due again
    bool ever_registered_ = false;      // we have served: a conflict is retried, never fatal
    bool conflict_said_ = false;        // the line about a foreign znode holding our name
    uint64_t connecting_since_ms_ = 0;  // lost the service then (0: connected)
    std::map<std::string, std::string> view_;
    bool view_dirty_ = false;
    std::vector<Event> out_;
};

uint64_t now_ms() {
    return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
}

// The library hands a completion's context back as const void *.
Ctx *ctx_of(const void *data) {
    return static_cast<Ctx *>(const_cast<void *>(data));
}

// A request the library did not take calls no completion: its context is ours to free. (The
// next connect's setup asks again.)
void sent(int rc, Ctx *c) {
    if (rc != ZOK) delete c;
}

void zk_log(const char *message) {
    if (g_zk) g_zk->log_line(message);
}

// The keeper: makes the handle, and a new one after an expiry; retries a waiting claim.
void Zk::keep() {
    std::unique_lock<std::mutex> g(mu_);
    bool fresh = true;
    while (!closing_) {
        if (fresh || expired_) {
            zhandle_t *old = zh_;
            zh_ = nullptr;
            gen_++;
            registered_ = false;
            listed_ = false;
            expired_ = false;
            initial_reads_ = 0;
            unread_.clear();                  // the new session's first listing reads every node
            connecting_since_ms_ = now_ms();  // until the new handle connects
            if (old) {
                g.unlock();
                zookeeper_close(old);  // its callbacks are dropped by their generation
                g.lock();
            }
            uint32_t gen = gen_;
            g.unlock();
            zhandle_t *zh = zookeeper_init2(servers_.c_str(), &Zk::on_watch, session_ms_, nullptr,
                                            (void *)(uintptr_t)gen, 0, zk_log);
            g.lock();
            if (!zh) {
                note_locked(ASYNCD_DISC_LOG, "error",
                            std::string("zookeeper: cannot make a handle: ") + strerror(errno));
                cv_.wait_for(g, std::chrono::milliseconds(1000));
                continue;  // fresh stays true: try again
            }
            if (gen != gen_ || closing_) {
                g.unlock();
                zookeeper_close(zh);
                g.lock();
                continue;
            }
            zh_ = zh;
            fresh = false;
            // Connected before zh_ was set: its session event found no handle to set up.
            if (zoo_state(zh) == ZOO_CONNECTED_STATE) {
                connecting_since_ms_ = 0;
                setup();
            }
        }
        if (claim_retry_ms_ && now_ms() >= claim_retry_ms_ && zh_ && !refused_) {
            claim_retry_ms_ = 0;
            make_path_locked();
            claim_locked();
        }
        if (connecting_since_ms_ && now_ms() - connecting_since_ms_ > stuck_ms()) {
            // Not connected for ten session timeouts (30 s at least): the servers we reach
            // may be unable to take this session back (a server started over on an empty
            // data dir refuses a client that has seen newer transactions, and the library
            // then retries forever without an expiry). Start a new session. (Sooner would
            // give up sessions a restarted ensemble still honours: it restores them, and
            // their timeouts start over when it is back.) The view stays as it is until the
            // new session lists.
            connecting_since_ms_ = 0;
            note_locked(ASYNCD_DISC_LOG, "warn",
                        "zookeeper: not connected for " + std::to_string(stuck_ms() / 1000) +
                            " s; starting a new session");
            expired_ = true;
            continue;
        }
        cv_.wait_for(g, std::chrono::milliseconds(100));
    }
    zhandle_t *zh = zh_;
    zh_ = nullptr;
    gen_++;
    g.unlock();
    if (zh) zookeeper_close(zh);
}

void Zk::on_watch(zhandle_t *zh, int type, int state, const char *path, void *wctx) {
    Zk *z = g_zk;
    if (!z) return;
    (void)zh;
    uint32_t gen = uint32_t(uintptr_t(wctx));
    if (type == ZOO_SESSION_EVENT) {
        z->session_event(gen, state);
        return;
    }
    std::lock_guard<std::mutex> g(z->mu_);
    if (!z->current(gen)) return;
    std::string p = path ? path : "";
    if (p == z->nodes_) {
        z->list_locked();  // children changed, or the parent was made: re-list, re-arm
    } else if (p.compare(0, z->nodes_.size() + 1, z->nodes_ + "/") == 0) {
        std::string name = p.substr(z->nodes_.size() + 1);
        if (type == ZOO_DELETED_EVENT) {
            z->forget_locked(name);
            if (name == z->name_ && !z->refused_ &&
                (z->registered_ || z->claim_until_ms_ || z->ever_registered_)) {
                // Our znode was deleted (by somebody, or with our earlier life's session):
                // make it now.
                z->registered_ = false;
                z->claim_locked();
            }
        } else {
            z->get_locked(name);  // its data changed: read it, re-arm
        }
    }
}

void Zk::session_event(uint32_t gen, int state) {
    std::lock_guard<std::mutex> g(mu_);
    if (gen != gen_ || closing_) return;
    if (state == ZOO_CONNECTED_STATE) {
        connecting_since_ms_ = 0;
        note_locked(ASYNCD_DISC_STATE, "connected");
        if (zh_) setup();
    } else if (state == ZOO_EXPIRED_SESSION_STATE) {
        note_locked(ASYNCD_DISC_STATE, "expired");
        expired_ = true;
        cv_.notify_all();
    } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
        if (!connecting_since_ms_) connecting_since_ms_ = now_ms();
        note_locked(ASYNCD_DISC_STATE, "connecting");  // the view stays as it is
    }
}

// After every (re)connect: the path, our znode, and a fresh listing (it covers whatever
// changed while we were away). Requests of one session are served in order, so the parent
// znodes exist by the time our create is served.
void Zk::setup() {
    make_path_locked();
    if (!registered_ && !refused_) claim_locked();
    list_locked();
}

void Zk::make_path_locked() {
    if (!zh_) return;
    size_t from = 1;
    while (true) {
        size_t slash = nodes_.find('/', from);
        std::string p = nodes_.substr(0, slash);
        Ctx *c = ctx();
        sent(zoo_acreate(zh_, p.c_str(), "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, &Zk::on_parent, c), c);
        if (slash == std::string::npos) break;
        from = slash + 1;
    }
}

void Zk::forget_locked(const std::string &name) {
    if (!view_.erase(name)) return;
    view_dirty_ = true;
    wake_locked();
}

void Zk::claim_locked() {
    if (!zh_) return;
    Ctx *c = ctx();
    sent(zoo_acreate(zh_, self_.c_str(), data_.c_str(), int(data_.size()), &ZOO_OPEN_ACL_UNSAFE,
                     ZOO_EPHEMERAL, &Zk::on_created, c),
         c);
}

void Zk::list_locked() {
    if (!zh_) return;
    Ctx *c = ctx();
    sent(zoo_awget_children(zh_, nodes_.c_str(), &Zk::on_watch, (void *)(uintptr_t)gen_,
                            &Zk::on_children, c),
         c);
}

bool Zk::get_locked(const std::string &name, bool initial) {
    if (!zh_) return false;
    std::string p = nodes_ + "/" + name;
    Ctx *c = ctx(name, initial);
    int rc = zoo_awget(zh_, p.c_str(), &Zk::on_watch, (void *)(uintptr_t)gen_, &Zk::on_data, c);
    sent(rc, c);
    if (rc != ZOK) unread_.insert(name);  // read again at the next listing
    return rc == ZOK;
}

void Zk::on_parent(int rc, const char *value, const void *data) {
    (void)value;
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen) && rc != ZOK && rc != ZNODEEXISTS) {
            z->note_locked(ASYNCD_DISC_LOG, "warn",
                           std::string("zookeeper: cannot make the cluster's path: ") + zerror(rc));
        }
    }
    delete c;
}

void Zk::on_created(int rc, const char *value, const void *data) {
    (void)value;
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen)) {
            if (rc == ZOK) {
                z->registered_ = true;
                z->ever_registered_ = true;
                z->conflict_said_ = false;
                z->claim_until_ms_ = 0;
                z->note_locked(ASYNCD_DISC_STATE, "registered", z->self_);
                // Watch our own znode: deleted by somebody, it is made again.
                Ctx *w = z->ctx(z->name_);
                sent(zoo_awget(z->zh_, z->self_.c_str(), &Zk::on_watch, (void *)(uintptr_t)z->gen_,
                               &Zk::on_data, w),
                     w);
            } else if (rc == ZNODEEXISTS) {
                // Read it, and watch it: when its holder's session ends, we claim at once.
                Ctx *w = z->ctx(z->name_);
                sent(zoo_awget(z->zh_, z->self_.c_str(), &Zk::on_watch, (void *)(uintptr_t)z->gen_,
                               &Zk::on_existing, w),
                     w);
            } else if (rc == ZNONODE) {
                // ROOT/nodes is gone (somebody deleted it): make it again, shortly.
                z->claim_retry_ms_ = now_ms() + 250;
                z->note_locked(ASYNCD_DISC_LOG, "warn",
                               "zookeeper: " + z->nodes_ + " is gone; making it again");
            } else if (rc != ZCONNECTIONLOSS && rc != ZOPERATIONTIMEOUT && rc != ZCLOSING &&
                       rc != ZSESSIONEXPIRED) {
                z->note_locked(
                    ASYNCD_DISC_LOG, "error",
                    std::string("zookeeper: cannot register ") + z->self_ + ": " + zerror(rc));
            }  // a lost connection: the next connect's setup claims again
        }
    }
    delete c;
}

// Our name is taken: by us (this session, after a reconnect), by our own earlier life
// (same address; its session has not expired yet: wait for it), or by a live node.
void Zk::on_existing(int rc, const char *value, int len, const struct Stat *st, const void *data) {
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen)) {
            const clientid_t *me = zoo_client_id(z->zh_);
            std::string held = value && len > 0 ? std::string(value, size_t(len)) : "";
            std::string addr = "addr=" + z->addr_;
            size_t at = held.find(addr);
            bool ours = at != std::string::npos &&
                        (at + addr.size() == held.size() || held[at + addr.size()] == ' ');
            if (rc == ZNONODE) {
                z->claim_locked();  // gone meanwhile
            } else if (rc == ZOK && me && st && st->ephemeralOwner == me->client_id) {
                z->registered_ = true;
                z->note_locked(ASYNCD_DISC_STATE, "registered", z->self_);
            } else if (rc == ZOK && ours) {
                uint64_t now = now_ms();
                if (!z->claim_until_ms_) {
                    z->claim_until_ms_ = now + uint64_t(z->session_ms_) + 2000;
                    z->note_locked(ASYNCD_DISC_LOG, "info",
                                   "zookeeper: " + z->self_ +
                                       " is still held by this node's previous run; waiting "
                                       "for its session to expire");
                }
                if (now < z->claim_until_ms_) {
                    z->claim_retry_ms_ = now + 250;
                } else if (z->ever_registered_) {
                    z->claim_retry_ms_ = now + 1000;
                } else {
                    z->refused_ = true;
                    z->note_locked(
                        ASYNCD_DISC_REFUSED, "",
                        z->self_ + " is still held (" + held + ") after the session timeout");
                }
            } else if (rc == ZOK && z->ever_registered_) {
                // This node serves: somebody took its znode over. It keeps serving and claims
                // its name again once that znode goes.
                if (!z->conflict_said_) {
                    z->conflict_said_ = true;
                    z->note_locked(ASYNCD_DISC_LOG, "error",
                                   "zookeeper: " + z->self_ + " is held by another session (" +
                                       held + "); this node keeps serving and registers again " +
                                       "when it goes");
                }
                z->claim_retry_ms_ = now_ms() + 1000;
            } else if (rc == ZOK) {
                z->refused_ = true;
                z->note_locked(ASYNCD_DISC_REFUSED, "",
                               "node name " + z->name_ + " is registered by a live node (" + held +
                                   ") in " + z->nodes_);
            }
        }
    }
    delete c;
}

void Zk::on_children(int rc, const struct String_vector *names, const void *data) {
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen) && rc == ZOK && names) {
            std::set<std::string> now;
            for (int i = 0; i < names->count; i++)
                now.insert(names->data[i]);
            bool first = !z->listed_;
            z->listed_ = true;
            // A new session's first listing replaces the view: what it does not list is gone.
            for (auto it = z->view_.begin(); it != z->view_.end();) {
                if (!now.count(it->first)) {
                    it = z->view_.erase(it);
                    z->view_dirty_ = true;
                } else {
                    ++it;
                }
            }
            for (const std::string &n : now) {
                if (n != z->name_ && (first || !z->view_.count(n) || z->unread_.count(n))) {
                    z->unread_.erase(n);
                    if (z->get_locked(n, first) && first) z->initial_reads_++;
                }
            }
            if (first) z->view_dirty_ = true;  // published once its reads are back
            if (z->view_dirty_) z->wake_locked();
        } else if (z->current(c->gen) && rc == ZNONODE) {
            // The parent is not there yet (it is being made): watch for it; if it is there
            // by the time the exists is answered, list (its watch would only fire on a
            // delete).
            Ctx *w = z->ctx();
            sent(zoo_awexists(z->zh_, z->nodes_.c_str(), &Zk::on_watch, (void *)(uintptr_t)z->gen_,
                              &Zk::on_stat, w),
                 w);
        }
    }
    delete c;
}

void Zk::on_stat(int rc, const struct Stat *st, const void *data) {
    (void)st;
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen) && rc == ZOK) z->list_locked();
    }
    delete c;
}

void Zk::on_set(int rc, const struct Stat *st, const void *data) {
    (void)rc;
    (void)st;
    delete ctx_of(data);  // the data watch, re-armed by the read, sees the result
}

void Zk::on_data(int rc, const char *value, int len, const struct Stat *st, const void *data) {
    (void)st;
    Ctx *c = ctx_of(data);
    Zk *z = c->zk;
    {
        std::lock_guard<std::mutex> g(z->mu_);
        if (z->current(c->gen) && c->initial && z->initial_reads_ > 0 && --z->initial_reads_ == 0)
            z->wake_locked();  // the first listing's view is whole
        if (z->current(c->gen) && c->name == z->name_ && rc == ZOK && z->registered_ && st) {
            std::string v = value && len > 0 ? std::string(value, size_t(len)) : "";
            const clientid_t *me = zoo_client_id(z->zh_);
            if (v != z->data_ && me && st->ephemeralOwner == me->client_id) {
                // Somebody changed our registration: put ours back.
                z->note_locked(ASYNCD_DISC_LOG, "warn",
                               "zookeeper: " + z->self_ + " was changed by somebody; restoring it");
                Ctx *w = z->ctx(z->name_);
                sent(zoo_aset(z->zh_, z->self_.c_str(), z->data_.c_str(), int(z->data_.size()), -1,
                              &Zk::on_set, w),
                     w);
            }
        } else if (z->current(c->gen) && c->name != z->name_) {
            if (rc == ZOK) {
                std::string v = value && len > 0 ? std::string(value, size_t(len)) : "";
                auto it = z->view_.find(c->name);
                if (it == z->view_.end() || it->second != v) {
                    z->view_[c->name] = v;
                    z->view_dirty_ = true;
                    z->wake_locked();
                }
            } else if (rc == ZNONODE) {
                z->forget_locked(c->name);
            } else {
                z->unread_.insert(c->name);  // lost on the way (and its watch with it)
            }
        }
    }
    delete c;
}

}  // namespace

extern "C" {

void *asyncd_discovery_open(const struct asyncd_discovery_args *args, char *err, size_t errlen) {
    if (!args || args->abi != ASYNCD_DISCOVERY_ABI) {
        snprintf(err, errlen, "the module speaks discovery ABI %d, conn %d", ASYNCD_DISCOVERY_ABI,
                 args ? args->abi : 0);
        return nullptr;
    }
    if (g_zk) {
        snprintf(err, errlen, "the module is already open in this process");
        return nullptr;
    }
    if (!args->servers || !*args->servers || !args->root || args->root[0] != '/' || !args->name ||
        !*args->name || !args->data || !args->addr || args->event_fd < 0) {
        snprintf(err, errlen, "bad arguments (servers, root, name, data, event_fd)");
        return nullptr;
    }
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);  // the library is chatty at INFO
    Zk *z = new Zk(*args);
    g_zk = z;
    z->start();
    return z;
}

void asyncd_discovery_take(void *handle, asyncd_discovery_fn fn, void *ctx) {
    if (handle) static_cast<Zk *>(handle)->take(fn, ctx);
}

void asyncd_discovery_close(void *handle) {
    if (!handle) return;
    Zk *z = static_cast<Zk *>(handle);
    z->stop();
    g_zk = nullptr;
    delete z;
}

}  // extern "C"
