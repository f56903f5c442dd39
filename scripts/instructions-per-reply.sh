#!/usr/bin/env bash
# Instructions the server runs for a fixed number of stamp replies
# (valgrind's callgrind), the figure host noise cannot move: 50
# connections, pipeline 1 (PIPELINE=16 for another), 64-byte lines, 30,000
# requests by default. SERVE_ARGS adds flags to the server (say --stamp-clock user).
#
# Usage: scripts/instructions-per-reply.sh BENCH_DIR TSECHO_BIN [REQUESTS]
set -euo pipefail
bench=$1 bin=$2 n=${3:-30000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
valgrind --tool=callgrind --callgrind-out-file="$work/out" \
    "$bin" serve --threads 1 ${SERVE_ARGS:-} -l "tcp://127.0.0.1:$port" 2>/dev/null &
pid=$!
for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"$bench/bin/lineload" tcp "127.0.0.1:$port" --conns 50 --pipeline "${PIPELINE:-1}" --size 64 \
    --duration 60 --max-requests "$n" --check > "$work/load.json"
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
echo "$(grep -E '^(summary|totals):' "$work/out" | head -1 | awk '{print $2}') instructions for $n requests"
