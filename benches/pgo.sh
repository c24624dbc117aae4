#!/usr/bin/env bash
# A profile-guided (PGO) release build of canary-proxy: the build the release artefacts
# ship and the one README's Performance figures are for. Plain `cargo build --release`
# still works and is what the tests use; this one is ~29 % fewer instructions per
# request (README, Performance).
#
#   benches/pgo.sh [--features fleet]         (from anywhere; extra args go to cargo build)
#
# 1. builds canary-proxy instrumented (-Cprofile-generate) into target/pgo-generate;
# 2. runs examples/pgo_train.rs: two in-process upstreams, the instrumented proxy in
#    front, a fixed mix of requests (HTTP/1.1 keep-alive GETs, POSTs, h2c, errors),
#    then SIGTERM, which writes the profile;
# 3. merges it with llvm-profdata and builds again with -Cprofile-use into target/pgo;
# 4. sends the optimised build through the same run (every answer checked).
# Prints the optimised binary's path: target/pgo/release/canary-proxy.
#
# Needs llvm-profdata matching rustc's LLVM (`rustup component add llvm-tools`) and
# `kill` (procps); no nginx, no load generator. Takes about three release builds (the
# training run's build compiles the library and the dev-dependencies too) and two
# runs of ~10 s. Any RUSTFLAGS of yours are kept, and the profile flag added.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
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
  cargo build --release --locked --bin canary-proxy "$@"
echo "pgo: training" >&2
CARGO_TARGET_DIR="$repo/target" cargo build --release --locked --example pgo_train
LLVM_PROFILE_FILE="$data/train-%p-%m.profraw" \
  "$repo/target/release/examples/pgo_train" "$repo/target/pgo-generate/release/canary-proxy"
ls "$data"/train-*.profraw >/dev/null 2>&1 || { echo "pgo: the training wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$data/merged.profdata" "$data"/train-*.profraw
echo "pgo: optimised build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$data/merged.profdata" CARGO_TARGET_DIR="$repo/target/pgo" \
  cargo build --release --locked --bin canary-proxy "$@"
echo "pgo: the optimised build through the same run" >&2
"$repo/target/release/examples/pgo_train" "$repo/target/pgo/release/canary-proxy"
echo "$repo/target/pgo/release/canary-proxy"
