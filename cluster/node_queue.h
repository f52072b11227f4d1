// What waits for one node's link while it connects (the first lazy connect, or the move to a
// new link after GOAWAY or an address change): frames never written, in order, bounded in
// count and bytes. A frame that does not fit is refused at once (QUEUE_FULL for its call);
// one whose deadline passes while it waits is taken out (TIMEOUT, never sent late); when
// the link comes up, everything goes to it in order; when the node fails or goes away,
// everything is handed back to be answered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace asyncd::cluster {

struct QueuedFrame {
    uint64_t call = 0;         // the caller's call id (0 for a send)
    uint16_t stream = 0;       // the sending worker
    uint64_t deadline_ms = 0;  // 0: none
    std::string bytes;         // the encoded frames of one message
};

class NodeQueue {
  public:
    NodeQueue(size_t max_frames, size_t max_bytes)
        : max_frames_(max_frames), max_bytes_(max_bytes) {}

    // False, and nothing queued, when it would pass either bound.
    bool push(QueuedFrame f);
    // The frames whose deadline is at or before now, taken out, in queue order.
    std::vector<QueuedFrame> expire(uint64_t now_ms);
    // Everything, in queue order; the queue is empty after.
    std::vector<QueuedFrame> take_all();

    size_t frames() const { return q_.size(); }
    size_t bytes() const { return bytes_; }
    uint64_t refused() const { return refused_; }
    // The earliest deadline waiting (0: none).
    uint64_t next_deadline_ms() const;

  private:
    size_t max_frames_, max_bytes_;
    std::deque<QueuedFrame> q_;
    size_t bytes_ = 0;
    uint64_t refused_ = 0;
};

}  // namespace asyncd::cluster
