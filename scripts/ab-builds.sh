#!/usr/bin/env bash
# A/B of two tsecho binaries on the plain paths, with the shared harness's
# compare.sh (pinned: server on CPU 0, lineload on CPU 1), in one run:
# TCP 50 connections P=1 and 1 connection (5 rounds each), UDP 8 sockets
# x 16 (5 rounds), and 10,000 idle connections (3 rounds; idle memory per
# connection is (server_rss_max_kib - server_rss_idle_kib) / conns).
#
# Usage: scripts/ab-builds.sh BENCH_DIR NEW_BIN BASE_BIN OUT_PREFIX
set -euo pipefail
bench=$1 new=$2 base=$3 out=$4
ab() { "$bench/compare.sh" --pin --name-a new --name-b base "$@"; }
serve() { echo "$1 serve --threads 1 -l $2"; }
for scenario in "--conns 50" "--conns 1"; do
    # shellcheck disable=SC2086
    ab --rounds 5 --a "$(serve "$new" 'tcp://127.0.0.1:{port}')" \
        --b "$(serve "$base" 'tcp://127.0.0.1:{port}')" \
        -- tcp $scenario --pipeline 1 --size 64 --warmup 1 --duration 4 --check
done > "$out.tcp.jsonl"
ab --rounds 5 --a "$(serve "$new" 'udp://127.0.0.1:{port}')" \
    --b "$(serve "$base" 'udp://127.0.0.1:{port}')" \
    -- udp --socks 8 --window 16 --size 64 --warmup 1 --duration 4 --check > "$out.udp.jsonl"
ab --rounds 3 --a "$(serve "$new" 'tcp://0.0.0.0:{port}')" \
    --b "$(serve "$base" 'tcp://0.0.0.0:{port}')" \
    -- hold --conns 10000 --sources 127.0.0.2-127.0.0.40 --hold 5 --check > "$out.hold.jsonl"
grep -h '^#' "$out".*.jsonl
