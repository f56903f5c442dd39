#!/usr/bin/env bash
# Counts a server's system calls, context switches and CPU time per reply
# under one lineload run (perf stat with syscall tracepoints), to see where
# a server spends what the A/B ratios only summarise.
#
#   scripts/syscalls-per-reply.sh HARNESS_DIR 'SERVER CMD {port}' KIND LINELOAD-ARGS...
#
# KIND is tcp, udp or unix (how to probe the server). SERVER_CPUS and
# LOAD_CPUS (taskset lists, default 0 and 1) say where each side runs.
# Example:
#   scripts/syscalls-per-reply.sh ../shared/bench 'target/release/tsecho serve -l udp://127.0.0.1:{port}' \
#       udp udp --socks 8 --window 16 --size 64 --warmup 1 --duration 4
# Counts cover the whole server run (warmup included) and are divided by
# rps x (warmup + duration); treat them as estimates.
set -euo pipefail
harness=${1:?usage: syscalls-per-reply.sh HARNESS_DIR 'SERVER CMD {port}' KIND MODE ARGS...}
cmd=${2:?server command}; kind=${3:?tcp|udp|unix}; shift 3
bin="$harness/bin"
port=$("$bin/lineload" freeport | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
server=${cmd//\{port\}/$port}
stat=$(mktemp)
trap 'rm -f "$stat"' EXIT
events=task-clock,context-switches,cpu-migrations
for call in read write recvfrom sendto recvmsg sendmsg recvmmsg sendmmsg epoll_wait futex io_uring_enter; do
    events+=",syscalls:sys_enter_$call"
done
# shellcheck disable=SC2086 # the server command is meant to split into words
taskset -c "${SERVER_CPUS:-0}" perf stat -x, -e "$events" -o "$stat" $server >/dev/null 2>&1 &
perf_pid=$!
"$bin/lineload" probe "$kind" "127.0.0.1:$port" >/dev/null
mode=$1; shift
result=$(taskset -c "${LOAD_CPUS:-1}" "$bin/lineload" "$mode" "127.0.0.1:$port" "$@")
pkill -INT -f -- "$server" || true
wait "$perf_pid" || true
python3 - "$result" "$stat" <<'PY'
import json, sys
run = json.loads(sys.argv[1])
replies = run["rps"] * (run["secs"] + run["warmup"])
print(f'rps {run["rps"]:.0f}  p99 {run["p99_us"]} us  client_cpu {run["client_cpu"]}  lost {run.get("lost", 0)}')
for line in open(sys.argv[2]):
    fields = line.strip().split(",")
    if len(fields) < 3 or not fields[0].replace(".", "").isdigit():
        continue
    count, name = float(fields[0]), fields[2].split(":")[-1]
    if name == "task-clock":  # perf reports milliseconds
        print(f"  {'CPU time':28} {count * 1000 / replies:10.3f} us per reply")
    elif count / replies >= 0.0001:
        print(f"  {name:28} {count / replies:10.4f} per reply")
PY
