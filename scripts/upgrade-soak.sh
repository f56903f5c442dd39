#!/usr/bin/env bash
# Soak: many takeovers in a row under load, apart from `cargo test`.
# Each round a new `tsecho serve --takeover` takes every socket over while
# new TCP connections (~500/s, one line each) and 4 UDP sockets (~5,000
# datagrams/s in all) keep coming; every line and datagram must be
# answered, no connect refused, and each old process must exit 0 within
# its drain timeout. Usage: scripts/upgrade-soak.sh [ROUNDS] (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-50}
TSECHO_UPGRADE_ROUNDS=$rounds cargo test --release --test zero_downtime \
    five_upgrades_under_load_lose_nothing -- --nocapture 2>&1 |
    grep -E "sent|test result|panicked|left|right"
