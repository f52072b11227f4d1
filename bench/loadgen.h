// The load engine of asyncd-bench: connections spread over threads, each thread one epoll
// loop. Closed loop (every connection keeps `pipeline` requests in flight, as
// redis-benchmark) or open loop (requests at a fixed total rate, as wrk2, with latency
// measured from when each request was meant to go, so a stall is not hidden). Always
// bounded by a count or a duration, and by max_seconds.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "bench/protocol.h"

namespace asyncd::bench {

struct LoadSpec {
    std::string host = "127.0.0.1";
    uint16_t port = 7000;
    Proto proto = Proto::kEcho32be;
    size_t payload = 64;
    int conns = 50;
    int pipeline = 1;
    // Closed loop: window (a new request as each reply comes, `pipeline` always in flight)
    // or batch (write `pipeline` at once, wait for all of them, write the next ones: as
    // redis-benchmark -P does).
    bool batch = false;
    int threads = 1;
    uint64_t requests = 0;     // total to complete; 0: run for `seconds`
    double seconds = 0;        // duration; 0: run until `requests`
    double rate = 0;           // > 0: open loop at this many requests/s in total
    double max_seconds = 120;  // a hard bound on any run
    int idle = 0;              // extra connections held open and silent
    int cpu = -1;              // pin the load threads to this CPU
};

struct LoadResult {
    uint64_t completed = 0;
    uint64_t errors = 0;          // wrong replies
    uint64_t connect_errors = 0;  // connections that could not be made
    uint64_t dropped = 0;         // connections closed early, by error or by the server
    double elapsed = 0;           // seconds from the first request to the last reply counted
    Histogram latency;            // nanoseconds
    std::vector<uint64_t> per_second;
    std::string first_error;
    // With --server-pid: the CPU the server's processes used during the run (0: not asked).
    uint64_t server_cpu_ns = 0;
    int server_processes = 0;
    std::map<std::string, uint64_t> server_cpu_by_name;  // the same, by process name
};

// Live counters the caller may read while a run goes on (for a progress line).
struct LoadProgress {
    std::atomic<uint64_t> completed{0};
    std::atomic<uint64_t> errors{0};
    std::atomic<bool> started{false};
};

LoadResult run_load(const LoadSpec &spec, LoadProgress *progress);

}  // namespace asyncd::bench
