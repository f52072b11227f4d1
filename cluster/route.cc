#include "cluster/route.h"

#include <algorithm>

namespace asyncd::cluster {

namespace {

// Takes the entry `id` out of m into *out; false when there is none.
template <class Map>
bool take(Map &m, uint64_t id, typename Map::mapped_type *out) {
    auto it = m.find(id);
    if (it == m.end()) return false;
    *out = std::move(it->second);
    m.erase(it);
    return true;
}

// Takes out every entry that pred accepts, in the order of their ids (the order they were
// opened in).
template <class Map, class Pred>
std::vector<typename Map::mapped_type> take_if(Map &m, Pred pred) {
    std::vector<uint64_t> ids;
    for (const auto &e : m) {
        if (pred(e.second)) ids.push_back(e.first);
    }
    std::sort(ids.begin(), ids.end());
    std::vector<typename Map::mapped_type> gone(ids.size());
    for (size_t i = 0; i < ids.size(); i++)
        take(m, ids[i], &gone[i]);
    return gone;
}

}  // namespace

int key_worker(uint64_t key, int workers) {
    if (workers <= 1) return 0;
    int64_t b = -1, j = 0;
    while (j < workers) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = int64_t(double(b + 1) * (double(1ll << 31) / double((key >> 33) + 1)));
    }
    return int(b);
}

uint64_t Sessions::open_out(Out o) {
    uint64_t s = next_++;
    out_.emplace(s, std::move(o));
    return s;
}

bool Sessions::close_out(uint64_t session, Out *out) {
    return take(out_, session, out);
}

bool Sessions::close_out_from(uint64_t session, const std::string &node, Out *out, bool *never) {
    *never = session == 0 || session >= next_;
    auto it = out_.find(session);
    if (it == out_.end() || it->second.node != node) {
        if (it != out_.end()) *never = true;  // not issued to this node
        return false;
    }
    *out = std::move(it->second);
    out_.erase(it);
    return true;
}

std::vector<Sessions::Out> Sessions::fail_link(uint64_t link) {
    return take_if(out_, [&](const Out &o) { return o.link == link; });
}

std::vector<Sessions::Out> Sessions::fail_node(const std::string &node) {
    return take_if(out_, [&](const Out &o) { return o.node == node; });
}

std::vector<Sessions::Out> Sessions::expire_out(uint64_t now_ms, uint64_t grace_ms) {
    return take_if(
        out_, [&](const Out &o) { return o.deadline_ms && o.deadline_ms + grace_ms <= now_ms; });
}

std::vector<Sessions::In> Sessions::expire_in(uint64_t now_ms, uint64_t grace_ms) {
    return take_if(
        in_, [&](const In &i) { return i.deadline_ms && i.deadline_ms + grace_ms <= now_ms; });
}

std::vector<Sessions::In> Sessions::fail_worker_before(int worker, uint64_t position) {
    return take_if(in_, [&](const In &i) {
        return i.worker == worker && i.ring_end && i.ring_end <= position;
    });
}

void Sessions::note_in_ring(uint64_t req, uint64_t ring_end) {
    auto it = in_.find(req);
    if (it != in_.end()) it->second.ring_end = ring_end;
}

uint64_t Sessions::open_in(In in) {
    uint64_t s = next_in_++;
    in_.emplace(s, in);
    return s;
}

bool Sessions::close_in(uint64_t req, In *out) {
    return take(in_, req, out);
}

std::vector<Sessions::In> Sessions::fail_worker(int worker) {
    return take_if(in_, [&](const In &i) { return i.worker == worker; });
}

size_t Sessions::drop_link(uint64_t link) {
    return take_if(in_, [&](const In &i) { return i.link == link; }).size();
}

}  // namespace asyncd::cluster
