#!/usr/bin/env bash
# Issue 13's figures, every round kept as JSON lines:
#  1. the kernel clock's cost: tsecho --stamp-clock kernel against
#     --stamp-clock user, UDP datagrams/s and TCP server CPU per reply,
#     through the shared harness's compare.sh (pinned, A/B per round);
#  2. tsecho's sockperf reflector against `sockperf server`: sockperf
#     ping-pong p50/p99 and under-load replies/s, UDP and TCP, pinned,
#     the two servers alternating within each round.
#
#   scripts/measurement-figures.sh BENCH_DIR [ROUNDS]   # default 3
#
# BENCH_DIR is a built copy of ../shared/bench (its bin/ has lineload).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:?usage: $0 BENCH_DIR [ROUNDS]}
rounds=${2:-3}
cargo build --release --manifest-path "$here/Cargo.toml" >&2
bin="$here/target/release/tsecho"
serve="$bin serve --threads 1 --format unix-us"

for proto in udp tcp; do
    case $proto in
        udp) load=(udp --socks 8 --window 16 --size 64 --warmup 1 --duration 4 --check)
             url='udp://127.0.0.1:{port}' ;;
        tcp) load=(tcp --conns 50 --pipeline 1 --size 64 --warmup 1 --duration 4 --check)
             url='tcp://127.0.0.1:{port}' ;;
    esac
    "$bench/compare.sh" --rounds "$rounds" --pin \
        --name-a kernel --a "$serve --stamp-clock kernel -l $url" \
        --name-b user --b "$serve --stamp-clock user -l $url" \
        -- "${load[@]}"
done

exec python3 "$here/scripts/sockperf-figures.py" "$bin" "$rounds"
