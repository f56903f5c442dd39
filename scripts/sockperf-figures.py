#!/usr/bin/env python3
"""tsecho's sockperf reflector against `sockperf server`, same run.

    scripts/sockperf-figures.py TSECHO_BIN [ROUNDS]

Each round, for UDP and TCP, starts each server in turn on CPU 0 and runs
on CPU 1: `sockperf ping-pong` (64-byte messages, 5 s) for p50 and p99,
then `sockperf under-load --mps max --reply-every 1` (5 s) for replies/s.
One JSON line per run; the ratios tsecho/sockperf per round at the end.
"""
import json
import re
import socket
import subprocess
import sys
import time

BIN = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PIN_SERVER = ["taskset", "-c", "0"]
PIN_LOAD = ["taskset", "-c", "1"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, proto, port):
    if name == "tsecho":
        cmd = [BIN, "serve", "--threads", "1", "-l", f"sockperf+{proto}://127.0.0.1:{port}"]
    else:
        cmd = ["sockperf", "server", "-i", "127.0.0.1", "-p", str(port)]
        cmd += ["--tcp"] if proto == "tcp" else []
    proc = subprocess.Popen(PIN_SERVER + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Up when a ping-pong of a few messages gets its replies.
    for _ in range(100):
        if "ReceivedMessages" in client(proto, port, "ping-pong", "-t", "1")[0]:
            return proc
        time.sleep(0.1)
    raise SystemExit(f"{name} over {proto} did not answer")


def client(proto, port, mode, *args):
    cmd = PIN_LOAD + ["sockperf", mode, "-i", "127.0.0.1", "-p", str(port), *args]
    cmd += ["--tcp"] if proto == "tcp" else []
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr, out.returncode


def field(text, pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def measure(name, proto, rnd):
    port = free_port()
    proc = start(name, proto, port)
    try:
        pp, _ = client(proto, port, "ping-pong", "-t", "5", "--msg-size", "64")
        ul, _ = client(proto, port, "under-load", "-t", "5", "--msg-size", "64",
                       "--mps", "max", "--reply-every", "1")
    finally:
        proc.terminate()
        proc.wait()
    valid = r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)"
    m = re.search(valid, ul)
    row = dict(server=name, proto=proto, round=rnd,
               p50_us=field(pp, r"percentile 50\.000 =\s*([\d.]+)"),
               p99_us=field(pp, r"percentile 99\.000 =\s*([\d.]+)"),
               pingpong_dropped=field(pp, r"dropped messages = (\d+)"),
               underload_sent_per_s=int(m.group(2)) / float(m.group(1)) if m else None,
               underload_replies_per_s=int(m.group(3)) / float(m.group(1)) if m else None)
    print(json.dumps(row), flush=True)
    return row


def main():
    ratios = []
    for rnd in range(1, ROUNDS + 1):
        for proto in ["udp", "tcp"]:
            t = measure("tsecho", proto, rnd)
            s = measure("sockperf", proto, rnd)
            ratios.append(dict(
                round=rnd, proto=proto,
                p50_ratio=t["p50_us"] / s["p50_us"],
                p99_ratio=t["p99_us"] / s["p99_us"],
                replies_ratio=t["underload_replies_per_s"] / s["underload_replies_per_s"]))
            print(json.dumps(dict(summary="tsecho/sockperf", **ratios[-1])), flush=True)


main()
