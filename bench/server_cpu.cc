#include "bench/server_cpu.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <set>
#include <string>

namespace asyncd::bench {

namespace {

// Fields 4 (ppid), 14 (utime) and 15 (stime) of /proc/PID/stat, after the command name,
// which may hold spaces and parentheses: the last ')' ends it.
bool read_stat(pid_t pid, pid_t *ppid, uint64_t *ticks) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
    FILE *f = fopen(path, "re");
    if (!f) return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return false;
    char state;
    int pp;
    unsigned long long ut, st;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &pp, &ut,
               &st) != 4) {
        return false;
    }
    *ppid = pid_t(pp);
    *ticks = ut + st;
    return true;
}

}  // namespace

std::map<pid_t, uint64_t> tree_cpu(const std::vector<pid_t> &roots) {
    std::map<pid_t, std::pair<pid_t, uint64_t>> all;  // pid -> (ppid, ticks)
    if (DIR *d = opendir("/proc")) {
        while (struct dirent *e = readdir(d)) {
            char *end;
            long pid = strtol(e->d_name, &end, 10);
            if (*end || pid <= 0) continue;
            pid_t pp;
            uint64_t t;
            if (read_stat(pid_t(pid), &pp, &t)) all[pid_t(pid)] = {pp, t};
        }
        closedir(d);
    }
    std::set<pid_t> in(roots.begin(), roots.end());
    for (bool grew = true; grew;) {  // descendants, to any depth
        grew = false;
        for (const auto &p : all) {
            if (!in.count(p.first) && in.count(p.second.first)) {
                in.insert(p.first);
                grew = true;
            }
        }
    }
    long hz = sysconf(_SC_CLK_TCK);
    std::map<pid_t, uint64_t> out;
    for (pid_t pid : in) {
        auto it = all.find(pid);
        if (it != all.end()) out[pid] = it->second.second * (1000000000ull / uint64_t(hz));
    }
    return out;
}

namespace {

uint64_t used_since(const std::map<pid_t, uint64_t> &before, pid_t pid, uint64_t now) {
    auto b = before.find(pid);
    uint64_t from = b == before.end() ? 0 : b->second;
    return now > from ? now - from : 0;
}

std::string comm(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", int(pid));
    char buf[64] = "";
    if (FILE *f = fopen(path, "re")) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
    return buf[0] ? buf : "pid " + std::to_string(pid);
}

}  // namespace

uint64_t cpu_used_ns(const std::map<pid_t, uint64_t> &before,
                     const std::map<pid_t, uint64_t> &after) {
    uint64_t used = 0;
    for (const auto &a : after)
        used += used_since(before, a.first, a.second);
    return used;
}

std::map<std::string, uint64_t> cpu_used_by_name(const std::map<pid_t, uint64_t> &before,
                                                 const std::map<pid_t, uint64_t> &after) {
    std::map<std::string, uint64_t> out;
    for (const auto &a : after)
        out[comm(a.first)] += used_since(before, a.first, a.second);
    return out;
}

}  // namespace asyncd::bench
