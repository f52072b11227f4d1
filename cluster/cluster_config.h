// The cluster file: the same on every node. `node NAME IP:PORT [down] [preconnect]` (or
// `node NAME down` for a node with no address yet), then options with defaults. Parsed and
// validated whole before anything uses it: a bad file is refused with "FILE:LINE: reason"
// and the table in use stays. A reload's new table is applied as a diff (ClusterDiff).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace asyncd::cluster {

struct NodeEntry {
    std::string name;
    std::string host;  // numeric IPv4 or IPv6; empty for a `down` node with no address
    uint16_t port = 0;
    bool down = false;
    bool preconnect = false;
    int line = 0;  // where the file says it
};

struct ClusterConfig {
    std::string path;
    std::vector<NodeEntry> nodes;  // in file order; names unique
    uint64_t call_timeout_ms = 5000;
    uint64_t connect_timeout_ms = 2000;
    uint64_t handshake_timeout_ms = 2000;
    uint64_t hb_interval_ms = 1000;
    uint64_t hb_timeout_ms = 3000;
    size_t max_message = size_t(16) << 20;
    size_t max_frame = size_t(256) << 10;
    size_t queue_max = 10000;               // frames waiting for one node's link
    size_t queue_bytes = size_t(64) << 20;  // their bytes
    size_t pending_max = 100000;            // calls one worker may have waiting for answers
    std::string secret_file;                // resolved against the cluster file's directory
    std::string secret;                     // its contents, read at parse time

    const NodeEntry *find(const std::string &name) const;
};

// One option of the file: its default as text and what it bounds, for -t and the README.
struct ClusterKey {
    const char *name;
    const char *default_text;
    const char *meaning;
};
const std::vector<ClusterKey> &cluster_keys();

// Parses path into *out, from the defaults. `self` is this node's name: it must be in the
// file and not down (its line is the cluster listen address). False with "FILE:LINE: reason".
bool load_cluster(const std::string &path, const std::string &self, ClusterConfig *out,
                  std::string *err);
// The same from text already read (path only names it in errors).
bool parse_cluster(const std::string &text, const std::string &path, const std::string &self,
                   ClusterConfig *out, std::string *err);

// A validated table as one blob (the supervisor hands it to conn, which never reads the
// files): its path, its secret, and the file's meaning as text. decode_cluster gives back
// the same table.
std::string encode_cluster(const ClusterConfig &c);
bool decode_cluster(const std::string &blob, const std::string &self, ClusterConfig *out,
                    std::string *err);

// What a reload changes, node by node.
struct ClusterDiff {
    std::vector<std::string> added, removed, moved, marked_down, lifted, flags_changed;
    bool options_changed = false;
    bool empty() const {
        return added.empty() && removed.empty() && moved.empty() && marked_down.empty() &&
               lifted.empty() && flags_changed.empty() && !options_changed;
    }
    std::string describe() const;  // one line: "added game3; moved db (...)"; "no change"
};
ClusterDiff diff_clusters(const ClusterConfig &before, const ClusterConfig &after);

// A valid node name: 1..64 of [A-Za-z0-9_.-], not "." (which means this node in node_call).
bool valid_node_name(const std::string &name);

}  // namespace asyncd::cluster
