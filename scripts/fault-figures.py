#!/usr/bin/env python3
"""The figures of fault injection (issue 14), measured by the client's clock.

    scripts/fault-figures.sh [ROUNDS]     # builds, pins, runs this

Each section starts its own `tsecho serve` (release build) on free loopback
ports, measures, and stops it. Output: one JSON object per line, so every
round is kept; docs/benchmarks.md quotes them.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

BIN = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PIN_SERVER = ["taskset", "-c", "0"] if os.cpu_count() >= 2 else []
PIN_LOAD = ["taskset", "-c", "1"] if os.cpu_count() >= 2 else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tsecho serve --listen URL`, up once it logs its listener."""

    def __init__(self, *urls):
        self.proc = subprocess.Popen(
            PIN_SERVER + [BIN, "serve"] + [a for u in urls for a in ("--listen", u)],
            stderr=subprocess.PIPE, text=True)
        self.ports = []
        while len(self.ports) < len(urls):
            line = self.proc.stderr.readline()
            if not line:
                raise SystemExit("server exited")
            m = re.search(r"listening on \S+://[^ ]*:(\d+)", line)
            if m:
                self.ports.append(int(m.group(1)))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def emit(**fields):
    print(json.dumps(fields), flush=True)


def bench(port, *args):
    out = subprocess.run(
        PIN_LOAD + [BIN, "bench", f"tcp://127.0.0.1:{port}", "--json", *args],
        capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def delay_accuracy(rnd):
    """delay=10ms, 50 TCP connections, 20,000 requests: p50 and p99."""
    server = Server("tcp://127.0.0.1:0?delay=10ms")
    r = bench(server.ports[0], "--conns", "50", "--requests", "20000", "--warmup", "0.5",
              "--duration", "30")
    server.stop()
    emit(test="delay=10ms", round=rnd, replies=r["replies"], p50_ms=r["p50_us"] / 1000,
         p99_ms=r["p99_us"] / 1000, max_ms=r["max_us"] / 1000)


def jitter_accuracy(rnd):
    """delay=20ms&jitter=5ms: every latency and the mean, 20 x 250 sequential requests."""
    server = Server("tcp://127.0.0.1:0?delay=20ms&jitter=5ms")
    port = server.ports[0]
    samples = []
    lock = threading.Lock()

    def client():
        conn = socket.create_connection(("127.0.0.1", port))
        reader = conn.makefile("rb")
        mine = []
        for i in range(250):
            t = time.perf_counter()
            conn.sendall(b"j%d\n" % i)
            reader.readline()
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    server.stop()
    emit(test="delay=20ms&jitter=5ms", round=rnd, samples=len(samples),
         min_ms=min(samples), max_ms=max(samples), mean_ms=statistics.mean(samples),
         outside_15_26=sum(1 for s in samples if not 15 <= s <= 26))


def udp_rates(rnd):
    """drop=5% and duplicate=2% over 100,000 datagrams from loopback (exempt)."""
    server = Server(f"udp://127.0.0.1:0?drop=5%&duplicate=2%")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", server.ports[0]))
    seen = {}

    def receive(wait, until=None):
        sock.settimeout(wait)
        try:
            while True:
                data = sock.recv(128)
                n = int(data[data.index(b"] ") + 2:])
                seen[n] = seen.get(n, 0) + 1
                if n == until:
                    return
        except socket.timeout:
            pass

    total = 100_000
    for start in range(0, total, 200):
        for n in range(start, start + 200):
            sock.send(b"%d" % n)
        receive(0.02, start + 199)
    receive(0.3)
    server.stop()
    emit(test="drop=5%&duplicate=2%", round=rnd, datagrams=total,
         loss_pct=100 * (total - len(seen)) / total,
         duplicate_pct=100 * sum(1 for c in seen.values() if c == 2) / total)


def stream_faults(rnd):
    """reset=100%, close-after=3, and 200 KiB of replies at bandwidth=50KiB."""
    server = Server("tcp://127.0.0.1:0?reset=100%", "tcp://127.0.0.1:0?close-after=3",
                    "tcp://127.0.0.1:0?bandwidth=50KiB")
    reset, close_after, bandwidth = server.ports
    conn = socket.create_connection(("127.0.0.1", reset))
    conn.sendall(b"x\n")
    try:
        conn.recv(100)
        first_read = "data or EOF"
    except ConnectionResetError:
        first_read = "ECONNRESET"
    conn = socket.create_connection(("127.0.0.1", close_after))
    conn.sendall(b"1\n2\n3\n4\n5\n")
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    # Replies of 26 + 1 + 75 bytes: 2,008 lines make 200 KiB.
    conn = socket.create_connection(("127.0.0.1", bandwidth))
    line = b"x" * 75 + b"\n"
    start = time.perf_counter()
    threading.Thread(target=lambda: (conn.sendall(line * 2008), conn.shutdown(socket.SHUT_WR))).start()
    received = 0
    while chunk := conn.recv(65536):
        received += len(chunk)
    took = time.perf_counter() - start
    server.stop()
    emit(test="reset/close-after/bandwidth", round=rnd, reset_first_read=first_read,
         close_after_3_replies=got.count(b"\n"), bandwidth_bytes=received,
         bandwidth_secs=took, expected_secs=received / (50 * 1024))


def cpu_per_reply(rnd):
    """Server CPU per reply: delay=10ms against no delay, 50 conns, pipeline 1,
    the undelayed run both closed-loop and at the delayed run's rate."""
    server = Server("tcp://127.0.0.1:0?delay=10ms", "tcp://127.0.0.1:0")
    delayed, plain = server.ports
    figures = {}
    for name, port, extra in [("delayed", delayed, []), ("plain_same_rate", plain, None),
                              ("plain_closed_loop", plain, [])]:
        if extra is None:
            extra = ["--rate", str(int(figures["delayed"]["rps"]))]
        bench(port, "--conns", "50", "--duration", "1", "--warmup", "0")
        cpu = server.cpu_seconds()
        r = bench(port, "--conns", "50", "--duration", "5", "--warmup", "0", *extra)
        used = server.cpu_seconds() - cpu
        figures[name] = {"rps": r["rps"], "us_per_reply": 1e6 * used / r["replies"]}
    server.stop()
    emit(test="cpu per reply", round=rnd, **figures,
         ratio_same_rate=figures["delayed"]["us_per_reply"] / figures["plain_same_rate"]["us_per_reply"],
         ratio_closed_loop=figures["delayed"]["us_per_reply"] / figures["plain_closed_loop"]["us_per_reply"])


def memory_under_pipelining(rnd):
    """1,000 clients writing lines without pause (never reading) into delay=1s."""
    server = Server("tcp://127.0.0.1:0?delay=1s")
    before = server.rss_kib()
    conns = [socket.create_connection(("127.0.0.1", server.ports[0])) for _ in range(1000)]
    for c in conns:
        c.setblocking(False)
    chunk = b"pipelined line of forty bytes or so..\n" * 400
    written = 0
    end = time.time() + 8
    while time.time() < end:
        progress = 0
        for c in conns:
            try:
                progress += c.send(chunk)
            except BlockingIOError:
                pass
        written += progress
        if not progress:
            time.sleep(0.05)
    after = server.rss_kib()
    for c in conns:
        c.close()
    server.stop()
    emit(test="1000 clients pipelining into delay=1s", round=rnd, rss_before_mib=before / 1024,
         rss_after_mib=after / 1024, growth_mib=(after - before) / 1024,
         client_bytes_written_mib=written / 2**20)


for rnd in range(1, ROUNDS + 1):
    delay_accuracy(rnd)
    jitter_accuracy(rnd)
    udp_rates(rnd)
    stream_faults(rnd)
    cpu_per_reply(rnd)
    memory_under_pipelining(rnd)
