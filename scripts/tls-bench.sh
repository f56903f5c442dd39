#!/usr/bin/env bash
# TLS figures for docs/benchmarks.md, each against a baseline in the same
# run (this machine is shared and noisy: compare ratios, not absolutes).
#
#  1. Handshakes per second, `openssl s_time -new` against tsecho's tls://
#     and against HAProxy terminating TLS, the same ECDSA P-256
#     certificate, each server pinned to CPU 0 and s_time to CPU 1.
#  2. Stamp over TLS, 50 connections, pipeline 1, `tsecho bench` on CPU 1:
#     tsecho tcp://, tsecho tls://, and HAProxy terminating TLS in front
#     of tsecho tcp:// (both on CPU 0). Replies/s and server CPU per reply.
#
#   scripts/tls-bench.sh [ROUNDS] [SECONDS]      (defaults 3 and 5)
# Loopback only; every run is bounded in time.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
# shellcheck source=scripts/tls-common.sh
source "$(dirname "$0")/tls-common.sh"
tick=$(getconf CLK_TCK)

# CPU time (user + system, in ticks) of the given pids.
cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

start_tsecho() {  # tsecho serving tcp:// on $1 and tls:// on $2, on CPU 0
    taskset -c 0 "$bin" serve -l "tcp://127.0.0.1:$1" -l "tls://127.0.0.1:$2" --threads 1 \
        --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --log-level warn \
        --max-connections-per-ip 20000 &
    wait_port "$1"; wait_port "$2"
}

start_haproxy() {  # HAProxy terminating TLS on $1 in front of plain $2, on CPU 0
    cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 5000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1m
  timeout server 1m
frontend fe
  bind 127.0.0.1:$1 ssl crt $work/combined.pem
  default_backend be
backend be
  server t 127.0.0.1:$2
CFG
    taskset -c 0 haproxy -db -f "$work/haproxy.cfg" &
    wait_port "$1"
}

s_time() {  # handshakes per second against port $1, by the wall clock
    local start end n
    start=$(date +%s.%N)
    n=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$1" -new -time "$SECS" 2>/dev/null \
        | awk '/connections in .* real seconds/ {print $1}' | tail -1)
    end=$(date +%s.%N)
    echo "scale=1; $n / ($end - $start)" | bc
}

bench() {  # tsecho bench on CPU 1 against URL $1; pids $2.. are the server side
    local url=$1; shift
    local before after out
    before=$(cpu "$@")
    out=$(taskset -c 1 "$bin" bench "$url" --insecure --threads 1 --conns 50 --pipeline 1 \
        --duration "${SECS}s" --warmup 1s --json 2>/dev/null)
    after=$(cpu "$@")
    python3 - "$out" "$((after - before))" "$tick" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
# Server CPU over the whole bench (warm-up included) per measured reply is
# biased up by the warm-up's share; the same bias for every server.
cpu_us = ticks / hz * 1e6 / max(r["replies"] * (r["secs"] + r["warmup"]) / r["secs"], 1)
print(json.dumps({"rps": round(r["rps"]), "p99_us": r["p99_us"], "cpu_us_per_reply": round(cpu_us, 2), "errors": r["errors"], "mismatches": r["mismatches"]}))
PY
}

tcp=24801; tls=24802; hp=24803
for round in $(seq "$ROUNDS"); do
    start_tsecho $tcp $tls; ts=$!
    start_haproxy $hp $tcp; hx=$!
    a=$(s_time $tls); b=$(s_time $hp)
    echo "{\"round\":$round,\"test\":\"handshakes\",\"tsecho\":$a,\"haproxy\":$b,\"ratio\":$(echo "scale=3; $a/$b" | bc | sed "s/^\\./0./")}"
    p=$(bench "tcp://127.0.0.1:$tcp" $ts)
    t=$(bench "tls://127.0.0.1:$tls" $ts)
    h=$(bench "tls://127.0.0.1:$hp" $ts $hx)
    echo "{\"round\":$round,\"test\":\"stamp 50x1\",\"tcp\":$p,\"tls\":$t,\"haproxy_tls\":$h}"
    kill $hx $ts; wait $hx $ts 2>/dev/null || true
done
