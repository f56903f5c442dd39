#!/usr/bin/env python3
"""tsecho bench measured against the shared harness's lineload (issue 16).

    scripts/bench-figures.py TSECHO_BIN LINELOAD_BIN [ROUNDS]
    ONLY=closed scripts/bench-figures.py ...   # one section: closed, open, threads

One tsecho server per section, on CPU 0; clients on CPU 1 (pinned) or
unpinned where the section says. Every run is one JSON line on stdout:
  1. closed loop, 50 conns, pipeline 1, 64 B, --threads 1: lineload
     (--check, as tsecho bench always checks) and tsecho bench
     alternating; rps, p50, p90, client CPU, and replies per second of
     client CPU;
  2. unpinned, 50 conns, pipeline 16: tsecho bench --threads 1 and 2
     against a server with --threads 2;
  3. open loop, 1 connection, --rate 100 and 1000, against closed loop,
     with how late requests left (send_lag); and sockperf ping-pong at
     --mps 100 and --mps max against the same server's sockperf
     listener, a C generator's view of the same low-rate effect (sockperf
     prints half the round trip; only its ratios are compared).
"""
import json
import os
import re
import subprocess
import sys

BIN, LINELOAD = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
# tsecho bench checks that every reply ends with its request; lineload
# does so only with --check. Without it the two do different work.
CHECK = ["--check"]
ONLY = os.environ.get("ONLY")


def wanted(section):
    return ONLY is None or ONLY == section


class Server:
    def __init__(self, threads, pin=True, listeners=("tcp://127.0.0.1:0",)):
        cmd = ([] if not pin else ["taskset", "-c", "0"]) + [
            BIN, "serve", "--threads", str(threads)]
        for url in listeners:
            cmd += ["-l", url]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.addrs = []
        while len(self.addrs) < len(listeners):
            line = self.proc.stderr.readline()
            if not line:
                sys.exit("the server ended before listening")
            m = re.search(r"listening on \S+://(\S+)", line)
            if m:
                self.addrs.append(m.group(1))
        self.addr = self.addrs[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def run(cmd):
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def bench(addr, *args, pin=True):
    cmd = (["taskset", "-c", "1"] if pin else []) + [BIN, "bench", f"tcp://{addr}", "--json", *args]
    r = run(cmd)
    row = dict(rps=r["rps"], p50_us=r["p50_us"], p90_us=r["p90_us"], p99_us=r["p99_us"],
               client_cpu=r["client_cpu"], replies_per_cpu_s=r["rps"] / max(r["client_cpu"], 1e-9))
    if r.get("send_lag"):
        row.update(send_lag_p50_us=r["send_lag"]["p50_us"], send_lag_p99_us=r["send_lag"]["p99_us"])
    return row


def sockperf(addr, mps):
    """sockperf ping-pong over TCP; its percentiles are half round trips."""
    host, port = addr.rsplit(":", 1)
    out = subprocess.run(["taskset", "-c", "1", "sockperf", "ping-pong", "--tcp", "-i", host,
                          "-p", port, "-t", "4", "--mps", mps, "--msg-size", "64"],
                         capture_output=True, text=True, check=True).stdout
    pct = {float(m.group(1)): float(m.group(2))
           for m in re.finditer(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", out)}
    return dict(p50_half_rtt_us=pct[50.0], p99_half_rtt_us=pct[99.0])


def lineload(addr, *args):
    r = run(["taskset", "-c", "1", LINELOAD, "tcp", addr, *args])
    return dict(rps=r["rps"], p50_us=r["p50_us"], p90_us=r["p90_us"], p99_us=r["p99_us"],
                client_cpu=r["client_cpu"], replies_per_cpu_s=r["rps"] / max(r["client_cpu"], 1e-9))


def emit(**row):
    print(json.dumps(row), flush=True)


def main():
    server = Server(1)
    for rnd in range(1, ROUNDS + 1 if wanted("closed") else 1):
        emit(section="closed P=1", round=rnd, client="lineload",
             **lineload(server.addr, "--conns", "50", "--pipeline", "1", "--size", "64",
                        "--warmup", "1", "--duration", "4", "--threads", "1", *CHECK))
        emit(section="closed P=1", round=rnd, client="tsecho bench",
             **bench(server.addr, "--conns", "50", "--pipeline", "1", "--size", "64",
                     "--warmup", "1s", "--duration", "4s", "--threads", "1"))
    server.stop()
    server = Server(1, listeners=("tcp://127.0.0.1:0", "sockperf+tcp://127.0.0.1:0"))
    for rnd in range(1, ROUNDS + 1 if wanted("open") else 1):
        closed = bench(server.addr, "--conns", "1", "--warmup", "0.5s", "--duration", "4s",
                       "--threads", "1")
        emit(section="open loop", round=rnd, client="closed loop, 1 conn", **closed)
        for rate in ["100", "1000"]:
            emit(section="open loop", round=rnd, client=f"--rate {rate}",
                 **bench(server.addr, "--conns", "1", "--rate", rate, "--warmup", "0.5s",
                         "--duration", "4s", "--threads", "1"))
        for mps in ["max", "100"]:
            emit(section="open loop", round=rnd, client=f"sockperf --mps {mps}",
                 **sockperf(server.addrs[1], mps))
    server.stop()
    server = Server(2, pin=False)
    for rnd in range(1, ROUNDS + 1 if wanted("threads") else 1):
        for threads in ["1", "2"]:
            emit(section="unpinned P=16", round=rnd, client=f"tsecho bench --threads {threads}",
                 **bench(server.addr, "--conns", "50", "--pipeline", "16", "--size", "64",
                         "--warmup", "1s", "--duration", "4s", "--threads", threads, pin=False))
    server.stop()


main()
