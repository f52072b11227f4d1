#include "cluster/cluster_config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fstream>
#include <set>
#include <sstream>

#include "core/config.h"

namespace asyncd::cluster {

namespace {

constexpr uint64_t kMaxDurationMs = 24ull * 3600 * 1000;
constexpr size_t kMaxMessage = size_t(1) << 30;
constexpr size_t kMaxSecret = 4096;

std::vector<std::string> words(const std::string &line) {
    std::string s = line.substr(0, line.find('#'));
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;)
        out.push_back(w);
    return out;
}

bool numeric_host(const std::string &host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::string dir_of(const std::string &path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

bool read_file(const std::string &path, size_t max, std::string *out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream s;
    s << f.rdbuf();
    *out = s.str();
    return out->size() <= max;
}

}  // namespace

bool valid_node_name(const std::string &name) {
    if (name.empty() || name.size() > 64 || name == "." || name == "..") return false;
    for (char c : name) {
        if (!isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
            return false;
    }
    return true;
}

const NodeEntry *ClusterConfig::find(const std::string &name) const {
    for (const NodeEntry &n : nodes) {
        if (n.name == name) return &n;
    }
    return nullptr;
}

const std::vector<ClusterKey> &cluster_keys() {
    static const std::vector<ClusterKey> keys = {
        {"call_timeout", "5s", "a node_call's deadline when it passes 0"},
        {"connect_timeout", "2s", "a connect to a node that has not completed by then fails"},
        {"handshake_timeout", "2s", "a link whose HELLO exchange has not completed by then fails"},
        {"hb_interval", "1s", "a PING goes on a link silent this long"},
        {"hb_timeout", "3s", "a link silent this long is dead: its calls end LINK_LOST"},
        {"max_message", "16M", "the largest call, send or reply (TOO_LARGE above it)"},
        {"max_frame", "256K", "messages above it travel in parts of at most this"},
        {"queue_max", "10000", "frames waiting for one node's link (QUEUE_FULL above it)"},
        {"queue_bytes", "64M", "their bytes"},
        {"pending_max", "100000", "calls one worker may have waiting for answers"},
        {"secret_file", "(none)", "a shared secret: links prove it with HMAC-SHA-256"},
    };
    return keys;
}

bool parse_cluster(const std::string &text, const std::string &path, const std::string &self,
                   ClusterConfig *out, std::string *err) {
    ClusterConfig c;
    c.path = path;
    std::istringstream in(text);
    std::string line;
    std::set<std::string> seen_keys;
    int lineno = 0;
    auto fail = [&](const std::string &why) {
        *err = path + ":" + std::to_string(lineno) + ": " + why;
        return false;
    };
    while (std::getline(in, line)) {
        lineno++;
        std::vector<std::string> w = words(line);
        if (w.empty()) continue;
        const std::string &key = w[0];
        if (key == "node") {
            if (w.size() < 3) return fail("node needs a name and IP:PORT (or down)");
            NodeEntry n;
            n.name = w[1];
            n.line = lineno;
            if (!valid_node_name(n.name))
                return fail("bad node name \"" + n.name + "\" (1-64 of A-Z a-z 0-9 _ . -)");
            if (c.find(n.name)) {
                return fail("node " + n.name + " twice (first at line " +
                            std::to_string(c.find(n.name)->line) + ")");
            }
            size_t i = 2;
            if (w[2] != "down") {
                if (!parse_listen(w[2], &n.host, &n.port) || n.port == 0)
                    return fail("node " + n.name + ": bad address \"" + w[2] + "\" (IP:PORT)");
                if (!numeric_host(n.host)) {
                    return fail("node " + n.name + ": \"" + n.host +
                                "\" is not a numeric address (no DNS in conn)");
                }
                i = 3;
            }
            for (; i < w.size(); i++) {
                if (w[i] == "down") {
                    n.down = true;
                } else if (w[i] == "preconnect") {
                    n.preconnect = true;
                } else {
                    return fail("node " + n.name + ": unknown flag \"" + w[i] +
                                "\" (down, preconnect)");
                }
            }
            if (n.host.empty() && !n.down) return fail("node " + n.name + " needs an address");
            if (n.host.empty()) n.down = true;
            for (const NodeEntry &o : c.nodes) {
                if (!n.host.empty() && o.host == n.host && o.port == n.port) {
                    return fail("node " + n.name + " has the address of node " + o.name +
                                " (line " + std::to_string(o.line) + ")");
                }
            }
            c.nodes.push_back(n);
            continue;
        }
        if (w.size() != 2) return fail(key + " takes one value");
        if (!seen_keys.insert(key).second) return fail(key + " given twice");
        const std::string &v = w[1];
        auto duration = [&](uint64_t *ms) {
            if (!parse_duration(v, kMaxDurationMs, ms) || *ms == 0) {
                return fail(key + ": bad duration \"" + v + "\" (like 5, 1.5, 500ms, 2m)");
            }
            return true;
        };
        auto size = [&](size_t *sz, size_t min, size_t max) {
            if (!parse_size(v, sz) || *sz < min || *sz > max) {
                return fail(key + ": bad size \"" + v + "\" (" + std::to_string(min) + ".." +
                            std::to_string(max) + ", suffixes K M G)");
            }
            return true;
        };
        if (key == "call_timeout") {
            if (!duration(&c.call_timeout_ms)) return false;
        } else if (key == "connect_timeout") {
            if (!duration(&c.connect_timeout_ms)) return false;
        } else if (key == "handshake_timeout") {
            if (!duration(&c.handshake_timeout_ms)) return false;
        } else if (key == "hb_interval") {
            if (!duration(&c.hb_interval_ms)) return false;
        } else if (key == "hb_timeout") {
            if (!duration(&c.hb_timeout_ms)) return false;
        } else if (key == "max_message") {
            if (!size(&c.max_message, 1024, kMaxMessage)) return false;
        } else if (key == "max_frame") {
            if (!size(&c.max_frame, 1024, size_t(16) << 20)) return false;
        } else if (key == "queue_max") {
            if (!size(&c.queue_max, 1, size_t(1) << 24)) return false;
        } else if (key == "queue_bytes") {
            if (!size(&c.queue_bytes, 1024, size_t(1) << 34)) return false;
        } else if (key == "pending_max") {
            if (!size(&c.pending_max, 1, size_t(1) << 24)) return false;
        } else if (key == "secret_file") {
            c.secret_file = v[0] == '/' ? v : dir_of(path) + "/" + v;
            if (!read_file(c.secret_file, kMaxSecret, &c.secret))
                return fail("secret_file " + c.secret_file + ": " +
                            (errno ? strerror(errno) : "over 4096 bytes"));
            while (!c.secret.empty() && (c.secret.back() == '\n' || c.secret.back() == '\r'))
                c.secret.pop_back();
            if (c.secret.size() < 16)
                return fail("secret_file " + c.secret_file + ": a secret needs at least 16 bytes");
        } else {
            return fail("unknown key \"" + key + "\"");
        }
    }
    lineno = 0;
    if (c.hb_timeout_ms <= c.hb_interval_ms) {
        *err = path + ": hb_timeout (" + std::to_string(c.hb_timeout_ms) +
               " ms) must be above hb_interval (" + std::to_string(c.hb_interval_ms) + " ms)";
        return false;
    }
    if (c.max_frame > c.max_message) c.max_frame = c.max_message;
    const NodeEntry *me = c.find(self);
    if (!me) {
        *err = path + ": no node line for this node (" + self + ")";
        return false;
    }
    if (me->down) {
        *err = path + ":" + std::to_string(me->line) + ": this node (" + self +
               ") needs an address and cannot be down";
        return false;
    }
    *out = std::move(c);
    return true;
}

bool load_cluster(const std::string &path, const std::string &self, ClusterConfig *out,
                  std::string *err) {
    std::string text;
    errno = 0;
    if (!read_file(path, size_t(16) << 20, &text)) {
        *err = path + ": " + (errno ? strerror(errno) : "over 16 MiB");
        return false;
    }
    return parse_cluster(text, path, self, out, err);
}

std::string encode_cluster(const ClusterConfig &c) {
    std::string hex;
    static const char kHex[] = "0123456789abcdef";
    for (unsigned char ch : c.secret) {
        hex += kHex[ch >> 4];
        hex += kHex[ch & 15];
    }
    std::string out = c.path + "\n" + c.secret_file + "\n" + hex + "\n";
    for (const NodeEntry &n : c.nodes) {
        out += "node " + n.name + " ";
        if (n.host.empty()) {
            out += "down";
        } else {
            bool v6 = n.host.find(':') != std::string::npos;
            out += (v6 ? "[" + n.host + "]" : n.host) + ":" + std::to_string(n.port);
            if (n.down) out += " down";
        }
        if (n.preconnect) out += " preconnect";
        out += "\n";
    }
    auto ms = [&](const char *k, uint64_t v) {
        out += std::string(k) + " " + std::to_string(v) + "ms\n";
    };
    auto n = [&](const char *k, size_t v) {
        out += std::string(k) + " " + std::to_string(v) + "\n";
    };
    ms("call_timeout", c.call_timeout_ms);
    ms("connect_timeout", c.connect_timeout_ms);
    ms("handshake_timeout", c.handshake_timeout_ms);
    ms("hb_interval", c.hb_interval_ms);
    ms("hb_timeout", c.hb_timeout_ms);
    n("max_message", c.max_message);
    n("max_frame", c.max_frame);
    n("queue_max", c.queue_max);
    n("queue_bytes", c.queue_bytes);
    n("pending_max", c.pending_max);
    return out;
}

bool decode_cluster(const std::string &blob, const std::string &self, ClusterConfig *out,
                    std::string *err) {
    size_t a = blob.find('\n'), b = a == std::string::npos ? a : blob.find('\n', a + 1);
    size_t c = b == std::string::npos ? b : blob.find('\n', b + 1);
    if (c == std::string::npos) {
        *err = "a cluster table without its header";
        return false;
    }
    std::string path = blob.substr(0, a), secret_file = blob.substr(a + 1, b - a - 1);
    std::string hex = blob.substr(b + 1, c - b - 1);
    ClusterConfig t;
    if (!parse_cluster(blob.substr(c + 1), path, self, &t, err)) return false;
    t.secret_file = secret_file;
    t.secret.clear();
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        t.secret += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    *out = std::move(t);
    return true;
}

ClusterDiff diff_clusters(const ClusterConfig &before, const ClusterConfig &after) {
    ClusterDiff d;
    for (const NodeEntry &b : before.nodes) {
        const NodeEntry *a = after.find(b.name);
        if (!a) {
            d.removed.push_back(b.name);
            continue;
        }
        if (!a->down && (a->host != b.host || a->port != b.port) && !b.host.empty())
            d.moved.push_back(b.name);
        if (a->down && !b.down) d.marked_down.push_back(b.name);
        if (!a->down && b.down) d.lifted.push_back(b.name);
        if (a->preconnect != b.preconnect) d.flags_changed.push_back(b.name);
    }
    for (const NodeEntry &a : after.nodes) {
        if (!before.find(a.name)) d.added.push_back(a.name);
    }
    d.options_changed =
        before.call_timeout_ms != after.call_timeout_ms ||
        before.connect_timeout_ms != after.connect_timeout_ms ||
        before.handshake_timeout_ms != after.handshake_timeout_ms ||
        before.hb_interval_ms != after.hb_interval_ms ||
        before.hb_timeout_ms != after.hb_timeout_ms || before.max_message != after.max_message ||
        before.max_frame != after.max_frame || before.queue_max != after.queue_max ||
        before.queue_bytes != after.queue_bytes || before.pending_max != after.pending_max ||
        before.secret != after.secret;
    return d;
}

std::string ClusterDiff::describe() const {
    if (empty()) return "no change";
    std::string s;
    auto list = [&s](const char *what, const std::vector<std::string> &names) {
        if (names.empty()) return;
        if (!s.empty()) s += "; ";
        s += what;
        for (size_t i = 0; i < names.size(); i++)
            s += (i ? ", " : " ") + names[i];
    };
    list("added", added);
    list("removed", removed);
    list("moved", moved);
    list("down", marked_down);
    list("up again", lifted);
    list("preconnect changed", flags_changed);
    if (options_changed) s += s.empty() ? "options changed" : "; options changed";
    return s;
}

}  // namespace asyncd::cluster
