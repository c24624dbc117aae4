#!/usr/bin/env bash
# Proxy memory with N idle keep-alive client connections, each after one proxied
# request (issue 7: 7 000 connections, target ≤ 70 MiB RSS).
#
#   benches/idle_connections.sh [N]       (from the repo root; default 7000)
#   BIN=target/pgo/release/canary-proxy benches/idle_connections.sh   (another build)
#
# Holder, proxy and upstreams run as separate processes (ulimit -n is 20 000 here).
# Prints the proxy's RSS before and while holding, and the growth per connection.
# PROXY_CMD="..." measures another proxy instead (it must listen on 127.0.0.1:8080).
# Needs: nginx (the upstreams of ../shared/bench), a release build, and
# `cargo build --release --example hold_connections`.
set -euo pipefail
n=${1:-7000}
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
bin="${BIN:-$repo/target/release/canary-proxy}"
holder="$repo/target/release/examples/hold_connections"
[ -x "$bin" ] && [ -x "$holder" ] || { echo "build first: cargo build --release --example hold_connections" >&2; exit 2; }
ulimit -n 20000
mkdir -p /tmp/canary-bench
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf" >/dev/null 2>&1 & pids+=($!)
wait_port 9001
if [ -n "${PROXY_CMD:-}" ]; then sh -c "exec $PROXY_CMD" >/tmp/canary-bench/idle-proxy.log 2>&1 & else RUST_LOG=warn "$bin" run -c "$repo/config/bench.toml" >/tmp/canary-bench/idle-proxy.log 2>&1 & fi; proxy=$!; pids+=($proxy)
wait_port 8080
sleep 0.5
before=$(rss_kb "$proxy")
"$holder" 127.0.0.1:8080 "$n" 30 >/tmp/canary-bench/holder.log 2>&1 & pids+=($!)
for _ in $(seq 1 300); do grep -q holding /tmp/canary-bench/holder.log && break; sleep 0.1; done
sleep "${SETTLE:-2}"
holding=$(rss_kb "$proxy")
cat /tmp/canary-bench/holder.log
awk -v b="$before" -v h="$holding" -v n="$n" 'BEGIN {
  printf "proxy RSS: %.1f MiB idle, %.1f MiB holding %d connections (%.1f KiB per connection)\n", b / 1024, h / 1024, n, (h - b) / n }'
