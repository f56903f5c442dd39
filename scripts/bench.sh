#!/usr/bin/env bash
# Starts `tsecho serve` (release build) on free loopback ports and drives it
# with `tsecho bench` through the standard scenarios, one JSON line each.
#
#   scripts/bench.sh [SECONDS]        # default 5 s per scenario
#
# With taskset available the server runs on CPU 0 and the load on CPU 1,
# like the reference comparisons (scripts/compare-references.sh).
set -euo pipefail
secs=${1:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$here/Cargo.toml" >&2
bin="$here/target/release/tsecho"
pin_server=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_server=(taskset -c 0) pin_load=(taskset -c 1)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sock=$(mktemp -u /tmp/tsecho-bench.XXXXXX.sock)
log=$(mktemp)
"${pin_server[@]}" "$bin" serve -l "tcp://127.0.0.1:$port" -l "udp://127.0.0.1:$port" -l "unix://$sock" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
# The server logs one line per listener once it is bound.
while [ "$(grep -c 'listening on' "$log")" -lt 3 ]; do
    kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
done
scenario() {
    "${pin_load[@]}" "$bin" bench "$@" --duration "$secs" --warmup 1 --json
}
scenario "tcp://127.0.0.1:$port" --conns 50 --pipeline 1 --size 64
scenario "tcp://127.0.0.1:$port" --conns 50 --pipeline 16 --size 64
scenario "tcp://127.0.0.1:$port" --conns 1000 --pipeline 1 --size 64
scenario "tcp://127.0.0.1:$port" --conns 1 --pipeline 1 --size 64
scenario "tcp://127.0.0.1:$port" --conns 10 --pipeline 1 --size 4096
scenario "udp://127.0.0.1:$port" --conns 8 --pipeline 16 --size 64
scenario "unix://$sock" --conns 50 --pipeline 16 --size 64
scenario "tcp://127.0.0.1:$port" --conns 50 --pipeline 1 --size 64 --rate 20000
