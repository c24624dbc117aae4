#!/usr/bin/env bash
# CPU per request of several builds, A/B/A/B: each build serves the same fixed number
# of keep-alive requests in turn (h2load --h1, 64 connections, sticky x-user-id) from
# the nginx upstreams of ../shared/bench, and its user and system CPU seconds (from
# /usr/bin/time) are divided by the requests. Rounds interleave the builds, so drift
# on a noisy machine hits them alike; compare.sh's throughput-driven figure moved
# ±10 % between runs where this one moves ±5 %.
#
#   benches/cpu_ab.sh [-n REQUESTS] [-r ROUNDS] NAME=BINARY...
#   e.g. benches/cpu_ab.sh before=/tmp/before/canary-proxy after=target/release/canary-proxy
#   NAME=nginx runs nginx with ../shared/bench/peers/nginx.conf (one worker) instead.
#
# Besides user and system CPU it prints, per 1 000 requests, the minor page faults and
# the voluntary and involuntary context switches (/usr/bin/time %R %w %c): system time
# that is not a syscall the proxy asked for.
#
# The proxy runs pinned to CPU 1 (one worker: the runtime sizes itself from the
# affinity mask), the load and the upstreams to CPU 0, with config/bench.toml.
# Needs: nginx, h2load (nghttp2-client), taskset, /usr/bin/time.
set -euo pipefail
requests=200000
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    -n) requests=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [-n REQUESTS] [-r ROUNDS] NAME=BINARY..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
work=/tmp/canary-cpu-ab
mkdir -p "$work" /tmp/canary-bench
for tool in nginx h2load taskset /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
# The upstreams share CPU 0 with the load: CPU 1 is the measured proxy's alone (left
# to float, they preempted it: up to 75 involuntary switches per 1 000 requests).
taskset -c 0 nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf" >/dev/null 2>&1 &
up=$!
proxy=""
trap 'kill $up 2>/dev/null || true; [ -n "$proxy" ] && pkill -P "$proxy" 2>/dev/null || true' EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port 9001
for round in $(seq 1 "$rounds"); do
  for pair in "$@"; do
    name=${pair%%=*} bin=${pair#*=}
    if [ "$bin" = nginx ]; then cmd=(nginx -p /tmp/canary-bench -c "$peers/nginx.conf")
    else cmd=("$bin" run -c "$repo/config/bench.toml"); fi
    RUST_LOG=warn taskset -c 1 /usr/bin/time -f "%U %S %R %w %c" -o "$work/$name.$round" \
      "${cmd[@]}" >"$work/$name.log" 2>&1 &
    proxy=$!
    wait_port 8080
    taskset -c 0 h2load --h1 -n "$requests" -c 64 -H 'x-user-id: user-42' http://127.0.0.1:8080/ \
      >"$work/$name.h2load.$round"
    grep -q "$requests succeeded, 0 failed" "$work/$name.h2load.$round" \
      || { echo "$name: not every request succeeded" >&2; cat "$work/$name.h2load.$round" >&2; exit 1; }
    # /usr/bin/time ignores SIGINT while its child runs: signal the proxy itself.
    pkill -INT -P "$proxy"; wait "$proxy" || true; proxy=""
    awk -v n="$requests" -v name="$name" -v r="$round" '{ printf "round %d  %-10s user %5.2f  sys %5.2f  total %5.2f µs/request; per 1000: faults %.1f  voluntary %.1f  involuntary %.1f\n", r, name, $1 * 1e6 / n, $2 * 1e6 / n, ($1 + $2) * 1e6 / n, $3 * 1e3 / n, $4 * 1e3 / n, $5 * 1e3 / n }' "$work/$name.$round"
  done
done
echo "medians:"
for pair in "$@"; do
  name=${pair%%=*}
  cat "$work/$name".[0-9]* | awk -v n="$requests" '{ print $1 * 1e6 / n, $2 * 1e6 / n }' | sort -n -k1 \
    | awk -v name="$name" '{ u[NR] = $1; s[NR] = $2 } END { m = int((NR + 1) / 2); printf "  %-10s user %5.2f  (sys of that round %5.2f) µs/request\n", name, u[m], s[m] }'
done
