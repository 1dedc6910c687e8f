#!/usr/bin/env bash
# Pod mode end to end, on loopback: an S3 server (examples/s3_server), a
# signer holding its credentials, and a "pod" whose environment holds no AWS
# variable, only a bearer token file scoped to org/repo/. The pod creates a
# snapshot, lists, mounts it lazily, edits, saves a diff, remounts the save,
# and is refused a name outside its prefix. Everything it does goes through
# the signer: presigned GETs for reads, a presigned multipart upload for saves.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
    echo "pod-demo: /dev/fuse is not available here: the demo mounts snapshots" >&2
    exit 1
fi
echo "== building lazysnap and the demo S3 server (release)"
cargo build --release --locked -j "${CARGO_BUILD_JOBS:-2}" --bin lazysnap --example s3_server 2>&1 | tail -n 1
bin="$PWD/target/release/lazysnap"
s3bin="$PWD/target/release/examples/s3_server"

work="$(mktemp -d "${TMPDIR:-/tmp}/lazysnap-pod-demo.XXXXXX")"
mnt="$work/pod/mnt"
s3_pid=""
signer_pid=""

# The pod: a clean environment with the signer's URL, the token file's path,
# a state dir, PATH and HOME. No AWS_* variable, no store.
pod() {
    env -i PATH="$PATH" HOME="$work/pod/home" \
        LAZYSNAP_SIGNER="${signer_url:-}" LAZYSNAP_TOKEN_FILE="$work/pod/token" \
        LAZYSNAP_STATE_DIR="$work/pod/state" "$@"
}

cleanup() {
    local rc=$?
    set +e
    pod "$bin" umount "$mnt" >/dev/null 2>&1
    # Whatever is still mounted under $work (a daemon that died mid-step):
    # detach it before removing anything.
    grep -F " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
    done
    [ -n "$signer_pid" ] && kill "$signer_pid" 2>/dev/null && wait "$signer_pid" 2>/dev/null
    [ -n "$s3_pid" ] && kill "$s3_pid" 2>/dev/null && wait "$s3_pid" 2>/dev/null
    if grep -qF " $work/" /proc/self/mounts; then
        echo "pod-demo: something is still mounted under $work; left in place" >&2
    else
        rm -rf "$work"
    fi
    [ "$rc" -eq 0 ] || echo "pod-demo: FAILED (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait for "listening on ADDR" in FILE from process PID; print ADDR.
listening() {
    local file="$1" pid="$2" what="$3"
    for _ in $(seq 1 100); do
        if grep -q '^listening on ' "$file" 2>/dev/null; then
            sed -n 's/^listening on //p' "$file" | head -n 1
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "pod-demo: $what exited before listening:" >&2
            cat "$file" "$file.err" 2>/dev/null >&2
            return 1
        fi
        sleep 0.1
    done
    echo "pod-demo: $what is not listening after 10 s" >&2
    return 1
}

# A clean umount removes a mount daemon's log: keep a copy for the token check.
keep_logs() {
    mkdir -p "$work/logs"
    find "$work/pod/state" -type f -name '*.log' -exec cp -t "$work/logs" --backup=numbered {} +
}

echo "== starting an S3 server on loopback (examples/s3_server), bucket demo-bucket"
mkdir -p "$work/s3/demo-bucket"
access_key="AKPODDEMO$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
secret_key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$s3bin" "$work/s3" 0 "$access_key" "$secret_key" >"$work/s3.out" 2>"$work/s3.out.err" &
s3_pid=$!
s3_url="$(listening "$work/s3.out" "$s3_pid" "the S3 server")"
echo "S3 at $s3_url"

echo "== a token for the pod: read-write under org/repo/ (the token file stores only its SHA-256)"
mkdir -p "$work/pod/home" "$work/pod/state" "$mnt" "$work/signer"
token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
(umask 077 && printf '%s\n' "$token" > "$work/pod/token")
digest="$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
cat > "$work/signer/tokens.json" <<EOF
{"version": 1, "tokens": [
  {"sha256": "$digest", "prefix": "org/repo/", "rights": "read-write", "comment": "pod-demo"}
]}
EOF
cat "$work/signer/tokens.json"

echo "== starting the signer: it alone holds the S3 credentials"
env -i PATH="$PATH" HOME="$work/signer" \
    AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="$s3_url" LAZYSNAP_S3_PATH_STYLE=1 \
    "$bin" signer --listen 127.0.0.1:0 --store s3://demo-bucket/snaps \
    --tokens "$work/signer/tokens.json" --expires 15m \
    >"$work/signer.out" 2>"$work/signer.out.err" &
signer_pid=$!
signer_addr="$(listening "$work/signer.out" "$signer_pid" "the signer")"
signer_url="http://$signer_addr"
echo "signer at $signer_url (plain http on loopback; give it --tls-cert/--tls-key elsewhere)"

echo "== the pod's whole environment (the token itself is only in the file)"
pod env | sort
echo "AWS_* variables in the pod: $(pod env | grep -c '^AWS_' || true)"

echo "== making a sample workspace in the pod"
src="$work/pod/workspace"
mkdir -p "$src/src" "$src/assets" "$src/node_modules/left-pad"
for i in $(seq 1 400); do
    printf 'export const value%d = %d;\n' "$i" "$i" > "$src/src/module$i.js"
done
head -c $((20 * 1024 * 1024)) /dev/urandom > "$src/assets/blob.bin"
printf 'module.exports = (s, n) => s.padStart(n);\n' > "$src/node_modules/left-pad/index.js"
printf '# demo repo\n' > "$src/README.md"
du -sh "$src"

echo "== pod: lazysnap create --name org/repo/main (a presigned multipart upload through the signer)"
pod "$bin" create "$src" --name org/repo/main

echo "== pod: lazysnap list"
pod "$bin" list

echo "== pod: lazysnap mount org/repo/main (lazy, writable)"
pod "$bin" mount org/repo/main "$mnt"
pod "$bin" stats "$mnt" --json | grep -E '"(bytes_fetched|requests|frames_fetched)"'
echo "-- ls and one small file through the mount:"
ls "$mnt"
cat "$mnt/node_modules/left-pad/index.js"
echo "-- fetched so far (one small file out of a ~20 MB snapshot):"
pod "$bin" stats "$mnt" --json | grep -E '"(bytes_fetched|requests|frames_fetched)"'

echo "-- work in it: modify a file, add one"
echo "export const value1 = 'edited in the pod';" > "$mnt/src/module1.js"
echo "written in the pod" > "$mnt/NOTES.md"

echo "== pod: lazysnap save --name org/repo/main-2 (only the changes, uploaded through the signer)"
pod "$bin" save "$mnt" --name org/repo/main-2
keep_logs
pod "$bin" umount "$mnt"

echo "== pod: remount org/repo/main-2 read-only and check the edits"
pod "$bin" mount org/repo/main-2 "$mnt" --read-only
cat "$mnt/src/module1.js" "$mnt/NOTES.md"
grep -q "edited in the pod" "$mnt/src/module1.js"
grep -q "written in the pod" "$mnt/NOTES.md"
cmp -s "$mnt/src/module2.js" "$src/src/module2.js"
echo "saved snapshot has the edits"
echo "-- fetched by this mount:"
pod "$bin" stats "$mnt" --json | grep -E '"(bytes_fetched|requests|frames_fetched)"'
keep_logs
pod "$bin" umount "$mnt"

echo "== pod: lazysnap list (object sizes: main-2 holds only the changes)"
pod "$bin" list
echo "== pod: lazysnap log org/repo/main-2 (its chain)"
pod "$bin" log org/repo/main-2

echo "== pod: names outside org/repo/ are refused (one line each; the demo goes on)"
refused() {
    local out
    if out="$(pod "$@" 2>&1)"; then
        echo "pod-demo: expected a refusal from: lazysnap ${*:2}" >&2
        echo "$out" >&2
        return 1
    fi
    printf '$ lazysnap %s\n%s\n' "${*:2}" "$out"
}
refused "$bin" cat org/other/x README.md
refused "$bin" create "$src" --name org/other/x
refused "$bin" ls org/repo-evil/main

echo "== the bucket, as the S3 server stores it (the pod never had its keys)"
(cd "$work/s3/demo-bucket" && find . -name '*.tar.zst' -printf '%P  %s bytes\n' | sort)

echo "== the signer's log (one line per call, named by the token's prefix)"
tail -n 12 "$work/signer.out.err"
logs=("$work/signer.out" "$work/signer.out.err" "$work/s3.out" "$work/s3.out.err")
while IFS= read -r -d '' f; do logs+=("$f"); done < <(find "$work/logs" -type f -print0)
if grep -qF "$token" "${logs[@]}"; then
    echo "pod-demo: the token appears in a log" >&2
    exit 1
fi
echo "the token appears in no log (${#logs[@]} files checked)"
echo "pod-demo: ok"
