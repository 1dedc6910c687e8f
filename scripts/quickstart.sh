#!/usr/bin/env bash
# The main job, end to end, on the embedded local store:
# build, snapshot a sample tree, inspect it, read one file fetching almost
# nothing, verify, and restore it with lazysnap and with stock zstd + tar.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v zstd >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq zstd >/dev/null
fi
echo "== building lazysnap (release)"
cargo build --release --locked -j "${CARGO_BUILD_JOBS:-2}" 2>&1 | tail -n 1
bin="$PWD/target/release/lazysnap"

work="$(mktemp -d "${TMPDIR:-/tmp}/lazysnap-quickstart.XXXXXX")"
trap 'rm -rf "$work"' EXIT
store="$work/store"
src="$work/workspace"

echo "== making a sample workspace in $src"
mkdir -p "$src/src" "$src/assets" "$src/node_modules/left-pad"
for i in $(seq 1 400); do
    printf 'export const value%d = %d;\n' "$i" "$i" > "$src/src/module$i.js"
done
head -c $((40 * 1024 * 1024)) /dev/urandom > "$src/assets/blob.bin"
printf 'module.exports = (s, n) => s.padStart(n);\n' > "$src/node_modules/left-pad/index.js"
ln -s src/module1.js "$src/entry.js"
du -sh "$src"

echo "== lazysnap create"
"$bin" create "$src" --store "$store" --name demo/main

echo "== lazysnap inspect"
"$bin" inspect demo/main --store "$store"

echo "== lazysnap ls /"
"$bin" ls demo/main / --store "$store"

echo "== lazysnap cat (one small file out of a ~40 MB snapshot; stats on stderr)"
"$bin" cat demo/main node_modules/left-pad/index.js --store "$store" --stats

echo "== lazysnap verify"
"$bin" verify demo/main --store "$store"

echo "== lazysnap extract"
"$bin" extract demo/main "$work/restored" --store "$store" --stats
diff -r "$src" "$work/restored" && echo "restored tree matches the source"

echo "== stock tools: zstd -d | tar -x"
mkdir "$work/stock"
zstd -dc "$store/demo/main.tar.zst" | tar -x -C "$work/stock"
diff -r "$src" "$work/stock" && echo "stock zstd + tar restore matches the source"
echo "quickstart: ok"
