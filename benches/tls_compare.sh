#!/usr/bin/env bash
# TLS cost, side by side with nginx using the same certificate (ECDSA P-256).
#
#   benches/tls_compare.sh [-d SECONDS] [-r ROUNDS]      (from the repo root, after
#                                                       cargo build --release)
#   BIN=target/pgo/bolt/canary-proxy benches/tls_compare.sh   (another build)
#
# Placement as in ../shared/bench/compare.sh: each proxy pinned to CPU 1, wrk and the
# nginx upstreams on CPU 0; CPU time is user+sys of the proxy's process group. Prints,
# per proxy, medians over rounds of:
#   - keep-alive HTTP/1.1 over TLS: req/s and CPU µs per request (vs plain HTTP),
#   - reconnects: a new TLS connection per request (Connection: close); wrk resumes
#     sessions, as browsers do, so these are mostly abbreviated handshakes,
#   - full handshakes: `openssl s_time -new` (no resumption): handshakes/s (the client
#     is single-threaded, so this is client-bound) and proxy CPU µs per handshake.
# Needs: nginx, wrk, openssl, taskset (apt-get install -y nginx-light wrk).
set -euo pipefail
duration=8
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    -d) duration=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [-d SECONDS] [-r ROUNDS]" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/../shared/bench/peers"
work=/tmp/canary-tls-bench
rm -rf "$work"; mkdir -p "$work"
bin="${BIN:-$repo/target/release/canary-proxy}"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

sed -e "s#listen 127.0.0.1:8080 backlog=4096;#listen 127.0.0.1:8080 backlog=4096; listen 127.0.0.1:8443 ssl backlog=4096; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;#" \
    -e "s#/tmp/canary-bench/nginx.pid#$work/nginx.pid#" \
    -e "s#/tmp/canary-bench/nginx.error.log#$work/nginx.error.log#" \
    "$peers/nginx.conf" > "$work/nginx.conf"
cat > "$work/plain.toml" <<TOML
[server]
listen = "127.0.0.1:8080"
[[route]]
name = "bench"
stable = { endpoints = ["127.0.0.1:9001"] }
canary = { endpoints = ["127.0.0.1:9002"] }
canary_weight = 10
sticky = ["header:x-user-id"]
[route.budget]
max_error_rate = 0.5
TOML
sed -e "s#listen = \"127.0.0.1:8080\"#listen = \"127.0.0.1:8443\"\ntls = { cert = \"$work/tls.crt\", key = \"$work/tls.key\" }#" \
  "$work/plain.toml" > "$work/tls.toml"

leaders=()
cleanup() { for pid in "${leaders[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
ticks() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v g="$1" '{ sub(/^.*\) /, ""); if ($3 == g) t += $12 + $13 } END { print t + 0 }'; }
start() { local cpu=$1; shift; setsid taskset -c "$cpu" "$@" >"$work/last.log" 2>&1 & echo $!; }

up=$(start 0 nginx -p /tmp/canary-bench -c "$peers/upstreams.nginx.conf"); leaders+=("$up")
wait_port 9001; wait_port 9002
hz=$(getconf CLK_TCK)

measure() { # name url extra-wrk-args... -> "req/s cpu_us"
  local name=$1 url=$2; shift 2
  taskset -c 0 wrk -t1 -c64 -d2s -s "$peers/users.lua" "$@" "$url" >/dev/null 2>&1 || true
  local t0 t1; t0=$(ticks "$pid")
  taskset -c 0 wrk -t1 -c64 -d"${duration}s" -s "$peers/users.lua" "$@" "$url" >"$work/wrk.txt" 2>&1 || true
  t1=$(ticks "$pid")
  awk -v t=$((t1 - t0)) -v hz="$hz" '/requests in/ { r = $1 } /Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.1f\n", rps, (r ? t / hz / r * 1e6 : -1) }' "$work/wrk.txt"
}

handshakes() { # -> "handshakes/s cpu_us"
  local t0 t1; t0=$(ticks "$pid")
  taskset -c 0 openssl s_time -connect 127.0.0.1:8443 -new -time "$duration" >"$work/stime.txt" 2>&1 || true
  t1=$(ticks "$pid")
  awk -v t=$((t1 - t0)) -v hz="$hz" '/connections in .* real seconds/ { n = $1; s = $4 }
    END { printf "%.0f %.1f\n", (s ? n / s : 0), (n ? t / hz / n * 1e6 : -1) }' "$work/stime.txt"
}

for round in $(seq 1 "$rounds"); do
  for target in nginx canary-proxy; do
    if [ "$target" = nginx ]; then
      pid=$(start 1 nginx -p "$work" -c "$work/nginx.conf"); wait_port 8443
    else
      pid=$(start 1 "$bin" run -c "$work/tls.toml"); wait_port 8443
    fi
    echo "$target tls_keepalive $(measure "$target" https://127.0.0.1:8443/)" >>"$work/results.txt"
    echo "$target tls_reconnect $(measure "$target" https://127.0.0.1:8443/ -H 'Connection: close')" >>"$work/results.txt"
    echo "$target tls_full_handshake $(handshakes)" >>"$work/results.txt"
    if [ "$target" = nginx ]; then
      echo "$target plain_keepalive $(measure "$target" http://127.0.0.1:8080/)" >>"$work/results.txt"
    fi
    kill -TERM -- "-$pid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$pid" 2>/dev/null || true
    if [ "$target" = canary-proxy ]; then
      pid=$(start 1 "$bin" run -c "$work/plain.toml"); wait_port 8080
      echo "$target plain_keepalive $(measure "$target" http://127.0.0.1:8080/)" >>"$work/results.txt"
      kill -TERM -- "-$pid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
done

printf '%-13s %-16s %10s %12s\n' target mode req/s cpu_us/req
sort "$work/results.txt" | awk '{ k = $1 " " $2; n[k]++; v[k, n[k]] = $3 " " $4 }
  END { for (k in n) { m = int((n[k] + 1) / 2); split(v[k, m], a, " "); split(k, b, " ");
        printf "%-13s %-16s %10s %12s\n", b[1], b[2], a[1], a[2] } }' | sort
echo "(medians over $rounds rounds of ${duration}s, 64 connections; tls_reconnect = a new, resumed TLS connection per request; tls_full_handshake = openssl s_time -new, req/s column = handshakes/s)"
