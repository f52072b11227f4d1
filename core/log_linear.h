// The buckets of a log-linear histogram, after HdrHistogram: values below 256 have a bucket
// each; above, each power of two is cut into 128 buckets, so that the highest value of a
// bucket is at most 1/128 (0.79%) above any value in it. asyncd-bench's latencies and the
// workers' handler times (core/latency.h) share them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace asyncd {

inline constexpr int kLogLinearSubBits = 8;
inline constexpr uint64_t kLogLinearHalf = uint64_t(1) << (kLogLinearSubBits - 1);  // 128

constexpr size_t log_linear_index(uint64_t value) {
    if (value < 2 * kLogLinearHalf) return size_t(value);
    int msb = 63 - __builtin_clzll(value);
    int shift = msb - (kLogLinearSubBits - 1);  // value >> shift lies in [128, 256)
    return size_t(2 * kLogLinearHalf + uint64_t(shift - 1) * kLogLinearHalf +
                  ((value >> shift) - kLogLinearHalf));
}

// The highest value that falls in bucket `index`.
constexpr uint64_t log_linear_highest(size_t index) {
    if (index < 2 * kLogLinearHalf) return index;
    size_t rest = index - 2 * kLogLinearHalf;
    int shift = int(rest / kLogLinearHalf) + 1;
    uint64_t low = (kLogLinearHalf + rest % kLogLinearHalf) << shift;
    return low + ((uint64_t(1) << shift) - 1);
}

}  // namespace asyncd
