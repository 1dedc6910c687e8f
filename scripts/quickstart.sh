#!/usr/bin/env bash
# The main job, end to end, on the embedded local store:
# build, snapshot a sample tree, inspect it, read one file fetching almost
# nothing, verify, mount it lazily, write to it, save a diff, show what was
# fetched and saved, and restore with lazysnap and with stock zstd + tar.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "== building lazysnap (release)"
cargo build --release --locked -j "${CARGO_BUILD_JOBS:-2}" 2>&1 | tail -n 1
bin="$PWD/target/release/lazysnap"

work="$(mktemp -d "${TMPDIR:-/tmp}/lazysnap-quickstart.XXXXXX")"
export LAZYSNAP_STATE_DIR="$work/state"
cleanup() {
    "$bin" umount "$work/mnt" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
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

if [ -e /dev/fuse ]; then
    echo "== lazysnap mount (lazy and writable): ready after reading only the tail"
    mkdir "$work/mnt"
    "$bin" mount demo/main "$work/mnt" --store "$store"
    "$bin" stats "$work/mnt"
    echo "-- ls and one small file through the mount:"
    ls "$work/mnt"
    cat "$work/mnt/node_modules/left-pad/index.js"
    "$bin" stats "$work/mnt" --json | grep -E '"(bytes_fetched|requests|frames_fetched)"'
    echo "-- work in it: edit a file, add one, delete one"
    echo "export const value1 = 'edited';" > "$work/mnt/src/module1.js"
    echo "notes" > "$work/mnt/NOTES.md"
    rm "$work/mnt/src/module2.js"
    echo "== lazysnap save: only the changes become a diff snapshot"
    "$bin" save "$work/mnt" --name demo/main-2
    "$bin" diff demo/main-2 --store "$store"
    "$bin" log demo/main-2 --store "$store"
    ls -l "$store/demo/main-2.tar.zst"
    "$bin" umount "$work/mnt"
    echo "== mount the saved chain read-only and check it"
    "$bin" mount demo/main-2 "$work/mnt" --store "$store" --read-only
    grep -q edited "$work/mnt/src/module1.js" && [ ! -e "$work/mnt/src/module2.js" ] && echo "saved snapshot has the changes"
    "$bin" umount "$work/mnt"
else
    echo "== (skipping the mount demo: /dev/fuse is not available here)"
fi

echo "== lazysnap extract"
"$bin" extract demo/main "$work/restored" --store "$store" --stats
diff -r "$src" "$work/restored" && echo "restored tree matches the source"

echo "== stock tools: zstd -d | tar -x"
mkdir "$work/stock"
zstd -dc "$store/demo/main.tar.zst" | tar -x -C "$work/stock"
diff -r "$src" "$work/stock" && echo "stock zstd + tar restore matches the source"
echo "quickstart: ok"
