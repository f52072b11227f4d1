#!/usr/bin/env python3
"""make bench, second part: asyncd's example plugins against the servers users would
otherwise pick, side by side on loopback, driven by those servers' own load tools.

  resp plugin (1 worker) vs redis-server (persistence off): redis-benchmark -t ping_mbulk,
      c=50, P=1 and P=16
  http plugin (1 worker) vs nginx (1 worker, `return 200`, access log off): wrk -t1 -c50

Rounds alternate between the two servers; the table gives medians, spreads and the ratio
asyncd / other. Missing tools are installed with apt-get (scripts/ensure-packages.sh); a
case whose tools are still missing is skipped with a line saying so. Every run is bounded
in requests or seconds, and every server is stopped at the end.
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
from run_bench import (ASYNCD, BUILD, OUT, ROOT, accepting, fmt_rate, free_port,  # noqa: E402
                       stop_process, wait_for)

PLUGINS = os.path.join(BUILD, "plugins")
BODY = "Hello from asyncd\n"  # what both HTTP servers answer, byte for byte


class Proc:
    """A server process of ours or theirs, started in its own folder and stopped."""

    def __init__(self, name):
        self.name = name
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="asyncd-proto-bench-")
        self.proc = None

    def launch(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir)
        wait_for(lambda: accepting(self.port), 20, self.name)

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_asyncd(plugin):
    p = Proc("asyncd %s plugin" % plugin)
    conf = os.path.join(p.dir, "asyncd.conf")
    with open(conf, "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\nframe plugin\nplugin %s\nmax_conns 1000\n"
                "log_file %s\n" % (p.port, os.path.join(PLUGINS, plugin + ".so"),
                                   os.path.join(p.dir, "asyncd.log")))
    p.launch([ASYNCD, "-c", conf])
    return p


def start_redis():
    p = Proc("redis-server")
    p.launch(["redis-server", "--port", str(p.port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
              "--dir", p.dir, "--logfile", os.path.join(p.dir, "redis.log")])
    return p


def start_nginx():
    p = Proc("nginx")
    conf = os.path.join(p.dir, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / { default_type text/plain; return 200 "%(body)s"; }
    }
}
""" % {"dir": p.dir, "port": p.port, "body": BODY.replace("\n", "\\n")})
    p.launch(["nginx", "-p", p.dir, "-c", conf])
    return p


def redis_benchmark(port, pipeline, requests):
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "ping_mbulk", "-c", "50",
         "-P", str(pipeline), "-n", str(requests), "--csv"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    # "test","rps",... then "PING_MBULK","88495.58",...
    m = re.search(r'"PING_MBULK","([0-9.]+)"', out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("redis-benchmark failed:\n" + out.stdout)
    return float(m.group(1))


def wrk(port, seconds):
    url = "http://127.0.0.1:%d/" % port
    out = subprocess.run(["wrk", "-t1", "-c50", "-d%ds" % seconds, url],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=seconds + 60)
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("wrk failed:\n" + out.stdout)
    if "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise RuntimeError("wrk saw errors:\n" + out.stdout)
    return float(m.group(1))


def check_http(port):
    """Both servers must answer the same thing before they are compared."""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5) as r:
        body = r.read().decode()
    if r.status != 200 or body != BODY:
        raise RuntimeError("port %d answered %d %r" % (port, r.status, body))


def side_by_side(title, ours, theirs, measure, rounds):
    runs = {ours.name: [], theirs.name: []}
    for rnd in range(rounds):
        order = (ours, theirs) if rnd % 2 == 0 else (theirs, ours)
        for s in order:
            runs[s.name].append(measure(s.port))
    row = {"case": title, "targets": {}}
    for s in (ours, theirs):
        rates = runs[s.name]
        row["targets"][s.name] = {"requests_per_s": statistics.median(rates),
                                  "spread": [min(rates), max(rates)], "rounds": rates}
    row["ratio"] = (row["targets"][ours.name]["requests_per_s"] /
                    row["targets"][theirs.name]["requests_per_s"])
    row["ours"], row["theirs"] = ours.name, theirs.name
    return row


def ensure(*pkgs):
    subprocess.run(["sh", os.path.join(ROOT, "scripts", "ensure-packages.sh")] + list(pkgs))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="runs per server per case")
    ap.add_argument("--requests", type=int, default=300000,
                    help="redis-benchmark requests per run at P=1 (x10 at P=16)")
    ap.add_argument("--seconds", type=int, default=10, help="wrk's duration per run")
    ap.add_argument("--quick", action="store_true", help="one round, short runs")
    ap.add_argument("--only", default="", help="resp or http")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.requests, args.seconds = 1, 100000, 3
    os.makedirs(OUT, exist_ok=True)
    rows = []
    if args.only in ("", "resp"):
        ensure("redis-server", "redis-tools")
        if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
            print("skipped: resp vs redis-server (redis-server/redis-benchmark not installed)")
        else:
            for pipeline in (1, 16):
                title = "redis-benchmark ping_mbulk c=50 P=%d" % pipeline
                print("running: " + title, flush=True)
                ours, theirs = start_asyncd("resp"), start_redis()
                try:
                    n = args.requests * (10 if pipeline > 1 else 1)
                    rows.append(side_by_side(title, ours, theirs,
                                             lambda port: redis_benchmark(port, pipeline, n),
                                             args.rounds))
                finally:
                    ours.stop()
                    theirs.stop()
    if args.only in ("", "http"):
        ensure("nginx", "wrk")
        if not (shutil.which("nginx") and shutil.which("wrk")):
            print("skipped: http vs nginx (nginx/wrk not installed)")
        else:
            title = "wrk -t1 -c50 -d%ds GET /" % args.seconds
            print("running: " + title, flush=True)
            ours, theirs = start_asyncd("http"), start_nginx()
            try:
                check_http(ours.port)
                check_http(theirs.port)
                rows.append(side_by_side(title, ours, theirs,
                                         lambda port: wrk(port, args.seconds), args.rounds))
            finally:
                ours.stop()
                theirs.stop()
    print()
    print("%-40s %-22s %10s %-14s %10s %7s  %s" % ("case", "asyncd", "req/s", "other", "req/s",
                                                   "ratio", "spread asyncd / other"))
    for r in rows:
        a, o = r["targets"][r["ours"]], r["targets"][r["theirs"]]
        print("%-40s %-22s %10s %-14s %10s %6.2fx  %s-%s / %s-%s" % (
            r["case"], r["ours"], fmt_rate(a["requests_per_s"]), r["theirs"],
            fmt_rate(o["requests_per_s"]), r["ratio"], fmt_rate(a["spread"][0]),
            fmt_rate(a["spread"][1]), fmt_rate(o["spread"][0]), fmt_rate(o["spread"][1])))
    print("(ratio: asyncd / other, medians of %d alternating rounds; higher is better)"
          % args.rounds)
    with open(os.path.join(OUT, "proto-results.json"), "w") as f:
        json.dump({"rounds": args.rounds, "cases": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
