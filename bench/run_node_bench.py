#!/usr/bin/env python3
"""make bench, the cluster part: two asyncd nodes on this machine (one worker each), a
caller plugin on node a keeping K calls in flight to an echo service on node b
(bench/node_bench.c), and asyncd-bench through the gateway example against the same
echo straight. Alternating rounds, medians and spreads, the server CPU per call of both
nodes from /proc, and the figures of skynet's cluster the issue gives for this kind of
machine, as the reference line. Every run is bounded in time; every wait has a deadline."""

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench as rb  # noqa: E402

BENCH_SO = os.path.join(rb.BUILD, "bench-plugins", "node_bench.so")
GATEWAY_SO = os.path.join(rb.BUILD, "plugins", "gateway.so")
NODE_ECHO_SO = os.path.join(rb.BUILD, "plugins", "node_echo.so")

# skynet's cluster, two nodes with one worker thread each, measured on this kind of machine
# (the reference the cluster issue states; not measured by this script).
SKYNET = {
    "16 B K=1": {"calls": 9.5e3, "p50_us": 99},
    "16 B K=50": {"calls": 39.5e3, "p99_us": 2200},
    "64 KiB K=10": {"calls": 5.2e3, "mb_s": 338},
    "sends K=50": {"calls": 88e3},
}


class Node:
    def __init__(self, name, cluster, plugin, extra=""):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="asyncd-nodebench-")
        self.port = rb.free_port()
        self.log = os.path.join(self.dir, "asyncd.log")
        conf = os.path.join(self.dir, "asyncd.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:%d\nworkers 1\nplugin %s\nnode_name %s\ncluster %s\n"
                    "log_file %s\n%s" % (self.port, plugin, name, cluster, self.log, extra))
        self.proc = subprocess.Popen([rb.ASYNCD, "-c", conf])
        rb.wait_for(lambda: "asyncd ready" in self.read_log(), 20, "node %s ready" % name)

    read_log = rb.Server.read_log  # the same file reading as make bench's servers

    def cpu_ns(self):
        total = 0
        for pid in [self.proc.pid] + rb.children_of(self.proc.pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                total += (int(rest[11]) + int(rest[12])) * 1e9 / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        return total

    def stop(self):
        rb.stop_process(self.proc)


def frame(text):
    data = text.encode()
    return struct.pack(">I", len(data) + 4) + data


def command(port, text, timeout):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(frame(text))
        buf = b""
        deadline = time.time() + timeout
        while len(buf) < 4 or len(buf) < struct.unpack(">I", buf[:4])[0]:
            if time.time() > deadline:
                raise RuntimeError("no answer to %r" % text)
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("closed while waiting for %r" % text)
            buf += chunk
        n = struct.unpack(">I", buf[:4])[0]
        return buf[4:n].decode()


def run_case(a, b, k, size, ms, mode):
    cpu0 = a.cpu_ns() + b.cpu_ns()
    out = command(a.port, "run b %d %d %d %s" % (k, size, ms, mode), ms / 1000 + 60)
    cpu = a.cpu_ns() + b.cpu_ns() - cpu0
    parts = out.split()
    if parts[0] != "done":
        raise RuntimeError(out)
    n, errors, p50, p99, elapsed = (int(x) for x in parts[1:6])
    return {"calls_s": n / (elapsed / 1e9), "errors": errors, "p50_us": p50 / 1e3,
            "p99_us": p99 / 1e3, "cpu_ns": cpu / max(n, 1), "n": n}


def median_of(runs, key):
    vals = [r[key] for r in runs]
    return statistics.median(vals), min(vals), max(vals)


def gateway_vs_direct(cluster, rounds, seconds):
    """asyncd-bench through gate (gateway -> logic's echo) and straight to logic's clients."""
    logic = Node("b", cluster, NODE_ECHO_SO)
    gate = Node("a", cluster, GATEWAY_SO, "plugin.target_node b\nplugin.service echo\n")
    out = {}
    try:
        out = {"through the gateway": [], "straight to the service": []}
        for _ in range(rounds):
            for label, port, nodes in (("through the gateway", gate.port, [gate, logic]),
                                       ("straight to the service", logic.port, [logic])):
                cpu0 = sum(n.cpu_ns() for n in nodes)
                js = os.path.join(gate.dir, "run.json")
                subprocess.run([rb.TOOL, "-c", "50", "-P", "16", "--batch", "-d", str(seconds),
                                "-q", "--json", js, "127.0.0.1:%d" % port],
                               capture_output=True, text=True, timeout=seconds + 60, check=True)
                cpu = sum(n.cpu_ns() for n in nodes) - cpu0
                with open(js) as f:
                    j = json.load(f)
                reqs = j["completed"]
                out[label].append({"rps": reqs / j["elapsed_s"], "cpu_ns": cpu / max(reqs, 1)})
    finally:
        gate.stop()
        logic.stop()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--busy-poll-us", type=int, default=None, help="both nodes' busy_poll_us")
    ap.add_argument("--only", default="", help="only cases whose title contains this")
    args = ap.parse_args()
    ms = int(args.seconds * 1000)
    tmp = tempfile.mkdtemp(prefix="asyncd-nodebench-")
    cluster = os.path.join(tmp, "cluster.conf")
    with open(cluster, "w") as f:
        f.write("node a 127.0.0.1:%d\nnode b 127.0.0.1:%d\n" % (rb.free_port(), rb.free_port()))
    cases = [("16 B K=1", 1, 16, "call"), ("16 B K=50", 50, 16, "call"),
             ("64 KiB K=10", 10, 65536, "call"), ("sends K=50", 50, 16, "send")]
    started = time.time()
    extra = "" if args.busy_poll_us is None else "busy_poll_us %d\n" % args.busy_poll_us
    cases = [c for c in cases if args.only in c[0]]
    b = Node("b", cluster, BENCH_SO, extra)
    a = Node("a", cluster, BENCH_SO, extra)
    results = {c[0]: [] for c in cases}
    try:
        command(a.port, "run b 1 16 200 call", 30)  # the link up, the caches warm
        for _ in range(args.rounds):
            for title, k, size, mode in cases:
                results[title].append(run_case(a, b, k, size, ms, mode))
    finally:
        a.stop()
        b.stop()
    print("\nnode a -> node b, one worker each, %d rounds of %.1f s, medians (spread)" %
          (args.rounds, args.seconds))
    print("%-14s %26s %12s %12s %12s %14s  %s" % ("case", "calls/s", "p50", "p99", "MB/s each",
                                                  "CPU ns/call", "vs skynet's cluster"))
    table = {}
    for title, k, size, mode in cases:
        runs = results[title]
        med, lo, hi = median_of(runs, "calls_s")
        p50 = median_of(runs, "p50_us")[0]
        p99 = median_of(runs, "p99_us")[0]
        cpu = median_of(runs, "cpu_ns")[0]
        mbs = med * size / 1e6
        ref = SKYNET[title]
        vs = ["%.1fx calls/s" % (med / ref["calls"])]
        if "p50_us" in ref and mode == "call":
            vs.append("p50 %.2fx of its" % (p50 / ref["p50_us"]))
        if "p99_us" in ref:
            vs.append("p99 %.2fx of its" % (p99 / ref["p99_us"]))
        if "mb_s" in ref:
            vs.append("%.1fx bytes/s" % (mbs / ref["mb_s"]))
        lat = ("%8.0f us" % p50, "%8.0f us" % p99) if mode == "call" else ("-", "-")
        errors = sum(r["errors"] for r in runs)
        print("%-14s %9.0f (%6.0f-%6.0f) %12s %12s %12.1f %14.0f  %s%s" %
              (title, med, lo, hi, lat[0], lat[1], mbs, cpu, ", ".join(vs),
               "  (%d errors)" % errors if errors else ""))
        table[title] = {"runs": runs, "median_calls_s": med, "p50_us": p50, "p99_us": p99,
                        "cpu_ns": cpu, "skynet": ref}
    if args.only:
        return 0
    gw = gateway_vs_direct(cluster, args.rounds, args.seconds)
    g, d = gw["through the gateway"], gw["straight to the service"]
    gm, dm = median_of(g, "rps")[0], median_of(d, "rps")[0]
    gc, dc = median_of(g, "cpu_ns")[0], median_of(d, "cpu_ns")[0]
    print("\nasyncd-bench -c 50 -P 16 --batch: through the gateway %.0f req/s (%.0f ns CPU/req, "
          "both nodes), straight %.0f req/s (%.0f ns); the extra hop costs %.2fx throughput, "
          "%.2fx CPU" % (gm, gc, dm, dc, gm / dm, gc / dc))
    print("(skynet's figures are the reference the cluster issue gives for this kind of "
          "machine; the CPU is both nodes' processes, from /proc)")
    os.makedirs(rb.OUT, exist_ok=True)
    with open(os.path.join(rb.OUT, "node_results.json"), "w") as f:
        json.dump({"cases": table, "gateway": gw, "elapsed_s": time.time() - started}, f,
                  indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
