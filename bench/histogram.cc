#include "bench/histogram.h"

#include <cmath>

namespace asyncd::bench {

namespace {

constexpr size_t kBuckets = 2 * Histogram::kHalf + (64 - Histogram::kSubBits) * Histogram::kHalf;

}  // namespace

Histogram::Histogram() : counts_(kBuckets, 0) {}

size_t Histogram::index_of(uint64_t value) {
    if (value < 2 * kHalf) return size_t(value);
    int msb = 63 - __builtin_clzll(value);
    int shift = msb - (kSubBits - 1);  // value >> shift lies in [kHalf, 2 * kHalf)
    return size_t(2 * kHalf + uint64_t(shift - 1) * kHalf + ((value >> shift) - kHalf));
}

uint64_t Histogram::highest_of(size_t index) {
    if (index < 2 * kHalf) return index;
    size_t rest = index - 2 * kHalf;
    int shift = int(rest / kHalf) + 1;
    uint64_t top = kHalf + rest % kHalf;  // the value >> shift of this bucket
    uint64_t low = top << shift;
    uint64_t width = uint64_t(1) << shift;
    return low + (width - 1);
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
