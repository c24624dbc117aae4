#!/usr/bin/env bash
# A profile-guided (PGO) release build of canary-proxy; with --bolt, laid out again by
# BOLT: that is the build the release artefacts ship and the one README's Performance
# figures are for. Plain `cargo build --release` still works and is what the tests use;
# this one is ~33 % fewer instructions per request (README, Performance). Both proxy
# builds below go through benches/hyper-patch.sh: hyper with our one patch (its
# HTTP/1 read buffer reused; benches/hyper-read-buf.patch says why).
#
#   benches/pgo.sh [--bolt] [--features fleet]   (from anywhere; other args go to cargo build)
#
# 1. builds canary-proxy instrumented (-Cprofile-generate) into target/pgo-generate;
# 2. runs examples/pgo_train.rs: two in-process upstreams, the instrumented proxy in
#    front, a fixed mix of requests (HTTP/1.1 keep-alive GETs, POSTs, h2c, errors),
#    then SIGTERM, which writes the profile;
# 3. merges it with llvm-profdata and builds again with -Cprofile-use into target/pgo;
# 4. sends the optimised build through the same run (every answer checked).
# With --bolt, then (the post-link layout, as rustc's own release build does):
# 5. instruments that binary with llvm-bolt (it was linked with --emit-relocs, so
#    BOLT may move whole functions), sends it through the same run, which writes
#    BOLT's profile, and lays the binary out again by it: hot blocks together, cold
#    ones split off, functions ordered by calls;
# 6. sends the result through the run once more.
# Prints the final binary's path: target/pgo/release/canary-proxy, or with --bolt
# target/pgo/bolt/canary-proxy.
#
# Needs llvm-profdata matching rustc's LLVM (`rustup component add llvm-tools`),
# `kill` (procps) and patch(1); --bolt needs llvm-bolt-16 (Debian 12: `apt install
# bolt-16`). No nginx, no load generator. Takes about three release builds (the
# training run's build compiles the library and the dev-dependencies too) and two
# runs of ~10 s (four with --bolt). Any RUSTFLAGS of yours are kept, and the profile
# flag added.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bolt=
cargo_args=()
for arg in "$@"; do
  if [ "$arg" = --bolt ]; then bolt=llvm-bolt-16; else cargo_args+=("$arg"); fi
done
set -- ${cargo_args[@]+"${cargo_args[@]}"}
if [ -n "$bolt" ]; then
  command -v "$bolt" >/dev/null || { echo "no $bolt: apt-get install bolt-16" >&2; exit 2; }
  # llvm-bolt looks for its instrumentation runtime under ../lib of the path it was
  # called by (/usr/bin/llvm-bolt-16: /usr/lib), without following the symlink; the
  # runtime is given below relative to that.
  bolt_rt=/usr/lib/llvm-16/lib/libbolt_rt_instr.a
  [ -f "$bolt_rt" ] || { echo "no $bolt_rt: apt-get install bolt-16" >&2; exit 2; }
fi
train="$repo/target/release/examples/pgo_train"
optimised="$repo/target/pgo/release/canary-proxy"
out="$repo/target/pgo/bolt"
# A BOLT binary from an earlier run must not outlive this one's code.
rm -rf "$out"
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata" ] || { echo "no $profdata: rustup component add llvm-tools" >&2; exit 2; }

data="$repo/target/pgo-data"
# CARGO_ENCODED_RUSTFLAGS would take precedence over the RUSTFLAGS set below.
unset CARGO_ENCODED_RUSTFLAGS
rm -rf "$data"; mkdir -p "$data"
# RUSTFLAGS reaches build scripts too; their profiles go elsewhere and are not merged.
echo "pgo: instrumented build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$data/build-scripts" CARGO_TARGET_DIR="$repo/target/pgo-generate" \
  benches/hyper-patch.sh cargo build --release --bin canary-proxy "$@"
echo "pgo: training" >&2
CARGO_TARGET_DIR="$repo/target" cargo build --release --locked --example pgo_train
LLVM_PROFILE_FILE="$data/train-%p-%m.profraw" \
  "$train" "$repo/target/pgo-generate/release/canary-proxy"
ls "$data"/train-*.profraw >/dev/null 2>&1 || { echo "pgo: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$data/merged.profdata" "$data"/train-*.profraw
echo "pgo: optimised build" >&2
# BOLT needs the relocations kept in the binary to move functions.
relocs=${bolt:+-Clink-arg=-Wl,--emit-relocs}
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$data/merged.profdata $relocs" CARGO_TARGET_DIR="$repo/target/pgo" \
  benches/hyper-patch.sh cargo build --release --bin canary-proxy "$@"
echo "pgo: the optimised build through the same run" >&2
"$train" "$optimised"
if [ -z "$bolt" ]; then
  echo "$optimised"
  exit 0
fi

mkdir -p "$out"
echo "pgo: BOLT instrumentation" >&2
# The runtime path is given relative to /usr/lib, where llvm-bolt-16 looks for it.
"$bolt" "$optimised" -instrument \
  -instrumentation-file="$data/bolt.fdata" -runtime-instrumentation-lib="${bolt_rt#/usr/lib/}" \
  -o "$out/canary-proxy.instrumented" >&2
echo "pgo: BOLT training" >&2
"$train" "$out/canary-proxy.instrumented"
[ -s "$data/bolt.fdata" ] || { echo "pgo: the BOLT training wrote no profile" >&2; exit 1; }
echo "pgo: BOLT layout" >&2
# -update-debug-sections keeps the line tables (profiles and backtraces name source
# lines, as for the other builds).
"$bolt" "$optimised" -o "$out/canary-proxy" -data="$data/bolt.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=hfsort -split-functions -split-all-cold \
  -split-eh -icf=1 -use-gnu-stack -update-debug-sections >&2
rm -f "$out/canary-proxy.instrumented"
echo "pgo: the BOLT build through the same run" >&2
"$train" "$out/canary-proxy"
echo "$out/canary-proxy"
