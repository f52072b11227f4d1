// The CPU time a server spends, read from /proc: a process and every process below it (for
// asyncd, give the supervisor: conn and the workers are its children). Sampled before and
// after a run, the difference divided by the requests is the server's CPU per request, a
// far steadier figure than throughput on a shared machine.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace asyncd::bench {

// pid -> utime + stime in nanoseconds, for each root and its descendants alive now.
std::map<pid_t, uint64_t> tree_cpu(const std::vector<pid_t> &roots);

// The CPU the processes of `after` used since `before` (a process that appeared meanwhile
// counts from 0; one that went away is lost, so a restart during a run under-counts).
uint64_t cpu_used_ns(const std::map<pid_t, uint64_t> &before,
                     const std::map<pid_t, uint64_t> &after);

// The same, by process name (/proc/PID/comm, read now; processes of one name are summed):
// for asyncd it shows what conn and each worker spend.
std::map<std::string, uint64_t> cpu_used_by_name(const std::map<pid_t, uint64_t> &before,
                                                 const std::map<pid_t, uint64_t> &after);

}  // namespace asyncd::bench
