#!/usr/bin/env bash
# Runs tsecho against the reference servers of the shared bench harness
# (C epoll echo, C io_uring echo, C recvmmsg/sendmmsg UDP echo, tokio echo) with its
# compare.sh, scenario by scenario, and writes the JSON lines to OUT.
#
#   scripts/compare-references.sh HARNESS_DIR [OUT] [ROUNDS]
#
# HARNESS_DIR is the bench harness (with bin/ built by its build.sh). Each
# scenario is A = tsecho, B = the reference, in the same run, so the ratios
# survive a noisy machine; read the medians on the '#' lines.
#
# TSECHO_ARGS adds flags to tsecho's command line (say `--io epoll`);
# ONLY, a regular expression, keeps the runs whose "reference args" match
# it (say ONLY='epoll-echo tcp --conns 50 ').
set -euo pipefail
harness=${1:?usage: compare-references.sh HARNESS_DIR [OUT] [ROUNDS]}
out=$(realpath -m "${2:-target/compare-$(date +%Y-%m-%d).jsonl}") # before the cd below
rounds=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$here/Cargo.toml" >&2
tsecho="$here/target/release/tsecho serve --format ctime ${TSECHO_ARGS:-}"
cd "$harness"
: >"$out.tmp"
run() { # name-b cmd-b pin(yes|no) lineload-args...
    local name=$1 cmd=$2 pin=$3; shift 3
    [[ "$name $*" =~ ${ONLY:-.} ]] || return 0
    local pinflag=(); [ "$pin" = yes ] && pinflag=(--pin)
    echo "== $* vs $name" >&2
    ./compare.sh --rounds "$rounds" "${pinflag[@]}" --name-a tsecho --name-b "$name" \
        --a "$tsecho -l tcp://127.0.0.1:{port} -l udp://127.0.0.1:{port}" --b "$cmd" -- "$@" \
        | tee -a "$out.tmp" | grep '^#' >&2 || true
}
common=(--warmup 1 --duration 4 --check)
tcp_scenarios=(
    "--conns 50 --pipeline 1 --size 64"
    "--conns 50 --pipeline 16 --size 64"
    "--conns 1000 --pipeline 1 --size 64"
    "--conns 1 --pipeline 1 --size 64"
    "--conns 10 --pipeline 1 --size 4096"
)
# Each TCP scenario against both C servers, one after the other, so the
# table can show uring-echo as a column beside epoll-echo.
for scenario in "${tcp_scenarios[@]}"; do
    # shellcheck disable=SC2086 # a scenario is meant to split into words
    run epoll-echo 'bin/epoll-echo {port}' yes tcp $scenario "${common[@]}"
    # shellcheck disable=SC2086
    run uring-echo 'bin/uring-echo {port}' yes tcp $scenario "${common[@]}"
done
run udp-echo 'bin/udp-echo {port}' yes udp --socks 8 --window 16 --size 64 "${common[@]}"
run epoll-echo 'bin/epoll-echo {port}' yes hold --conns 10000 --sources 127.0.0.2-127.0.0.40 --hold 5 --check
run tokio-echo 'bin/tokio-echo {port}' no tcp --conns 1000 --pipeline 1 --size 64 "${common[@]}"
# Not a target: UDP with the server free to use both CPUs (one socket per thread).
run udp-echo 'bin/udp-echo {port}' no udp --socks 8 --window 16 --size 64 "${common[@]}"
mv "$out.tmp" "$out"
echo "wrote $out" >&2
