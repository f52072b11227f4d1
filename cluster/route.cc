#include "cluster/route.h"

#include <algorithm>

namespace asyncd::cluster {

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
    auto it = out_.find(session);
    if (it == out_.end()) return false;
    *out = std::move(it->second);
    out_.erase(it);
    return true;
}

std::vector<Sessions::Out> Sessions::fail_node(const std::string &node) {
    std::vector<uint64_t> ids;
    for (const auto &e : out_) {
        if (e.second.node == node) ids.push_back(e.first);
    }
    std::sort(ids.begin(), ids.end());
    std::vector<Out> gone;
    for (uint64_t id : ids) {
        gone.push_back(std::move(out_[id]));
        out_.erase(id);
    }
    return gone;
}

uint64_t Sessions::open_in(In in) {
    uint64_t s = next_++;
    in_.emplace(s, in);
    return s;
}

bool Sessions::close_in(uint64_t req, In *out) {
    auto it = in_.find(req);
    if (it == in_.end()) return false;
    *out = it->second;
    in_.erase(it);
    return true;
}

std::vector<Sessions::In> Sessions::fail_worker(int worker) {
    std::vector<uint64_t> ids;
    for (const auto &e : in_) {
        if (e.second.worker == worker) ids.push_back(e.first);
    }
    std::sort(ids.begin(), ids.end());
    std::vector<In> gone;
    for (uint64_t id : ids) {
        gone.push_back(in_[id]);
        in_.erase(id);
    }
    return gone;
}

size_t Sessions::drop_link(uint64_t link) {
    size_t n = 0;
    for (auto it = in_.begin(); it != in_.end();) {
        if (it->second.link == link) {
            it = in_.erase(it);
            n++;
        } else {
            ++it;
        }
    }
    return n;
}

}  // namespace asyncd::cluster
