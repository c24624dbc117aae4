#!/usr/bin/env bash
# Memory under sustained load: wrk at full speed for SECONDS (default 120) against the
# release binary with config/bench.toml (proxy on CPU 1, load and upstreams on CPU 0),
# the proxy's RSS sampled every 10 s. Prints the samples and max/min after warm-up
# (issue 7 asks for ± 10 %).
#
#   benches/soak.sh [SECONDS]            (repo root; needs nginx, wrk, taskset)
set -euo pipefail
seconds=${1:-120}
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
bin="$repo/target/release/canary-proxy"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
mkdir -p /tmp/canary-bench
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
taskset -c 0 nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf" >/dev/null 2>&1 & pids+=($!)
wait_port 9001
RUST_LOG=warn taskset -c 1 "$bin" run -c "$repo/config/bench.toml" >/tmp/canary-bench/soak-proxy.log 2>&1 & proxy=$!; pids+=($proxy)
wait_port 8080
taskset -c 0 wrk -t1 -c64 -d"${seconds}s" -s "$peers/users.lua" http://127.0.0.1:8080/ >/tmp/canary-bench/soak-wrk.txt 2>&1 & pids+=($!)
samples=()
# Samples while the load runs (the last one 5 s before it stops).
for _ in $(seq 1 $((seconds / 10 - 1))); do
  sleep 10
  samples+=("$(awk '/^VmRSS/ { print $2 }' "/proc/$proxy/status")")
done
sleep 15
after=$(awk '/^VmRSS/ { print $2 }' "/proc/$proxy/status")
grep -E "requests in|Non-2xx" /tmp/canary-bench/soak-wrk.txt || true
printf 'RSS (MiB) every 10 s under load:'; for s in "${samples[@]}"; do awk -v k="$s" 'BEGIN { printf " %.1f", k / 1024 }'; done; echo
# After the first sample (warm-up): max / min under load.
printf '%s\n' "${samples[@]:1}" | sort -n | awk 'NR == 1 { min = $1 } { max = $1 } END { printf "under load after warm-up: min %.1f MiB, max %.1f MiB, spread %+.1f %%\n", min / 1024, max / 1024, (max - min) / min * 100 }'
awk -v k="$after" 'BEGIN { printf "10 s after the load stopped: %.1f MiB\n", k / 1024 }'
