#!/usr/bin/env python3
"""make bench: asyncd against ref_echo, side by side, on loopback.

For each case it starts both servers, runs asyncd-bench against each in turn with the same
parameters (alternating, several rounds), takes medians, stops the servers and prints a
table with the ratio asyncd / reference. Writes build/bench/results.json and an SVG per
run of the median round. Everything is bounded: every run has a duration, every wait a
deadline.
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
OUT = os.path.join(BUILD, "bench")
ASYNCD = os.path.join(BUILD, "asyncd")
REF = os.path.join(BUILD, "ref_echo")
TOOL = os.path.join(BUILD, "asyncd-bench")
ECHO_SO = os.path.join(BUILD, "plugins", "echo.so")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, seconds, what):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for " + what)


def accepting(port):
    """True once something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop_process(proc, timeout=30):
    """SIGTERM, then SIGKILL if it has not exited within timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if int(rest[1]) == pid:
            out.append(int(d))
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Server:
    """asyncd or ref_echo, started and stopped."""

    busy_poll_us = None  # None: asyncd's default

    def __init__(self, kind, workers=1):
        self.kind = kind
        self.workers = workers
        self.port = free_port()
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="asyncd-bench-")
        self.log = os.path.join(self.dir, "asyncd.log")

    @property
    def name(self):
        return "ref_echo" if self.kind == "ref" else "asyncd %dw" % self.workers

    def start(self):
        if self.kind == "ref":
            self.proc = subprocess.Popen([REF, str(self.port)], stderr=subprocess.DEVNULL)
            wait_for(lambda: accepting(self.port), 10, "ref_echo")
            return
        conf = os.path.join(self.dir, "asyncd.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:%d\nworkers %d\nplugin %s\nmax_conns 15000\n"
                    "log_file %s\n" % (self.port, self.workers, ECHO_SO, self.log))
            if Server.busy_poll_us is not None:
                f.write("busy_poll_us %d\n" % Server.busy_poll_us)
        self.proc = subprocess.Popen([ASYNCD, "-c", conf])
        wait_for(lambda: "asyncd ready" in self.read_log(), 20, "asyncd ready")

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def conn_pid(self):
        if self.kind == "ref":
            return self.proc.pid
        for p in children_of(self.proc.pid):
            if comm(p) == "asyncd-conn":
                return p
        return 0

    def stop(self):
        """Stops the server; for asyncd returns conn's exit counters."""
        stop_process(self.proc)
        if self.kind == "ref":
            return {}
        m = re.search(r"conn exiting: (.*)", self.read_log())
        if not m:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def run_tool(server, conns, pipeline, seconds, cpu, tag, idle=0, svg=True, batch=False):
    base = os.path.join(OUT, tag)
    cmd = [TOOL, "-q", "-c", str(conns), "-P", str(pipeline), "-d", str(seconds), "-s", "64",
           "--server-pid", str(server.proc.pid), "--json", base + ".json",
           "127.0.0.1:%d" % server.port]
    if batch:
        cmd[1:1] = ["--batch"]
    if idle:
        cmd[1:1] = ["--idle", str(idle)]
    if svg:
        cmd[1:1] = ["--svg", base + ".svg"]
    if cpu is not None:
        cmd[1:1] = ["--cpu", str(cpu)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 120)
    with open(base + ".json") as f:
        r = json.load(f)
    if p.returncode != 0:
        raise RuntimeError("asyncd-bench against %s failed:\n%s" % (server.name, p.stdout))
    return r


def median_run(runs, key):
    ordered = sorted(runs, key=key)
    return ordered[len(ordered) // 2]


def compare(title, servers, conns, pipeline, args, tag, idle=0, batch=False):
    """Alternates the servers round by round; returns medians and spreads."""
    for s in servers:
        s.start()
    runs = {s.name: [] for s in servers}
    try:
        for rnd in range(args.rounds):
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            for s in order:
                t = "%s-%s-r%d" % (tag, s.name.replace(" ", ""), rnd)
                runs[s.name].append(run_tool(s, conns, pipeline, args.seconds, args.cpu, t,
                                             idle=idle, batch=batch))
    finally:
        counters = {s.name: s.stop() for s in servers}
    row = {"case": title, "conns": conns, "pipeline": pipeline, "idle": idle, "targets": {}}
    for s in servers:
        rs = runs[s.name]
        rates = [r["requests_per_s"] for r in rs]
        p50s = [r["latency_ns"]["p50"] for r in rs]
        med = median_run(rs, lambda r: r["requests_per_s"])
        entry = {
            "requests_per_s": statistics.median(rates),
            "spread": [min(rates), max(rates)],
            "p50_ns": statistics.median(p50s),
            "p99_ns": statistics.median([r["latency_ns"]["p99"] for r in rs]),
            "rounds": len(rs),
            "cpu_ns_per_request": statistics.median(
                [r.get("server_cpu_ns_per_request", 0) for r in rs]),
            # The server's CPU over the run's wall time: near 1.0 for ref_echo (one thread)
            # means the server, not the load tool, is the limit.
            "server_cores": statistics.median(
                [r.get("server_cpu_ns", 0) / 1e9 / r["elapsed_s"] for r in rs]),
            "cpu_ns_per_request_by_process": by_process(rs),
            "median_round_svg": "%s-%s-r%d.svg" % (tag, s.name.replace(" ", ""), rs.index(med)),
        }
        c = counters.get(s.name) or {}
        if c.get("packets_in"):
            entry["wakeups_per_packet"] = c["wakeup_writes"] / c["packets_in"]
        row["targets"][s.name] = entry
    return row


def by_process(runs):
    """Median CPU per request of each kind of process (conn, the workers together)."""
    kinds = {}
    for r in runs:
        per = {}
        for name, ns in r.get("server_cpu_ns_per_request_by_process", {}).items():
            kind = "work" if name.startswith("asyncd-work") else name.replace("asyncd-", "")
            per[kind] = per.get(kind, 0) + ns
        for kind, ns in per.items():
            kinds.setdefault(kind, []).append(ns)
    return {k: statistics.median(v) for k, v in kinds.items()}


def split_cell(a):
    """asyncd's CPU per request as conn + workers, in ns."""
    p = a.get("cpu_ns_per_request_by_process", {})
    if "conn" not in p:
        return ""
    return "%d+%d" % (p["conn"], p.get("work", 0))


def idle_rss(args):
    """conn's RSS per idle connection at args.idle connections, asyncd and ref_echo."""
    out = {}
    for kind in ("asyncd", "ref"):
        s = Server(kind)
        s.start()
        try:
            pid = s.conn_pid()
            before_rss, before_fds = rss_kib(pid), fd_count(pid)
            socks = []
            for _ in range(args.idle):
                socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=10))
            wait_for(lambda: fd_count(pid) >= before_fds + args.idle, 30, "accepts")
            after = rss_kib(pid)
            for so in socks:
                so.close()
        finally:
            s.stop()
        out[s.name] = {"idle": args.idle, "rss_before_kib": before_rss, "rss_after_kib": after,
                       "bytes_per_conn": (after - before_rss) * 1024.0 / args.idle}
    return out


def cpu_cell(ref, a):
    return "%d / %d" % (ref.get("cpu_ns_per_request", 0), a.get("cpu_ns_per_request", 0))


def cpu_ratio(ref, a):
    r = ref.get("cpu_ns_per_request", 0)
    return a.get("cpu_ns_per_request", 0) / r if r else 0


def fmt_rate(v):
    return "%.2fM" % (v / 1e6) if v >= 1e6 else "%.0fk" % (v / 1e3)


def fmt_us(ns):
    return "%.0f us" % (ns / 1e3)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="runs per target per case")
    ap.add_argument("--seconds", type=float, default=3, help="length of each run")
    ap.add_argument("--cpu", type=int, default=None, help="pin the load generator to this CPU")
    ap.add_argument("--idle", type=int, default=10000, help="connections of the scaling case")
    ap.add_argument("--quick", action="store_true", help="one round of one second")
    ap.add_argument("--busy-poll-us", type=int, default=None, help="asyncd's busy_poll_us")
    ap.add_argument("--only", default="", help="only cases whose title contains this")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1
    Server.busy_poll_us = args.busy_poll_us
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need:
        args.idle = max(100, soft - 1000)
        print("fd limit %d: the scaling case uses %d connections" % (soft, args.idle))
    os.makedirs(OUT, exist_ok=True)
    started = time.monotonic()
    rows = []
    cases = [
        ("echo 64B c=50 P=1", 50, 1, False), ("echo 64B c=50 P=16 window", 50, 16, False),
        ("echo 64B c=50 P=16 batch", 50, 16, True), ("echo 64B c=1 P=1 (latency)", 1, 1, False),
    ]
    plan = []
    for workers in (1, 2):
        for title, c, p, batch in cases:
            title_w = "%s, asyncd %d worker%s" % (title, workers, "s" if workers > 1 else "")
            plan.append((title_w, workers, c, p, 0,
                         "w%d-c%d-p%d%s" % (workers, c, p, "b" if batch else ""), batch))
    # How cost grows with connections: the same total pipeline over 10 and over N
    # connections; and the same 10 busy connections with N - 10 idle ones beside them.
    n = args.idle
    plan.append(("scaling: c=10 P=%d, asyncd 1 worker" % (n // 10), 1, 10, n // 10, 0,
                 "scale-c10", False))
    plan.append(("scaling: c=%d P=1, asyncd 1 worker" % n, 1, n, 1, 0, "scale-c%d" % n, False))
    plan.append(("scaling: c=10 P=16, asyncd 1 worker", 1, 10, 16, 0, "busy10", False))
    plan.append(("scaling: c=10 P=16 + %d idle, asyncd 1 worker" % (n - 10), 1, 10, 16, n - 10,
                 "busy10-idle", False))
    for title, workers, c, p, idle, tag, batch in plan:
        if args.only and args.only not in title:
            continue
        print("running: " + title, flush=True)
        rows.append(compare(title, [Server("ref"), Server("asyncd", workers)], c, p, args, tag,
                            idle, batch))
    rss = {}
    if not args.only:
        print("running: conn RSS with %d idle connections" % args.idle, flush=True)
        rss = idle_rss(args)

    print()
    print("%-46s %12s %12s %7s %22s %19s %6s %10s %9s %10s" % (
        "case", "ref_echo", "asyncd", "ratio", "spread ref / asyncd", "CPU ns/req ref/asd",
        "ratio", "conn+work", "ref cores", "wakeup/pkt"))
    for row in rows:
        ref = row["targets"]["ref_echo"]
        name = [k for k in row["targets"] if k != "ref_echo"][0]
        a = row["targets"][name]
        if row["conns"] == 1:
            ratio = ref["p50_ns"] / a["p50_ns"] if a["p50_ns"] else 0
            row["ratio"] = ratio
            print("%-46s %12s %12s %6.2fx %22s %19s %5.2fx %10s %9.2f %10s" % (
                row["case"] + " p50", fmt_us(ref["p50_ns"]), fmt_us(a["p50_ns"]), ratio,
                "", cpu_cell(ref, a), cpu_ratio(ref, a), split_cell(a), ref["server_cores"],
                "%.4f" % a.get("wakeups_per_packet", 0)))
            continue
        ratio = a["requests_per_s"] / ref["requests_per_s"]
        row["ratio"] = ratio
        spread = "%s-%s / %s-%s" % (fmt_rate(ref["spread"][0]), fmt_rate(ref["spread"][1]),
                                    fmt_rate(a["spread"][0]), fmt_rate(a["spread"][1]))
        print("%-46s %12s %12s %6.2fx %22s %19s %5.2fx %10s %9.2f %10s" % (
            row["case"], fmt_rate(ref["requests_per_s"]), fmt_rate(a["requests_per_s"]), ratio,
            spread, cpu_cell(ref, a), cpu_ratio(ref, a), split_cell(a), ref["server_cores"],
            "%.4f" % a.get("wakeups_per_packet", 0)))
    by_tag = {r["case"]: r for r in rows}
    pairs = [("same total pipeline", plan[-4][0], plan[-3][0]),
             ("10 busy, with and without idle ones", plan[-2][0], plan[-1][0])]
    for what, lo_case, hi_case in pairs:
        if lo_case in by_tag and hi_case in by_tag:
            for name in ("ref_echo", "asyncd 1w"):
                lo = by_tag[lo_case]["targets"][name]["requests_per_s"]
                hi = by_tag[hi_case]["targets"][name]["requests_per_s"]
                print("%s, %s: throughput at %d connections / at 10: %.2fx"
                      % (name, what, args.idle, hi / lo))
    for name, r in rss.items():
        print("%s: RSS %d KiB idle, %d KiB with %d idle connections: %.0f bytes per connection"
              % (name, r["rss_before_kib"], r["rss_after_kib"], r["idle"], r["bytes_per_conn"]))
    print("(ratio: asyncd / ref_echo throughput; for c=1, ref p50 / asyncd p50, higher is better;")
    print(" CPU ns/req: the server's processes' CPU per request, from /proc, asyncd / ref_echo:")
    print(" lower is better; conn+work: asyncd's, split by process. ref cores: the share of a")
    print(" core ref_echo used; near 1.0 means the server, not the load tool, was the limit)")
    elapsed = time.monotonic() - started
    print("make bench took %.0f s; results in %s" % (elapsed, os.path.join(OUT, "results.json")))
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"rounds": args.rounds, "seconds": args.seconds, "cpu": args.cpu,
                   "cases": rows, "idle_rss": rss, "elapsed_s": elapsed}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
