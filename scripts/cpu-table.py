#!/usr/bin/env python3
"""Server CPU per reply, requests/s and p99 against each reference, from
the JSON lines scripts/compare-references.sh writes: one markdown row per
scenario and reference, every round's CPU ratio beside the median.

    scripts/cpu-table.py RUN.jsonl [LABEL] [RUN.jsonl [LABEL] ...]

compare.sh's own summary gives the medians of requests/s and p99; the
CPU ratio per round is worked out here from each pair of runs (A then B
in the same round), since a median alone hides how far rounds swing.
"""
import json
import statistics
import sys


def scenarios(path):
    """Yields (scenario, reference, summary, cpu ratios per round)."""
    runs = []
    for line in open(path):
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if not row.get("summary"):
            runs.append(row)
            continue
        a = [r for r in runs if r["side"] == "A"]
        b = [r for r in runs if r["side"] == "B"]
        cpu = [
            x["server_us_per_reply"] / y["server_us_per_reply"]
            for x, y in zip(a, b)
            if x.get("server_us_per_reply") and y.get("server_us_per_reply")
        ]
        first = a[0] if a else {}
        yield describe(first), row, cpu, a
        runs = []


def describe(run):
    mode = run.get("mode", "?")
    if mode == "tcp":
        return f"tcp {run['conns']} conns, P={run['pipeline']}, {run['size']} B"
    if mode == "udp":
        return f"udp {run['socks']} socks x {run['window']}, {run['size']} B"
    if mode == "hold":
        return f"hold {run.get('conns', '?')} idle"
    return mode


def cell(values, digits=2):
    return " ".join(f"{v:.{digits}f}" for v in values)


def main(argv):
    pairs = [(argv[i], argv[i + 1] if i + 1 < len(argv) else "") for i in range(0, len(argv), 2)]
    print("| run | scenario | vs | CPU/reply median (rounds) | rps median | p99 median (rounds) |")
    print("|---|---|---|---|---|---|")
    for path, label in pairs:
        for scenario, summary, cpu, a in scenarios(path):
            median = f"**{statistics.median(cpu):.2f}** ({cell(cpu)})" if cpu else "-"
            if scenario.startswith("hold"):
                # Memory per held connection: the peak over the server's
                # resident size before the load, as in docs/benchmarks.md.
                kib = [
                    ((r.get("server_rss_max_kib") or 0) - (r.get("server_rss_idle_kib") or 0))
                    / max(r.get("held") or 1, 1)
                    for r in a
                ]
                overflows = [r.get("listen_overflows") for r in a]
                median = f"{statistics.median(kib):.2f} KiB/conn ({cell(kib)}); overflows {overflows}"
            print(
                f"| {label} | {scenario} | {summary['b']} | {median} "
                f"| {summary['rps_ratio_median']} | {summary['p99_ratio_median']} "
                f"({cell(summary['p99_ratios'])}) |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
