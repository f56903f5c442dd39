#!/usr/bin/env bash
# Memory per idle TLS connection: tsecho's tls:// listener, and HAProxy
# terminating TLS (same ECDSA P-256 certificate) in front of plain tsecho.
# Each holds N connections that have each carried one reply; the figure
# is the server's RSS growth divided by N. Loopback only; stops by itself.
#
#   scripts/tls-memory.sh [N] [HAPROXY_N]    (defaults 10000 and 9000:
#   HAProxy needs two descriptors per connection under the 20000 limit)
set -euo pipefail
N=${1:-10000}
HN=${2:-9000}
# shellcheck source=scripts/tls-common.sh
source "$(dirname "$0")/tls-common.sh"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Holds N connections to port $2 while measuring the RSS of pid $1.
measure() {
    local pid=$1 port=$2 n=$3 label=$4 before after
    before=$(rss "$pid")
    mkfifo "$work/hold-$port"
    python3 "$here/scripts/tls-idle-memory.py" 127.0.0.1 "$port" --conns "$n" --hold 600 \
        < "$work/hold-$port" > "$work/held-$port" 2> "$work/err-$port" &
    exec 4>"$work/hold-$port"
    until grep -q open "$work/held-$port" 2>/dev/null; do
        if [ -s "$work/err-$port" ]; then cat "$work/err-$port" >&2; exit 1; fi
        sleep 0.2
    done
    sleep 1
    after=$(rss "$pid")
    exec 4>&-
    echo "{\"server\":\"$label\",\"conns\":$n,\"rss_before_kib\":$before,\"rss_after_kib\":$after,\"kib_per_conn\":$(echo "scale=2; ($after-$before)/$n" | bc)}"
}

p1=24701; p2=24702; p3=24703
"$bin" serve -l "tls://127.0.0.1:$p1" -l "tcp://127.0.0.1:$p2" --threads 1 \
    --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    --max-connections 15000 --max-connections-per-ip 20000 --idle-timeout 3600s --log-level warn &
ts=$!
wait_port $p1
measure $ts $p1 "$N" "tsecho tls://"

cat > "$work/haproxy.cfg" <<CFG
global
  maxconn 9400
defaults
  mode tcp
  timeout connect 2s
  timeout client 10m
  timeout server 10m
frontend fe
  bind 127.0.0.1:$p3 ssl crt $work/combined.pem
  default_backend be
backend be
  server t 127.0.0.1:$p2
CFG
haproxy -db -f "$work/haproxy.cfg" &
hp=$!
wait_port $p3
measure $hp $p3 "$HN" "haproxy ssl"
