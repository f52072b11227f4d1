#include "cluster/calls.h"

#include <algorithm>

namespace asyncd::cluster {

CallTable::CallTable(uint64_t first_id, size_t max_pending)
    : next_id_(first_id ? first_id : 1), max_pending_(max_pending) {}

uint64_t CallTable::add(const std::string &node, uint64_t deadline_ms, CallFn fn, void *arg) {
    if (calls_.size() >= max_pending_) return 0;
    uint64_t id = next_id_++;
    calls_.emplace(id, Call{node, deadline_ms, fn, arg});
    by_deadline_.emplace(deadline_ms, id);
    return id;
}

uint64_t CallTable::add_failed(int status, CallFn fn, void *arg) {
    uint64_t id = next_id_++;
    failed_.push_back(Failed{id, status, fn, arg});
    return id;
}

void CallTable::finish(uint64_t id, Call c, int status, int code, const void *reply, size_t len) {
    auto range = by_deadline_.equal_range(c.deadline_ms);
    for (auto it = range.first; it != range.second; ++it) {
        if (it->second == id) {
            by_deadline_.erase(it);
            break;
        }
    }
    call(c.fn, c.arg, id, status, code, reply, len);
}

bool CallTable::complete(uint64_t call, int status, int code, const void *reply, size_t len) {
    auto it = calls_.find(call);
    if (it == calls_.end()) {
        dropped_++;
        return false;
    }
    Call c = std::move(it->second);
    calls_.erase(it);  // before the callback: it may make new calls
    finish(call, std::move(c), status, code, reply, len);
    return true;
}

bool CallTable::end(uint64_t call, int status) {
    auto it = calls_.find(call);
    if (it == calls_.end()) return false;  // a callback before it ended it: not a drop
    Call c = std::move(it->second);
    calls_.erase(it);
    finish(call, std::move(c), status, 0, nullptr, 0);
    return true;
}

size_t CallTable::fail_node(const std::string &node, int status) {
    std::vector<uint64_t> ids;
    for (const auto &e : calls_) {
        if (e.second.node == node) ids.push_back(e.first);
    }
    std::sort(ids.begin(), ids.end());  // in the order they were made
    size_t ended = 0;
    for (uint64_t id : ids)
        ended += end(id, status) ? 1 : 0;
    return ended;
}

bool CallTable::fail_later(uint64_t call, int status) {
    auto it = calls_.find(call);
    if (it == calls_.end()) return false;
    Call c = std::move(it->second);
    calls_.erase(it);
    auto range = by_deadline_.equal_range(c.deadline_ms);
    for (auto d = range.first; d != range.second; ++d) {
        if (d->second == call) {
            by_deadline_.erase(d);
            break;
        }
    }
    failed_.push_back(Failed{call, status, c.fn, c.arg});
    return true;
}

size_t CallTable::fail_all(int status) {
    std::vector<uint64_t> ids;
    for (const auto &e : calls_)
        ids.push_back(e.first);
    std::sort(ids.begin(), ids.end());
    size_t ended = 0;
    for (uint64_t id : ids)
        ended += end(id, status) ? 1 : 0;
    return ended;
}

size_t CallTable::run(uint64_t now_ms, int timeout_status) {
    size_t ran = 0;
    // Failures first, in the order the calls were made; new ones a callback adds wait for
    // the next run, so a callback that calls again cannot keep this loop going.
    std::vector<Failed> failed;
    failed.swap(failed_);
    for (const Failed &f : failed) {
        call(f.fn, f.arg, f.id, f.status, 0, nullptr, 0);
        ran++;
    }
    std::vector<uint64_t> due;
    for (auto it = by_deadline_.begin(); it != by_deadline_.end() && it->first <= now_ms; ++it)
        due.push_back(it->second);
    for (uint64_t id : due) {
        if (end(id, timeout_status)) ran++;
    }
    return ran;
}

bool CallTable::next_deadline_ms(uint64_t *at) const {
    if (!failed_.empty()) {
        *at = 0;  // at once
        return true;
    }
    if (by_deadline_.empty()) return false;
    *at = by_deadline_.begin()->first;
    return true;
}

}  // namespace asyncd::cluster
