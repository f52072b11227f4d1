// asyncd-bench: the load-test tool. Closed loop like redis-benchmark, open loop like wrk2,
// every reply checked, latency in a bounded-error histogram. Always bounded in count and
// time: it stops by itself.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bench/loadgen.h"
#include "bench/report.h"
#include "bench/server_cpu.h"

namespace {

using asyncd::bench::LoadProgress;
using asyncd::bench::LoadResult;
using asyncd::bench::LoadSpec;

void usage(FILE *out) {
    fprintf(out,
            "usage: asyncd-bench [options] [HOST:PORT]\n"
            "  -h HOST      the server (default 127.0.0.1); with -p, as redis-benchmark's\n"
            "  -p PORT      its port (or give HOST:PORT as the last argument)\n"
            "  -e PROTO     echo (len32be, the default), len32le, resp (PING), http (GET /)\n"
            "  -c N         connections (default 50)\n"
            "  -P N         requests in flight per connection, closed loop (default 1)\n"
            "  --batch      pipelining as redis-benchmark: write P requests, wait for all P\n"
            "               replies, write the next P (default: a window, a new request as\n"
            "               each reply comes)\n"
            "  -n N         requests in all (default 100000 unless -d is given)\n"
            "  -d SECONDS   run for this long instead of a count\n"
            "  -R RATE      open loop: RATE requests/s in all, spread evenly; latency counts\n"
            "               from when each request was meant to go\n"
            "  -s BYTES     echo payload size (default 64)\n"
            "  -t N         threads (default 1)\n"
            "  --idle N     also hold N idle connections open during the run\n"
            "  --cpu N      pin the load threads to CPU N (steadier figures on a shared box)\n"
            "  --max-time S stop any run after S seconds (default 120)\n"
            "  --json FILE  write the whole result as JSON\n"
            "  --svg FILE   draw the latency percentile curve (and throughput over time)\n"
            "  --svg FILE A.json B.json ...  (no target) draw earlier runs' --json results on\n"
            "               one chart, with a legend: before/after comparisons\n"
            "  --server-pid PID  report the server's CPU per request: PID and every\n"
            "               process below it (for asyncd, the supervisor); may be repeated\n"
            "  -q           no progress line\n"
            "  --help       this text\n"
            "Exit status: 0 when every reply was right, 1 when any was wrong or missing, 2 on\n"
            "bad usage.\n");
}

bool parse_target(const std::string &text, LoadSpec *spec) {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    std::string host = text.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    int port = atoi(text.c_str() + colon + 1);
    if (port <= 0 || port > 65535) return false;
    spec->host = host;
    spec->port = uint16_t(port);
    return true;
}

// Once a second on a terminal: requests/s so far, errors, elapsed.
void show_progress(const LoadProgress &p, const std::atomic<bool> &done) {
    while (!p.started.load()) {
        if (done.load()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    auto start = std::chrono::steady_clock::now();
    auto next = start + std::chrono::seconds(1);
    uint64_t last = 0;
    while (!done.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        auto now = std::chrono::steady_clock::now();
        if (now < next) continue;
        next += std::chrono::seconds(1);
        uint64_t c = p.completed.load();
        double secs = std::chrono::duration<double>(now - start).count();
        fprintf(stderr, "\r  %5.1f s  %10.0f req/s  %llu errors   ", secs, double(c - last),
                (unsigned long long)p.errors.load());
        last = c;
    }
    fprintf(stderr, "\r%60s\r", "");
}

}  // namespace

int main(int argc, char **argv) {
    LoadSpec spec;
    std::string json_path, svg_path;
    bool quiet = false;
    enum { kIdle = 1000, kCpu, kMaxTime, kJson, kSvg, kBatch, kServerPid };
    std::vector<pid_t> server_pids;
    bool have_port = false;
    static const struct option longopts[] = {{"idle", required_argument, nullptr, kIdle},
                                             {"batch", no_argument, nullptr, kBatch},
                                             {"server-pid", required_argument, nullptr, kServerPid},
                                             {"cpu", required_argument, nullptr, kCpu},
                                             {"max-time", required_argument, nullptr, kMaxTime},
                                             {"json", required_argument, nullptr, kJson},
                                             {"svg", required_argument, nullptr, kSvg},
                                             {"help", no_argument, nullptr, 'H'},
                                             {nullptr, 0, nullptr, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h:p:e:c:P:n:d:R:s:t:q", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'h':
                spec.host = optarg;
                break;
            case 'p': {
                int port = atoi(optarg);
                if (port <= 0 || port > 65535) {
                    fprintf(stderr, "asyncd-bench: -p takes a port (the protocol is -e)\n");
                    return 2;
                }
                spec.port = uint16_t(port);
                have_port = true;
                break;
            }
            case kBatch:
                spec.batch = true;
                break;
            case kServerPid:
                server_pids.push_back(pid_t(atoi(optarg)));
                if (server_pids.back() <= 0) {
                    fprintf(stderr, "asyncd-bench: --server-pid takes a pid\n");
                    return 2;
                }
                break;
            case 'e':
                if (!asyncd::bench::parse_proto(optarg, &spec.proto)) {
                    fprintf(stderr, "asyncd-bench: unknown protocol '%s'\n", optarg);
                    return 2;
                }
                break;
            case 'c':
                spec.conns = atoi(optarg);
                break;
            case 'P':
                spec.pipeline = atoi(optarg);
                break;
            case 'n':
                spec.requests = strtoull(optarg, nullptr, 10);
                break;
            case 'd':
                spec.seconds = atof(optarg);
                break;
            case 'R':
                spec.rate = atof(optarg);
                break;
            case 's':
                spec.payload = size_t(strtoull(optarg, nullptr, 10));
                break;
            case 't':
                spec.threads = atoi(optarg);
                break;
            case 'q':
                quiet = true;
                break;
            case kIdle:
                spec.idle = atoi(optarg);
                break;
            case kCpu:
                spec.cpu = atoi(optarg);
                break;
            case kMaxTime:
                spec.max_seconds = atof(optarg);
                break;
            case kJson:
                json_path = optarg;
                break;
            case kSvg:
                svg_path = optarg;
                break;
            case 'H':
                usage(stdout);
                return 0;
            default:
                usage(stderr);
                return 2;
        }
    }
    // Earlier results on one chart: --svg FILE and two or more --json files, no target.
    if (!svg_path.empty() && argc - optind >= 2 && !have_port) {
        std::vector<asyncd::bench::SvgRun> runs;
        std::string err;
        for (int i = optind; i < argc; i++) {
            asyncd::bench::SvgRun run;
            if (!asyncd::bench::read_svg_run(argv[i], &run, &err)) {
                fprintf(stderr, "asyncd-bench: %s\n", err.c_str());
                return 2;
            }
            runs.push_back(std::move(run));
        }
        if (!asyncd::bench::write_svg_runs(
                svg_path, "latency by percentile, " + std::to_string(runs.size()) + " runs", runs,
                &err)) {
            fprintf(stderr, "asyncd-bench: %s\n", err.c_str());
            return 1;
        }
        return 0;
    }
    bool target_ok =
        optind == argc - 1 ? parse_target(argv[optind], &spec) : optind == argc && have_port;
    if (!target_ok) {
        usage(stderr);
        return 2;
    }
    if (spec.conns < 1 || spec.pipeline < 1 || spec.threads < 1 || spec.idle < 0 ||
        spec.max_seconds <= 0 || spec.seconds < 0 || spec.rate < 0 ||
        spec.payload > (size_t(1) << 30)) {
        fprintf(stderr, "asyncd-bench: -c, -P, -t must be at least 1; the others not negative\n");
        return 2;
    }
    if (spec.requests == 0 && spec.seconds == 0) spec.requests = 100000;

    LoadProgress progress;
    std::atomic<bool> done{false};
    std::thread shower;
    if (!quiet && isatty(2))
        shower = std::thread(show_progress, std::cref(progress), std::cref(done));
    auto cpu_before = asyncd::bench::tree_cpu(server_pids);
    LoadResult r = asyncd::bench::run_load(spec, &progress);
    if (!server_pids.empty()) {
        auto cpu_after = asyncd::bench::tree_cpu(server_pids);
        r.server_cpu_ns = asyncd::bench::cpu_used_ns(cpu_before, cpu_after);
        r.server_processes = int(cpu_after.size());
        r.server_cpu_by_name = asyncd::bench::cpu_used_by_name(cpu_before, cpu_after);
    }
    done.store(true);
    if (shower.joinable()) shower.join();

    asyncd::bench::print_summary(stdout, spec, r);
    std::string err;
    if (!json_path.empty() && !asyncd::bench::write_json(json_path, spec, r, &err)) {
        fprintf(stderr, "asyncd-bench: %s\n", err.c_str());
    }
    if (!svg_path.empty() && !asyncd::bench::write_svg(svg_path, spec, r, &err)) {
        fprintf(stderr, "asyncd-bench: %s\n", err.c_str());
    }
    bool short_count = spec.seconds == 0 && r.completed < spec.requests;
    return (r.errors || r.connect_errors || r.dropped || short_count || r.completed == 0) ? 1 : 0;
}
