#!/usr/bin/env bash
# Splits a server's CPU per reply into user and kernel time (utime and
# stime from /proc, in clock ticks, over one lineload run), servers taken in
# turn for ROUNDS rounds, so that a noisy machine moves them alike. It
# shows whether a gap between two servers is their own code (user) or the
# system calls and network stack they drive (kernel).
#
#   scripts/user-sys-per-reply.sh HARNESS_DIR ROUNDS 'CMD {port}' ['CMD {port}' ...] -- LINELOAD-TCP-ARGS...
#
# Example:
#   scripts/user-sys-per-reply.sh ../shared/bench 5 \
#       'target/release/tsecho serve --format ctime -l tcp://127.0.0.1:{port}' \
#       '../shared/bench/bin/epoll-echo {port}' -- --conns 50 --pipeline 1 --size 64
# Server on CPU 0, lineload on CPU 1. Ticks are 10 ms: a 4 s run at
# 100,000 replies/s resolves about 0.025 us per reply.
set -euo pipefail
harness=${1:?usage: user-sys-per-reply.sh HARNESS_DIR ROUNDS CMD... -- ARGS...}
rounds=${2:?rounds}
shift 2
servers=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do servers+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
bin="$harness/bin"
for round in $(seq "$rounds"); do
    for cmd in "${servers[@]}"; do
        port=$("$bin/lineload" freeport | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
        # shellcheck disable=SC2086 # the server command is meant to split into words
        taskset -c 0 ${cmd//\{port\}/$port} >/dev/null 2>&1 &
        pid=$!
        "$bin/lineload" probe tcp "127.0.0.1:$port" >/dev/null
        before=$(awk '{print $14, $15}' "/proc/$pid/stat")
        result=$(taskset -c 1 "$bin/lineload" tcp "127.0.0.1:$port" "$@" --duration 4 --check)
        after=$(awk '{print $14, $15}' "/proc/$pid/stat")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 - "$round" "$cmd" "$result" $before $after "$(getconf CLK_TCK)" <<'PY'
import json, sys
round_, cmd, result = sys.argv[1:4]
u0, s0, u1, s1, tck = map(int, sys.argv[4:9])
run = json.loads(result)
replies = run["rps"] * run["secs"]
us = 1e6 / tck / replies
user, kernel = (u1 - u0) * us, (s1 - s0) * us
print(f"round {round_}  user {user:.3f}  kernel {kernel:.3f}  total {user + kernel:.3f} us/reply"
      f"  rps {run['rps']:.0f}  {cmd.split()[0].rsplit('/', 1)[-1]} {' '.join(cmd.split()[1:])}")
PY
    done
done
