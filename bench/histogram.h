// A latency histogram with bounded relative error, after HdrHistogram: values below 256 are
// exact; above, each power of two is cut into 128 buckets, so a reported value is at most
// 1/128 (0.79%) above the true one. Fixed size, no allocation while recording.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/log_linear.h"

namespace asyncd::bench {

class Histogram {
  public:
    static constexpr int kSubBits = kLogLinearSubBits;
    static constexpr uint64_t kHalf = kLogLinearHalf;  // 128
    static constexpr double kMaxRelativeError = 1.0 / double(kHalf);

    Histogram();

    void record(uint64_t value) {
        counts_[index_of(value)]++;
        total_++;
        sum_ += value;
        if (value < min_) min_ = value;
        if (value > max_) max_ = value;
    }
    void merge(const Histogram &other);
    void reset();

    uint64_t count() const { return total_; }
    uint64_t min() const { return total_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    double mean() const { return total_ ? double(sum_) / double(total_) : 0.0; }
    // The value at percentile p (0..100): the highest value of the bucket holding the
    // ceil(p% * count)-th smallest recording, never above max().
    uint64_t percentile(double p) const;

    static size_t index_of(uint64_t value);
    static uint64_t highest_of(size_t index);

  private:
    std::vector<uint64_t> counts_;
    uint64_t total_ = 0;
    uint64_t sum_ = 0;
    uint64_t min_ = UINT64_MAX;
    uint64_t max_ = 0;
};

}  // namespace asyncd::bench
