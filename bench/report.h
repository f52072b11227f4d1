// How asyncd-bench shows a result: a summary on the terminal, the whole result as JSON,
// and a self-contained SVG of the latency percentile curve (and throughput over time).
#pragma once

#include <stdio.h>

#include <string>

#include "bench/loadgen.h"

namespace asyncd::bench {

void print_summary(FILE *out, const LoadSpec &spec, const LoadResult &r);
[[nodiscard]] bool write_json(const std::string &path, const LoadSpec &spec, const LoadResult &r,
                              std::string *err);
[[nodiscard]] bool write_svg(const std::string &path, const LoadSpec &spec, const LoadResult &r,
                             std::string *err);

// "123 us", "4.56 ms": a nanosecond figure for people.
std::string human_ns(double ns);

}  // namespace asyncd::bench
