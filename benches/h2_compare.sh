#!/usr/bin/env bash
# HTTP/2 downstream (h2c prior knowledge), canary-proxy vs nginx `listen ... http2`:
# h2load with 100 concurrent streams over 10 connections, each proxy on CPU 1, load and
# upstreams on CPU 0, medians over rounds of req/s and proxy CPU µs per request.
#
#   benches/h2_compare.sh [-n REQUESTS] [-r ROUNDS]       (repo root, release build)
#   BIN=target/pgo/bolt/canary-proxy benches/h2_compare.sh   (another build)
# Needs: nginx, h2load (nghttp2-client), taskset.
set -euo pipefail
requests=200000
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    -n) requests=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [-n REQUESTS] [-r ROUNDS]" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
work=/tmp/canary-h2-bench
rm -rf "$work"; mkdir -p "$work" /tmp/canary-bench
bin="${BIN:-$repo/target/release/canary-proxy}"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
leaders=()
cleanup() { for pid in "${leaders[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v g="$1" '{ sub(/^.*\) /, ""); if ($3 == g) t += $12 + $13 } END { print t + 0 }'; }
start() { local cpu=$1; shift; setsid taskset -c "$cpu" "$@" >"$work/last.log" 2>&1 & echo $!; }
hz=$(getconf CLK_TCK)
up=$(start 0 nginx -p /tmp/canary-bench -c "$repo/../shared/bench/peers/upstreams.nginx.conf"); leaders+=("$up")
wait_port 9001
for round in $(seq 1 "$rounds"); do
  for target in nginx canary-proxy; do
    if [ "$target" = nginx ]; then pid=$(start 1 nginx -p "$work" -c "$repo/benches/peers/nginx-h2c.conf")
    else pid=$(start 1 env RUST_LOG=warn "$bin" run -c "$repo/config/bench.toml"); fi
    wait_port 8080
    taskset -c 0 h2load -n 20000 -c 10 -m 10 -H 'x-user-id: warmup' http://127.0.0.1:8080/ >/dev/null 2>&1 || true
    t0=$(ticks "$pid")
    taskset -c 0 h2load -n "$requests" -c 10 -m 10 -H 'x-user-id: user-7' http://127.0.0.1:8080/ >"$work/h2load.txt" 2>&1 || true
    t1=$(ticks "$pid")
    awk -v t=$((t1 - t0)) -v hz="$hz" -v name="$target" '/^finished in/ { rps = $4 }
      /^requests:/ { ok = $8 } /^status codes:/ { bad = $5 + $7 + $9 }
      END { printf "%s %.0f %.1f %d %d\n", name, rps, (ok ? t / hz / ok * 1e6 : -1), ok, bad }' "$work/h2load.txt" >>"$work/results.txt"
    kill -TERM -- "-$pid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$pid" 2>/dev/null || true
  done
done
printf '%-13s %10s %12s %10s %8s\n' target req/s cpu_us/req succeeded non2xx
for target in nginx canary-proxy; do
  grep "^$target " "$work/results.txt" | sort -n -k2 | awk -v n="$rounds" '{ r[NR] = $0 } END { print r[int((NR + 1) / 2)] }' |
    awk '{ printf "%-13s %10s %12s %10s %8s\n", $1, $2, $3, $4, $5 }'
done
echo "(medians by req/s over $rounds rounds of $requests requests; h2load -c 10 -m 10, h2c prior knowledge)"
