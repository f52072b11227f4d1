// conn's side of the cluster: one link per node of the cluster file (cluster/link), the
// node listen socket the supervisor bound, the calls in flight both ways (cluster/route's
// Sessions), what waits for a link while it connects (cluster/node_queue), and the records
// to and from the workers. It plugs into conn's loop (fd watches, one timer) and pushes to a
// worker through that worker's port, as a PortUser, like a client connection does.
//
// A worker's call to node "." (or to this node's own name) never leaves the machine: it goes
// to a local worker through its ring, with the same statuses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/cluster_config.h"
#include "cluster/frames.h"
#include "cluster/link.h"
#include "cluster/node_queue.h"
#include "cluster/route.h"
#include "conn/discovery.h"
#include "conn/port.h"
#include "core/channels.h"
#include "core/config.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/stats.h"
#include "shmq/ring.h"

namespace asyncd::conn {

// What conn owes one worker of cluster records: pushed in order, through the port's FIFO
// when the ring is full. Results of the worker's own calls are never refused (they are
// bounded by its pending calls); new requests are, past `max`, with BUSY.
class NodeOut final : public PortUser {
  public:
    struct Rec {
        uint16_t type;
        uint64_t id;
        uint64_t seq;
        std::string bytes;
    };
    // pushed(req, ring_end): a request's record went into the ring.
    NodeOut(Port *port, std::function<void(uint64_t, uint64_t)> pushed)
        : port_(port), pushed_(std::move(pushed)) {}
    void push(Rec r);
    // The same from bytes the caller keeps: copied only if the record has to wait.
    void push(uint16_t type, uint64_t id, uint64_t seq, std::string_view bytes);
    size_t waiting() const { return q_.size(); }
    size_t waiting_bytes() const { return bytes_; }
    bool on_room(Port &port) override;
    void on_dequeued(Port &) override {}

  private:
    bool push_one();
    // Straight into the ring; false (nothing written) when it must wait.
    bool push_now(uint16_t type, uint64_t id, uint64_t seq, std::string_view bytes);
    Port *port_;
    std::function<void(uint64_t, uint64_t)> pushed_;
    std::deque<Rec> q_;
    size_t bytes_ = 0;
};

class Nodes final : public cluster::LinkHost {
  public:
    Nodes(const Config *cfg, Channels *ch, Loop *loop, std::vector<std::unique_ptr<Port>> *ports,
          int listen_fd, ConnStats *st, Log *log);
    ~Nodes() override;
    Nodes(const Nodes &) = delete;
    Nodes &operator=(const Nodes &) = delete;

    [[nodiscard]] bool open(std::string *err);
    // A kNodeCall or kNodeReply record from worker w.
    void from_worker(int w, const shmq::Message &m);
    // After a turn's events and rings: one write per link for what the turn queued on it.
    void flush();
    // End of a turn: what closed during it is freed, the timer re-armed.
    void end_turn();
    // A graceful stop: GOAWAY on every link; new calls end STOPPING.
    void stop();
    // A reload: the supervisor's validated cluster table, applied as a diff (added: lazy;
    // moved: the old link drains, queued calls go to the new address; down: drains, calls
    // end DOWN; removed: drains, calls end UNKNOWN).
    void reload_cluster();
    // Discovery said no to this node's name (a live node holds it): conn must not serve.
    bool refused() const { return discovery_ && discovery_->refused(); }
    bool idle() const;     // nothing in flight either way
    bool written() const;  // every link has written what it was given

    // LinkHost.
    uint64_t now_ms() override;
    uint64_t now_us() override;
    void random_bytes(void *p, size_t n) override;
    void link_up(cluster::Link &link) override;
    void link_message(cluster::Link &link, const cluster::Message &m) override;
    void link_lost(cluster::Link &link, const std::string &why) override;
    void link_goaway(cluster::Link &link) override;
    std::string admit(cluster::Link &link, const cluster::Hello &h) override;

  private:
    struct Slot;  // a link with its fd watch
    struct Node {
        const cluster::NodeEntry *entry = nullptr;
        Slot *slot = nullptr;  // the link calls go on (null: none yet)
        cluster::NodeQueue queue;
        bool circuit_open = false;  // a link failed and none came up since
        uint64_t incarnation = 0;   // the peer's, from its last HELLO
        size_t pending_out = 0;     // our calls written to it and not answered
        size_t pending_in = 0;      // its calls our workers have not answered
        NodeStats *ns = nullptr;    // its counters in shared memory
        Node(size_t frames, size_t bytes) : queue(frames, bytes) {}
    };

    Slot *new_slot(Node *node);
    Node *add_node(const cluster::NodeEntry *e);
    bool claim_stats(Node *n);  // a free NodeStats slot for n, if any
    void prune();               // frees replaced tables and removed nodes nothing points at
    bool spare_warned_ = false;
    bool prune_due_ = false;
    void drain_link(Node *n);  // its link gets GOAWAY and drains beside whatever comes next
    void watch(Slot *s);
    void on_slot_events(Slot *s, uint32_t events);
    void on_accept();
    void retire(Slot *s);  // closed; freed at the end of the turn
    Node *node_of(const cluster::Link &link);
    Slot *slot_of(const cluster::Link &link);

    void local_call(int w, uint64_t call, uint64_t deadline, const cluster::Sessions::In &base,
                    int route, uint64_t key, std::string_view service, std::string_view msg);
    void remote_call(int w, uint64_t call, uint64_t deadline, int route, uint64_t key,
                     std::string_view node, std::string_view service, std::string_view msg,
                     bool fresh = true);
    void reply_from_worker(int w, const shmq::Message &m);
    void worker_started(int w, uint64_t position);
    // An incoming call ends here with `status` (the link it came on, or the local caller).
    void answer_in(const cluster::Sessions::In &in, int status, int code, std::string_view reply);
    int pick_worker(int route, uint64_t key);
    // Hands a request to a local worker: false when that worker's backlog is full.
    bool deliver(int worker, uint64_t req, uint64_t deadline, std::string_view from,
                 std::string_view service, std::string_view msg);
    void result(int w, uint64_t call, int status, int code, std::string_view reply);
    void tell_link(int status, const std::string &node);
    // A reply on link link_id, from `stream` (the worker that answered, or conn itself).
    void answer_link(uint64_t link_id, uint64_t session, int status, int code,
                     std::string_view reply, int stream);
    void fail_out(const std::string &node, int status);
    // The calls written on slot s end with status (its link is lost or replaced).
    void fail_written(Slot *s, int status);
    void drop_queue(Node *n, int status);
    void flush_queue(Node *n);
    void expire_queues();
    void arm_timer();
    void publish();                 // the nodes' gauges into shared memory
    void refresh_refusal(Node *n);  // what node_send of a worker says at once
    Node *find_node(const std::string &name);
    // A call of ours to node n ended: counted by status, then told to its worker.
    void complete(Node *n, int w, uint64_t call, int status, int code, std::string_view reply);
    void closed_out(const cluster::Sessions::Out &o);
    // One message on a link. Small ones are queued whole; larger ones are cut into parts
    // that take turns with the other streams' (pump), in order within their stream.
    void send_message(Slot *s, const cluster::FrameHeader &h, std::string_view service,
                      std::string_view payload);
    void pump(Slot *s);
    void mark_dirty(Slot *s);
    void on_timer();
    // The table conn runs: the cluster file's, with the nodes discovery found that the file
    // does not name (a node in both keeps the file's address).
    std::shared_ptr<cluster::ClusterConfig> merged(const cluster::ClusterConfig &file);
    void apply_table(std::shared_ptr<cluster::ClusterConfig> next, const char *why);  // a diff
    void on_discovered(const DiscoveredView &v);

    const Config *cfg_;
    const cluster::ClusterConfig *cl_;
    Loop *loop_;
    std::vector<std::unique_ptr<Port>> *ports_;
    Channels *ch_;
    ConnStats *st_;
    int listen_fd_;
    Log *log_;
    cluster::LinkSelf self_;
    std::unordered_map<std::string, std::unique_ptr<Node>> nodes_;
    std::vector<std::unique_ptr<Node>> gone_;  // removed by a reload; their links drain
    std::vector<std::shared_ptr<cluster::ClusterConfig>> tables_;  // reloads' (links keep theirs)
    uint32_t cluster_gen_ = 0;
    std::shared_ptr<const cluster::ClusterConfig> file_;          // the cluster file's table
    std::shared_ptr<const cluster::ClusterConfig> applied_file_;  // the one cl_ was made from
    std::unique_ptr<Discovery> discovery_;
    // Nodes discovery no longer lists, with their links, until their grace ends.
    struct Lingering {
        std::unique_ptr<Node> node;
        uint64_t until_ms = 0;
    };
    std::map<std::string, Lingering> lingering_;
    void end_linger(std::map<std::string, Lingering>::iterator it);  // its link drains
    DiscoveredView discovered_;
    std::map<std::string, std::string> differ_warned_;  // node -> the address said once
    std::vector<std::unique_ptr<Slot>> slots_;          // every link, named or not yet
    std::vector<std::unique_ptr<Slot>> graveyard_;      // closed this turn
    std::vector<Slot *> dirty_;                         // frames queued this turn
    std::vector<std::unique_ptr<NodeOut>> outs_;        // one per port
    cluster::Sessions sessions_;
    std::unique_ptr<FnHandler> listen_handler_;
    uint64_t timer_ = 0, timer_at_ = 0;
    uint64_t next_link_id_ = 1;
    size_t next_any_ = 0;
    bool stopping_ = false;
    LogLimit lost_log_{20};              // lines a second about links lost or refused
    cluster::ClusterConfig no_cluster_;  // without a cluster file: "." calls only
    std::string scratch_;                // a record being built
    NodeStats spare_;                    // for nodes past kMaxNodes: counted, not shown
    uint64_t published_ms_ = 0;
    bool reading_paused_ = false;  // a worker's backlog is past queue_bytes: links not read
    void check_backlog();
    bool publish_due_ = true;
};

}  // namespace asyncd::conn
