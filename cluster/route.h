// Where a call goes on the callee's node, and conn's record of the calls in flight through it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace asyncd::cluster {

// ASYNCD_ROUTE_KEY: the worker a key maps to, of `workers`. Jump consistent hashing
// (Lamping and Veach): when the count grows from n to n+1, only about 1/(n+1) of the keys
// move, and all of them to the new worker.
int key_worker(uint64_t key, int workers);

// conn's calls in flight, both ways. Outgoing: a worker's call written to a link, under a
// session id of conn's own (never 0, never reused while conn lives), so that the reply,
// a link's loss or a deadline finds the worker and its call. Incoming: a peer's call handed
// to a local worker, so that the worker's reply goes back on the link it came from with the
// peer's session.
class Sessions {
  public:
    struct Out {
        std::string node;
        int worker = 0;
        uint64_t call = 0;
        uint64_t deadline_ms = 0;
        uint64_t link = 0;  // the link it was written on (its owner's id for it)
    };
    struct In {
        uint64_t link = 0;  // which link (its owner's id for it)
        uint64_t peer_session = 0;
        int worker = 0;
        uint64_t deadline_ms = 0;
        int from_worker = -1;   // a local call (link 0): the calling worker
        uint64_t ring_end = 0;  // where its record ended in the worker's ring (0: not yet in)
    };

    uint64_t open_out(Out o);
    // The reply to `session`: false when there is none (late, or never ours): dropped.
    bool close_out(uint64_t session, Out *out);
    // The same for a reply that came from `node`: a session issued to another node is not
    // taken (false). *never: no such session was ever issued (the peer made it up).
    bool close_out_from(uint64_t session, const std::string &node, Out *out, bool *never);
    // A link to `node` was lost: every call written on it, in the order written.
    std::vector<Out> fail_node(const std::string &node);
    // The link they were written on is lost: those calls, in the order written.
    std::vector<Out> fail_link(uint64_t link);
    // Calls whose deadline is `grace_ms` past: the caller's worker has timed them out, and an
    // answer can only be dropped now.
    std::vector<Out> expire_out(uint64_t now_ms, uint64_t grace_ms);
    std::vector<In> expire_in(uint64_t now_ms, uint64_t grace_ms);

    uint64_t open_in(In in);
    bool close_in(uint64_t req, In *out);
    // A worker died: the calls it was given and had not answered (WORKER_DIED to each peer).
    std::vector<In> fail_worker(int worker);
    // A new process of `worker` reads its ring from `position` on: the requests whose record
    // ended at or before it were taken by a predecessor that died without answering.
    std::vector<In> fail_worker_before(int worker, uint64_t position);
    // The request's record went into the ring, ending at ring_end.
    void note_in_ring(uint64_t req, uint64_t ring_end);
    // The link they came on is gone: nobody to answer (dropped).
    size_t drop_link(uint64_t link);

    size_t out_pending() const { return out_.size(); }
    size_t in_pending() const { return in_.size(); }

  private:
    uint64_t next_ = 1;     // outgoing sessions
    uint64_t next_in_ = 1;  // incoming requests (another space: a reply names only ours)
    std::unordered_map<uint64_t, Out> out_;
    std::unordered_map<uint64_t, In> in_;
};

}  // namespace asyncd::cluster
