#!/usr/bin/env bash
# Syscalls per proxied request, by name: `strace -c -f` attached to the proxy while it
# serves a fixed number of keep-alive requests (h2load --h1, 8 connections, sticky
# x-user-id) from the nginx upstreams of ../shared/bench, after a warm-up that fills
# the upstream pool. Each TARGET is a canary-proxy binary (run with config/bench.toml)
# or `nginx` (../shared/bench/peers/nginx.conf; its worker is traced).
#
#   benches/syscalls.sh [-n REQUESTS] TARGET...
#   e.g. benches/syscalls.sh nginx target/pgo/release/canary-proxy
#
# Proxy on CPU 1, load on CPU 0. Needs: strace, nginx, h2load, taskset.
set -euo pipefail
n=20000
[ "${1:-}" = -n ] && { n=$2; shift 2; }
[ $# -gt 0 ] || { echo "usage: $0 [-n REQUESTS] TARGET..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
work=/tmp/canary-syscalls
mkdir -p "$work" /tmp/canary-bench
for tool in strace nginx h2load taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done
nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf" >/dev/null 2>&1 &
up=$!
proxy=""
trap 'kill $up 2>/dev/null || true; [ -n "$proxy" ] && kill -INT "$proxy" 2>/dev/null || true' EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port 9001
load() { taskset -c 0 h2load --h1 -n "$1" -c 8 -H 'x-user-id: user-42' http://127.0.0.1:8080/; }
for target in "$@"; do
  if [ "$target" = nginx ]; then
    taskset -c 1 nginx -p /tmp/canary-bench -c "$peers/nginx.conf" >/dev/null 2>&1 &
  else
    RUST_LOG=warn taskset -c 1 "$target" run -c "$repo/config/bench.toml" >/dev/null 2>&1 &
  fi
  proxy=$!
  wait_port 8080
  load 2000 >/dev/null
  traced=$proxy
  [ "$target" = nginx ] && traced=$(pgrep -P "$proxy" | head -1)
  strace -c -f -p "$traced" -o "$work/strace.out" 2>/dev/null &
  tracer=$!
  sleep 1
  load "$n" | grep -q "$n succeeded" || { echo "$target: not every request succeeded" >&2; exit 1; }
  kill -INT "$tracer"; wait "$tracer" || true
  kill -INT "$proxy"; wait "$proxy" || true; proxy=""
  echo "$target:"
  awk -v n="$n" '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ {
      name = $NF; if (name == "total") next
      calls = $4; total += calls
      if (calls / n >= 0.01) printf "  %-14s %5.2f\n", name, calls / n
    } END { printf "  %-14s %5.2f per request\n", "all", total / n }' "$work/strace.out"
done
