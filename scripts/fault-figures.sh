#!/usr/bin/env bash
# Fault injection's figures (issue 14), every round kept, one JSON line
# each: accuracy of delay and jitter, UDP loss and duplicate rates, reset,
# close-after and bandwidth, server CPU per reply with delay=10ms against
# the undelayed path, memory with 1,000 clients pipelining into delay=1s.
#
#   scripts/fault-figures.sh [ROUNDS]     # default 3
#
# The server runs on CPU 0 and `tsecho bench` on CPU 1 (taskset), as the
# other comparisons here do.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$here/Cargo.toml" >&2
exec python3 "$here/scripts/fault-figures.py" "$here/target/release/tsecho" "${1:-3}"
