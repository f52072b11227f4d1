// How asyncd-bench shows a result: a summary on the terminal, the whole result as JSON,
// and a self-contained SVG of the latency percentile curve (and throughput over time).
#pragma once

#include <stdio.h>

#include <string>
#include <utility>
#include <vector>

#include "bench/loadgen.h"

namespace asyncd::bench {

void print_summary(FILE *out, const LoadSpec &spec, const LoadResult &r);
[[nodiscard]] bool write_json(const std::string &path, const LoadSpec &spec, const LoadResult &r,
                              std::string *err);
[[nodiscard]] bool write_svg(const std::string &path, const LoadSpec &spec, const LoadResult &r,
                             std::string *err);

// One run on a chart: its percentile curve as (nines, ns) points, replies per second.
struct SvgRun {
    std::string label;
    std::vector<std::pair<double, double>> curve;
    std::vector<double> per_second;
};
SvgRun svg_run(const std::string &label, const LoadResult &r);
[[nodiscard]] bool read_svg_run(const std::string &path, SvgRun *run, std::string *err);
// Several runs on one chart (a legend names them when there are two or more).
[[nodiscard]] bool write_svg_runs(const std::string &path, const std::string &title,
                                  const std::vector<SvgRun> &runs, std::string *err);

// "123 us", "4.56 ms": a nanosecond figure for people.
std::string human_ns(double ns);

}  // namespace asyncd::bench
