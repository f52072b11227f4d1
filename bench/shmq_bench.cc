// shmq-bench: the ring between two processes, producer and consumer, one line per case:
//
//   case=NAME msgs_per_s=N ns_per_msg=N wakeups_per_msg=N runs=K spread=MIN..MAX
//
// Cases, each for 64-byte and 1 KiB records where it matters:
//   busy    the consumer spins when the ring is empty: the raw ring. The producer flushes
//           after every batch of -b pushes, as a conn loop turn does.
//   sleep   the same producer; the consumer blocks on its wake channel whenever the ring is
//           empty (how asyncd's processes run).
//   wake    the producer waits until the consumer has announced its sleep before each push
//           and flushes after it, so every message costs a wakeup: the ceiling of the wake
//           channel, pipe against eventfd.
//   naive   a wakeup written after every push whether the consumer sleeps or not, as the
//           async-server family does (one pipe byte per packet): what the protocol saves.
//   outrun  the consumer does work per message and the producer, flushing after every push,
//           outruns it: wakeups should all but vanish.
// Each case runs several times; the line gives the median and the spread of the runs.
// Every run is bounded by a message count and a time limit.
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <string>
#include <vector>

#include "shmq/ring.h"
#include "shmq/waker.h"

namespace asyncd::shmq {
namespace {

enum class Mode { kBusy, kSleep, kWake, kNaive, kOutrun };

struct Case {
    std::string name;
    Mode mode;
    size_t size;
    WakerKind waker;
};

struct Options {
    int reps = 5;
    uint64_t msgs = 0;  // 0: per-case default
    double seconds = 3.0;
    unsigned batch = 32;
    bool pin = true;
    std::string filter;
};

struct Start {
    std::atomic<int> go{0};
    std::atomic<uint64_t> naive_signals{0};  // the naive producer's own wakeup writes
};

struct RunResult {
    double msgs_per_s;
    double ns_per_msg;
    double wakeups_per_msg;
};

constexpr uint16_t kTypeData = 1;
constexpr uint16_t kTypeStop = 2;

uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);  // best effort
}

inline void relax(unsigned *spins) {
    __builtin_ia32_pause();
    if (++*spins % 1024 == 0) sched_yield();  // the other side may share our core
}

// Work done per message by the slow side: a few passes of FNV over the payload.
uint64_t work_on(const uint8_t *data, size_t len, int passes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int pass = 0; pass < passes; pass++) {
        for (size_t i = 0; i < len; i++)
            h = (h ^ data[i]) * 0x100000001b3ull;
    }
    return h;
}

// The producer: n messages, or fewer when the time limit passes, then a stop record.
int produce(Ring *ring, Waker *waker, Start *start, const Case &c, const Options &o, uint64_t n) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (o.pin) pin_to(0);
    unsigned batch = (c.mode == Mode::kBusy || c.mode == Mode::kSleep) ? o.batch : 1;
    Producer p(ring, waker);
    std::vector<uint8_t> payload(c.size, 0x5a);
    RecordMeta meta;
    meta.type = kTypeData;
    while (!start->go.load(std::memory_order_acquire))
        __builtin_ia32_pause();
    uint64_t deadline = now_ns() + uint64_t(o.seconds * 1e9);
    unsigned spins = 0, pending = 0;
    for (uint64_t i = 0; i < n; i++) {
        meta.seq = i;
        if (c.mode == Mode::kWake) {
            while (!ring->control()->sleeping.load(std::memory_order_acquire)) {
                __builtin_ia32_pause();
                if ((++spins & 0xfff) == 0 && now_ns() > deadline) break;
            }
        }
        while (p.try_push(meta, payload.data(), payload.size()) != PushStatus::kOk) {
            relax(&spins);  // a full ring has flushed by itself
        }
        if (++pending == batch) {
            p.flush();
            pending = 0;
        }
        if (c.mode == Mode::kNaive && waker->signal()) {
            start->naive_signals.store(start->naive_signals.load(std::memory_order_relaxed) + 1,
                                       std::memory_order_relaxed);
        }
        if (((i & 0x3ff) == 0 || c.mode == Mode::kWake) && now_ns() > deadline) break;
    }
    meta.type = kTypeStop;
    while (p.try_push(meta, nullptr, 0) != PushStatus::kOk)
        relax(&spins);
    p.flush();
    return 0;
}

bool run_once(const Case &c, const Options &o, uint64_t n, RunResult *out) {
    Ring ring;
    Waker waker;
    std::string err;
    RingParams params;
    params.capacity = 1 << 20;
    params.max_record = 64 << 10;
    params.max_msg = 64 << 10;
    if (!ring.create(params, &err) || !waker.open(c.waker, &err)) {
        fprintf(stderr, "shmq-bench: %s\n", err.c_str());
        return false;
    }
    void *mem =
        mmap(nullptr, sizeof(Start), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    Start *start = new (mem) Start();
    pid_t pid = fork();
    if (pid < 0) {
        perror("shmq-bench: fork");
        munmap(mem, sizeof(Start));
        return false;
    }
    if (pid == 0) _exit(produce(&ring, &waker, start, c, o, n));
    if (o.pin) pin_to(1);

    Consumer consumer(&ring, &waker);
    uint64_t received = 0, expect = 0, sink = 0;
    bool ok = true;
    unsigned spins = 0;
    start->go.store(1, std::memory_order_release);
    uint64_t t0 = now_ns();
    for (;;) {
        Message m;
        PopStatus s = consumer.peek(&m);
        if (s == PopStatus::kOk) {
            if (m.type == kTypeStop) break;
            if (m.seq != expect++) ok = false;
            if (c.mode == Mode::kOutrun) sink += work_on(m.data, m.len, 4);
            received++;
            consumer.commit();
            continue;
        }
        if (s == PopStatus::kCorrupt) {
            fprintf(stderr, "shmq-bench: corrupt ring: %s\n", consumer.error());
            ok = false;
            break;
        }
        if (c.mode == Mode::kBusy) {
            relax(&spins);
        } else if (!consumer.wait(1000) && waitpid(pid, nullptr, WNOHANG) == pid) {
            fprintf(stderr, "shmq-bench: producer died\n");
            ok = false;
            break;
        }
    }
    uint64_t elapsed = now_ns() - t0;
    if (!ok) kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    // The naive design's cost is its own write per message; the flush wakeups it also makes
    // are left out.
    uint64_t wakeups = c.mode == Mode::kNaive ? start->naive_signals.load() : ring.wakeups();
    munmap(mem, sizeof(Start));
    if (sink == 1) fprintf(stderr, " ");  // keeps the work from being optimised away
    if (!ok || received == 0) {
        fprintf(stderr, "shmq-bench: case %s failed (received %llu, order %s)\n", c.name.c_str(),
                (unsigned long long)received, ok ? "kept" : "broken");
        return false;
    }
    out->msgs_per_s = double(received) * 1e9 / double(elapsed);
    out->ns_per_msg = double(elapsed) / double(received);
    out->wakeups_per_msg = double(wakeups) / double(received);
    return true;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t k = v.size() / 2;
    return v.size() % 2 ? v[k] : (v[k - 1] + v[k]) / 2;
}

uint64_t default_msgs(const Case &c) {
    if (c.mode == Mode::kWake) return 20000;
    if (c.mode == Mode::kBusy) return c.size <= 64 ? 20000000 : 5000000;
    return c.size <= 64 ? 5000000 : 2000000;
}

void usage() {
    printf(
        "usage: shmq-bench [-r REPS] [-n MSGS] [-s SECONDS] [-b BATCH] [-f FILTER] [--no-pin]\n"
        "  -r REPS     runs per case; the median is printed (default 5)\n"
        "  -b BATCH    pushes between flushes in the busy and sleep cases (default 32)\n"
        "  -n MSGS     messages per run (default: 20M/5M busy, 20k wake, 5M/2M otherwise)\n"
        "  -s SECONDS  time limit of one run (default 3)\n"
        "  -f FILTER   only cases whose name contains FILTER\n"
        "  --no-pin    do not pin producer and consumer to CPUs 0 and 1\n");
}

int run(int argc, char **argv) {
    Options o;
    static const struct option longopts[] = {{"no-pin", no_argument, nullptr, 'P'},
                                             {"help", no_argument, nullptr, 'h'},
                                             {nullptr, 0, nullptr, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "r:n:s:b:f:h", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'r':
                o.reps = std::max(1, atoi(optarg));
                break;
            case 'n':
                o.msgs = strtoull(optarg, nullptr, 10);
                break;
            case 'b':
                o.batch = unsigned(std::max(1, atoi(optarg)));
                break;
            case 's':
                o.seconds = std::max(0.1, atof(optarg));
                break;
            case 'f':
                o.filter = optarg;
                break;
            case 'P':
                o.pin = false;
                break;
            case 'h':
                usage();
                return 0;
            default:
                usage();
                return 2;
        }
    }
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) o.pin = false;
    std::vector<Case> cases = {
        {"busy-64", Mode::kBusy, 64, WakerKind::kEventfd},
        {"busy-1k", Mode::kBusy, 1024, WakerKind::kEventfd},
        {"sleep-64-pipe", Mode::kSleep, 64, WakerKind::kPipe},
        {"sleep-64-eventfd", Mode::kSleep, 64, WakerKind::kEventfd},
        {"sleep-1k-pipe", Mode::kSleep, 1024, WakerKind::kPipe},
        {"sleep-1k-eventfd", Mode::kSleep, 1024, WakerKind::kEventfd},
        {"wake-64-pipe", Mode::kWake, 64, WakerKind::kPipe},
        {"wake-64-eventfd", Mode::kWake, 64, WakerKind::kEventfd},
        {"naive-64-pipe", Mode::kNaive, 64, WakerKind::kPipe},
        {"naive-64-eventfd", Mode::kNaive, 64, WakerKind::kEventfd},
        {"outrun-64-pipe", Mode::kOutrun, 64, WakerKind::kPipe},
        {"outrun-64-eventfd", Mode::kOutrun, 64, WakerKind::kEventfd},
    };
    int failures = 0;
    for (const Case &c : cases) {
        if (!o.filter.empty() && c.name.find(o.filter) == std::string::npos) continue;
        std::vector<double> rate, ns, wake;
        for (int r = 0; r < o.reps; r++) {
            RunResult res;
            if (!run_once(c, o, o.msgs ? o.msgs : default_msgs(c), &res)) {
                failures++;
                continue;
            }
            rate.push_back(res.msgs_per_s);
            ns.push_back(res.ns_per_msg);
            wake.push_back(res.wakeups_per_msg);
        }
        if (rate.empty()) continue;
        printf(
            "case=%s msgs_per_s=%.0f ns_per_msg=%.1f wakeups_per_msg=%.4f runs=%zu "
            "spread=%.0f..%.0f\n",
            c.name.c_str(), median(rate), median(ns), median(wake), rate.size(),
            *std::min_element(rate.begin(), rate.end()),
            *std::max_element(rate.begin(), rate.end()));
        fflush(stdout);
    }
    return failures ? 1 : 0;
}

}  // namespace
}  // namespace asyncd::shmq

int main(int argc, char **argv) {
    return asyncd::shmq::run(argc, argv);
}
