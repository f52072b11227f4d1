#include "cluster/node_queue.h"

namespace asyncd::cluster {

bool NodeQueue::push(QueuedFrame f) {
    if (q_.size() >= max_frames_ || f.bytes.size() > max_bytes_ - bytes_) {
        refused_++;
        return false;
    }
    bytes_ += f.bytes.size();
    q_.push_back(std::move(f));
    return true;
}

std::vector<QueuedFrame> NodeQueue::expire(uint64_t now_ms) {
    std::vector<QueuedFrame> out;
    std::deque<QueuedFrame> keep;
    for (QueuedFrame &f : q_) {
        if (f.deadline_ms && f.deadline_ms <= now_ms) {
            bytes_ -= f.bytes.size();
            out.push_back(std::move(f));
        } else {
            keep.push_back(std::move(f));
        }
    }
    q_.swap(keep);
    return out;
}

std::vector<QueuedFrame> NodeQueue::take_all() {
    std::vector<QueuedFrame> out;
    out.reserve(q_.size());
    for (QueuedFrame &f : q_)
        out.push_back(std::move(f));
    q_.clear();
    bytes_ = 0;
    return out;
}

uint64_t NodeQueue::next_deadline_ms() const {
    uint64_t best = 0;
    for (const QueuedFrame &f : q_) {
        if (f.deadline_ms && (!best || f.deadline_ms < best)) best = f.deadline_ms;
    }
    return best;
}

}  // namespace asyncd::cluster
