#!/usr/bin/env bash
# User-space instructions per reply of the two load generators, tsecho
# bench and the harness's lineload (valgrind's callgrind; the figure host
# noise cannot move). Both load one native tsecho server: 50 connections,
# pipeline 1, 64-byte requests, every reply checked. Each client runs
# twice, for N and for N/16 replies; the difference over the difference
# in replies leaves start-up out.
#
# Usage: scripts/bench-client-instructions.sh BENCH_DIR TSECHO_BIN [N]
set -euo pipefail
bench=$1 bin=$2 n=${3:-64000}
small=$((n / 16))
work=$(mktemp -d)
"$bin" serve --threads 1 -l tcp://127.0.0.1:0 2>"$work/serve.log" &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
until addr=$(grep -o 'listening on tcp://[^ ]*' "$work/serve.log" | sed 's|.*tcp://||'); [ -n "$addr" ]; do
    sleep 0.1
done

instructions() { # NAME REPLIES COMMAND...
    local out="$work/$1.$2"
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1
    grep -E '^summary:' "$out" | awk '{print $2}'
}

per_reply() { # NAME COMMAND-TAKING-REPLIES...
    local name=$1 big little
    shift
    big=$(instructions "$name" "$n" "$@" "$n")
    little=$(instructions "$name" "$small" "$@" "$small")
    echo "$name: $(((big - little) / (n - small))) instructions per reply"
}

per_reply "tsecho bench" "$bin" bench "tcp://$addr" --conns 50 --duration 600s --warmup 0s \
    --threads 1 --json --requests
per_reply lineload "$bench/bin/lineload" tcp "$addr" --conns 50 --pipeline 1 --size 64 \
    --duration 600 --warmup 0 --threads 1 --check --max-requests
