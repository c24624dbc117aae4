#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: repeatable on a
# noisy machine (instruction counts do not depend on what else runs), so a change to
# the data path can be judged to the percent.
#
#   benches/callgrind.sh [REQUESTS]          (from the repo root; default 2000)
#   BIN=/tmp/old/canary-proxy benches/callgrind.sh 5000    (another build, for A/B)
#
# Runs the release binary with config/bench.toml under callgrind twice, serving
# REQUESTS and then 2×REQUESTS HTTP/1.1 keep-alive requests (h2load --h1, 8
# connections, sticky x-user-id) from the nginx upstreams of ../shared/bench, and
# prints (instructions(2N) − instructions(N)) / N: the per-request cost with startup
# (not counted: instrumentation starts once the port is open) and shutdown cancelled
# out. The proxy is pinned to CPU 1 (one worker thread), the
# load to CPU 0. Needs: valgrind, nginx, h2load (nghttp2-client), taskset.
set -euo pipefail
n=${1:-2000}
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
work=/tmp/canary-callgrind
rm -rf "$work"; mkdir -p "$work" /tmp/canary-bench
bin="${BIN:-$repo/target/release/canary-proxy}"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
for tool in valgrind nginx h2load; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 2; }
done

nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf" >/dev/null 2>&1 &
up=$!
trap 'kill $up 2>/dev/null || true' EXIT
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port 9001

run() { # requests -> total instructions
  local requests=$1 out="$work/callgrind.$1.out"
  RUST_LOG=warn taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$bin" run -c "$repo/config/bench.toml" >"$work/proxy.$1.log" 2>&1 &
  local pid=$!
  wait_port 8080
  # Count from here: startup varies between runs (the metrics clock calibrates
  # itself against wall time, ~1 000 instructions/request of noise at N=5000).
  callgrind_control -i on "$pid" >/dev/null
  taskset -c 0 h2load --h1 -n "$requests" -c 8 -H 'x-user-id: user-42' http://127.0.0.1:8080/ >"$work/h2load.$1.txt"
  kill -TERM "$pid"; wait "$pid" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{ print $2 }'
}
one=$(run "$n")
two=$(run $((2 * n)))
grep -E "requests: .* succeeded" "$work/h2load.$((2 * n)).txt" || true
awk -v a="$one" -v b="$two" -v n="$n" 'BEGIN { printf "instructions per request: %.0f  (N=%d: %d, 2N: %d)\n", (b - a) / n, n, a, b }'
