#!/usr/bin/env bash
# Runs one cargo command with our patch to hyper (benches/hyper-read-buf.patch: read
# into the rest of the HTTP/1 read buffer instead of allocating 8 KiB per message;
# its header says why). The release build (benches/pgo.sh) and CI's second test run
# use it; plain `cargo build` and `cargo test` use hyper as published.
#
#   benches/hyper-patch.sh cargo test                (from anywhere)
#   benches/hyper-patch.sh cargo build --release --bin canary-proxy
#
# 1. checks that Cargo.lock holds the hyper version the patch is for (a hyper update
#    means refreshing the patch, or dropping it if upstream took it);
# 2. copies that hyper's source from cargo's registry to target/hyper-patched/ and
#    applies the patch, once per patch content (an unchanged copy is not rebuilt);
# 3. runs the command with `--config patch.crates-io.hyper.path=…`;
# 4. puts Cargo.lock back: the patch changes only hyper's source in it (checked), and
#    the tree stays clean. `cargo fetch --locked` first keeps --locked's promise.
# Needs patch(1).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ $# -ge 2 ] && [ "$1" = cargo ] || { echo "usage: $0 cargo SUBCOMMAND [ARGS...]" >&2; exit 2; }
command -v patch >/dev/null || { echo "hyper-patch: no patch(1): apt-get install patch" >&2; exit 2; }
patch_file="$repo/benches/hyper-read-buf.patch"
wanted=$(sed -n 's/^# hyper-version: //p' "$patch_file")
locked=$(awk '$0 == "name = \"hyper\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ "$locked" != "$wanted" ]; then
  echo "hyper-patch: Cargo.lock has hyper $locked, $patch_file is for $wanted: refresh or drop it" >&2
  exit 2
fi
cargo fetch --locked --quiet
src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -type d -name "hyper-$wanted" | head -1)
[ -n "$src" ] || { echo "hyper-patch: hyper-$wanted is not in cargo's registry" >&2; exit 2; }
dir="$repo/target/hyper-patched/hyper-$wanted"
stamp=$(sha256sum "$patch_file" | cut -d' ' -f1)
if [ "$(cat "$dir/.patched" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$dir"; mkdir -p "$(dirname "$dir")"
  cp -r "$src" "$dir"
  (cd "$dir" && patch -p1 --forward --quiet <"$patch_file")
  echo "$stamp" >"$dir/.patched"
fi

lock=$(mktemp)
cp Cargo.lock "$lock"
trap 'cp "$lock" Cargo.lock; rm -f "$lock"' EXIT
"$1" --config "patch.crates-io.hyper.path=\"$dir\"" "${@:2}"
# Resolved with the patch, the lock differs in hyper's `source` and `checksum` lines
# only; anything else would mean the build did not use what Cargo.lock pins.
changed=$(diff "$lock" Cargo.lock | grep -c '^[<>]' || true)
if [ "$changed" != 2 ]; then
  echo "hyper-patch: the patched build changed $changed lines of Cargo.lock (expected hyper's source and checksum):" >&2
  diff "$lock" Cargo.lock >&2 || true
  exit 1
fi
