// Whether polling would take CPU from someone: more tasks runnable than there are CPUs
// (the running count of /proc/loadavg, sampled at most every 2 ms). Busy polling pays off
// only while a CPU would otherwise sit idle; on a box where the clients, conn and the
// workers already want every CPU, a poller steals from them and sleeping is cheaper.
#pragma once

#include <cstdint>

namespace asyncd {

class CpuContention {
  public:
    CpuContention();
    ~CpuContention();
    CpuContention(const CpuContention &) = delete;
    CpuContention &operator=(const CpuContention &) = delete;

    bool high(uint64_t now_ns);

  private:
    int fd_ = -1;
    int ncpu_ = 1;
    uint64_t next_ns_ = 0;
    bool high_ = false;
};

}  // namespace asyncd
