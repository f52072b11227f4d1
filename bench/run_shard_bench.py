#!/usr/bin/env python3
"""make bench: one key space over two nodes, side by side with what users run instead.

  asyncd: two nodes of the resp plugin sharded over both (plugin.shard_nodes, one worker
          each: half the keys are the other node's), clients on node a
  twemproxy: nutcracker (fnv1a_64, ketama) in front of two redis-servers (persistence off)
  redis: one redis-server alone (the same work with no second node and no proxy)

driven by redis-benchmark -t set,get -r 100000 -c 50 at P=1 and P=16. Rounds alternate
between the three; the table gives medians, spreads, the ratios of asyncd to each, the
servers' CPU time per request (every process of each system, from /proc) and the cores the
load tool used (one thread: near 1.0 would mean it, not the servers, was the limit;
--threads 2 gives it a second thread to show which). Missing tools are installed with
apt-get; every run is bounded in requests, and every server is stopped at the end.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_bench import (ASYNCD, BUILD, OUT, ROOT, accepting, children_of, fmt_rate,  # noqa: E402
                       free_port, stop_process, wait_for)

RESP_SO = os.path.join(BUILD, "plugins", "resp.so")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime
        except OSError:
            pass
    return total / TICK


class System:
    """Processes started in their own folder, stopped together."""

    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="asyncd-shard-bench-")
        self.procs = []
        self.port = None

    def launch(self, cmd, port):
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, cwd=self.dir))
        wait_for(lambda: accepting(port), 20, self.name)

    def pids(self):
        out = []
        for p in self.procs:
            out.append(p.pid)
            for c in children_of(p.pid):
                out.append(c)
                out.extend(children_of(c))
        return out

    def stop(self):
        for p in self.procs:
            stop_process(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_asyncd_pair():
    s = System("asyncd 2 nodes")
    ports = {"a": free_port(), "b": free_port()}
    node_ports = {"a": free_port(), "b": free_port()}
    with open(os.path.join(s.dir, "cluster.conf"), "w") as f:
        for n in ("a", "b"):
            f.write("node %s 127.0.0.1:%d\n" % (n, node_ports[n]))
    for n in ("a", "b"):
        conf = os.path.join(s.dir, n + ".conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:%d\nworkers 1\nframe plugin\nplugin %s\n"
                    "plugin.shard_nodes a,b\nnode_name %s\ncluster cluster.conf\nmax_conns 1000\n"
                    "log_file %s.log\npid_file %s.pid\n" % (ports[n], RESP_SO, n, n, n))
        s.launch([ASYNCD, "-c", conf], ports[n])
    s.port = ports["a"]
    # The link is made by the first call: one command for a key of each node.
    for i in range(20):
        subprocess.run(["redis-cli", "-p", str(s.port), "SET", "warm%d" % i, "x"],
                       stdout=subprocess.DEVNULL, timeout=10)
    return s


def start_redis(s, port):
    s.launch(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
              "--dir", s.dir, "--logfile", os.path.join(s.dir, "redis-%d.log" % port)], port)


def start_twemproxy():
    s = System("twemproxy+2 redis")
    backends = [free_port(), free_port()]
    for p in backends:
        start_redis(s, p)
    s.port = free_port()
    conf = os.path.join(s.dir, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write("pool:\n  listen: 127.0.0.1:%d\n  hash: fnv1a_64\n  distribution: ketama\n"
                "  redis: true\n  auto_eject_hosts: false\n  server_connections: 1\n"
                "  servers:\n" % s.port)
        for p in backends:
            f.write("    - 127.0.0.1:%d:1\n" % p)
    s.launch(["nutcracker", "-c", conf, "-o", os.path.join(s.dir, "nutcracker.log"),
              "-s", str(free_port()), "-a", "127.0.0.1"], s.port)
    return s


def start_redis_alone():
    s = System("redis alone")
    s.port = free_port()
    start_redis(s, s.port)
    return s


def bench(system, pipeline, requests, threads):
    """One redis-benchmark run: SET and GET rates, server CPU ns per request, tool cores."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(system.port), "-t", "set,get",
           "-r", "100000", "-c", "50", "-P", str(pipeline), "-n", str(requests), "--csv"]
    if threads > 1:
        cmd += ["--threads", str(threads)]
    pids = system.pids()
    c0, t0 = cpu_seconds(pids), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("redis-benchmark did not finish in 300 s")
    wall = time.monotonic() - t0
    c1 = cpu_seconds(pids)
    rates = {}
    for name in ("SET", "GET"):
        m = re.search(r'"%s","([0-9.]+)"' % name, out)
        if not m:
            raise RuntimeError("redis-benchmark failed:\n" + out)
        rates[name] = float(m.group(1))
    return rates, (c1 - c0) * 1e9 / (2 * requests), wall


def tool_cores(system, pipeline, requests):
    """The load tool's own CPU over one run, in cores (from its rusage)."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(system.port), "-t", "set,get",
           "-r", "100000", "-c", "50", "-P", str(pipeline), "-n", str(requests), "-q"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    return (ru.ru_utime + ru.ru_stime) / wall


def check_same_answers(system):
    """Every system must answer as redis does before it is compared."""
    def cli(*a):
        return subprocess.run(["redis-cli", "-p", str(system.port)] + list(a),
                              stdout=subprocess.PIPE, text=True, timeout=10).stdout.strip()
    for i in range(50):
        if cli("SET", "check%d" % i, "v%d" % i) != "OK":
            raise RuntimeError(system.name + " did not SET")
    for i in range(50):
        if cli("GET", "check%d" % i) != "v%d" % i:
            raise RuntimeError(system.name + " did not GET what was SET")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="runs per system per case")
    ap.add_argument("--requests", type=int, default=200000,
                    help="redis-benchmark requests per test at P=1 (x10 at P=16)")
    ap.add_argument("--threads", type=int, default=1, help="redis-benchmark --threads")
    ap.add_argument("--quick", action="store_true", help="one round, short runs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 50000
    subprocess.run(["sh", os.path.join(ROOT, "scripts", "ensure-packages.sh"), "redis-server",
                    "redis-tools", "nutcracker"])
    if not all(shutil.which(t) for t in ("redis-server", "redis-benchmark", "nutcracker")):
        print("skipped: the sharded resp bench (redis-server, redis-benchmark or nutcracker "
              "not installed)")
        return 0
    os.makedirs(OUT, exist_ok=True)
    systems = []
    try:
        systems = [start_asyncd_pair(), start_twemproxy(), start_redis_alone()]
        for s in systems:
            check_same_answers(s)
        rows = []
        for pipeline in (1, 16):
            n = args.requests * (10 if pipeline > 1 else 1)
            title = "set,get -r 100000 c=50 P=%d" % pipeline
            print("running: " + title, flush=True)
            runs = {s.name: [] for s in systems}
            for rnd in range(args.rounds):
                order = systems[rnd % 3:] + systems[:rnd % 3]
                for s in order:
                    runs[s.name].append(bench(s, pipeline, n, args.threads))
            row = {"case": title, "pipeline": pipeline, "systems": {}}
            for s in systems:
                r = runs[s.name]
                row["systems"][s.name] = {
                    "set": statistics.median(x[0]["SET"] for x in r),
                    "get": statistics.median(x[0]["GET"] for x in r),
                    "set_spread": [min(x[0]["SET"] for x in r), max(x[0]["SET"] for x in r)],
                    "get_spread": [min(x[0]["GET"] for x in r), max(x[0]["GET"] for x in r)],
                    "cpu_ns": statistics.median(x[1] for x in r),
                    "tool_cores": tool_cores(s, pipeline, n // 2),
                }
            rows.append(row)
    finally:
        for s in systems:
            s.stop()
    print()
    names = [s.name for s in systems]
    print("%-28s %-18s %10s %10s %9s %6s %s" % ("case", "system", "SET/s", "GET/s", "CPU/req",
                                               "tool", "spread SET / GET"))
    for r in rows:
        for name in names:
            x = r["systems"][name]
            print("%-28s %-18s %10s %10s %7.0fns %5.2fc %s-%s / %s-%s" % (
                r["case"], name, fmt_rate(x["set"]), fmt_rate(x["get"]), x["cpu_ns"],
                x["tool_cores"], fmt_rate(x["set_spread"][0]), fmt_rate(x["set_spread"][1]),
                fmt_rate(x["get_spread"][0]), fmt_rate(x["get_spread"][1])))
        a = r["systems"][names[0]]
        for other in names[1:]:
            o = r["systems"][other]
            r.setdefault("ratios", {})[other] = {"set": a["set"] / o["set"],
                                                 "get": a["get"] / o["get"],
                                                 "cpu": a["cpu_ns"] / o["cpu_ns"]}
            print("%-28s asyncd / %-9s SET %.2fx  GET %.2fx  CPU per request %.2fx" % (
                "", other, a["set"] / o["set"], a["get"] / o["get"],
                a["cpu_ns"] / o["cpu_ns"]))
    print("(medians of %d alternating rounds; CPU/req: every process of the system, from "
          "/proc; tool: redis-benchmark's cores, %d thread(s))" % (args.rounds, args.threads))
    with open(os.path.join(OUT, "shard-results.json"), "w") as f:
        json.dump({"rounds": args.rounds, "threads": args.threads, "cases": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
