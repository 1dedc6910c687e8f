#!/usr/bin/env bash
# Install what the tests need (if missing; idempotent), then run the whole suite.
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ "${#need[@]}" -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if [ ! -e /dev/fuse ] && [ "${LAZYSNAP_SKIP_FUSE:-}" != "1" ]; then
    echo "test.sh: /dev/fuse is missing: FUSE tests will fail (set LAZYSNAP_SKIP_FUSE=1 to skip them loudly)" >&2
fi

jobs="${CARGO_BUILD_JOBS:-2}"
# A CI run builds once from clean: incremental state would only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy -j "$jobs" --all-targets --locked -- -D warnings
echo "== cargo test"
# Every lazysnap process the suite starts (commands, mount daemons, signers)
# also writes a trace-level log into this directory; none may hold a secret.
trace_dir=$(mktemp -d "${TMPDIR:-/tmp}/lazysnap-trace.XXXXXX")
trap 'rm -rf "$trace_dir"' EXIT
export LAZYSNAP_TRACE_DIR="$trace_dir"
# Integration tests spawn the binary and move hundreds of MB; two at a time
# fit a 2-core machine.
cargo test -j "$jobs" --locked --lib --bins --tests "$@" -- --test-threads 2
unset LAZYSNAP_TRACE_DIR
echo "== trace logs of the whole run hold no secret"
./scripts/check-trace-logs.sh "$trace_dir"
