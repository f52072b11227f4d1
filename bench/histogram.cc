#include "bench/histogram.h"

#include <cmath>

namespace asyncd::bench {

namespace {

constexpr size_t kBuckets = 2 * Histogram::kHalf + (64 - Histogram::kSubBits) * Histogram::kHalf;

}  // namespace

Histogram::Histogram() : counts_(kBuckets, 0) {}

size_t Histogram::index_of(uint64_t value) {
    return log_linear_index(value);
}

uint64_t Histogram::highest_of(size_t index) {
    return log_linear_highest(index);
}

void Histogram::merge(const Histogram &other) {
    for (size_t i = 0; i < counts_.size(); i++)
        counts_[i] += other.counts_[i];
    total_ += other.total_;
    sum_ += other.sum_;
    if (other.total_ && other.min_ < min_) min_ = other.min_;
    if (other.max_ > max_) max_ = other.max_;
}

void Histogram::reset() {
    for (auto &c : counts_)
        c = 0;
    total_ = sum_ = max_ = 0;
    min_ = UINT64_MAX;
}

uint64_t Histogram::percentile(double p) const {
    if (total_ == 0) return 0;
    if (p <= 0) return min();
    uint64_t rank = uint64_t(std::ceil(p / 100.0 * double(total_)));
    if (rank < 1) rank = 1;
    if (rank > total_) rank = total_;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); i++) {
        seen += counts_[i];
        if (seen >= rank) {
            uint64_t v = highest_of(i);
            return v > max_ ? max_ : v;
        }
    }
    return max_;
}

}  // namespace asyncd::bench
