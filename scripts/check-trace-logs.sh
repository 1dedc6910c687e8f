#!/usr/bin/env bash
# check-trace-logs.sh DIR: fail if any log in DIR (written by lazysnap
# processes run with LAZYSNAP_TRACE_DIR=DIR at trace level) holds a secret:
# the test suite's S3 secret key or pod token, or what a presigned URL's
# query carries (signature, credential, security token, signing date).
set -euo pipefail
dir="${1:?usage: check-trace-logs.sh DIR}"
secrets=(
    lazysnap-test-secret-key   # tests/common/s3.rs SK
    pod-token-7e3a91c4d2b8     # tests/common/signer.rs POD_TOKEN
    X-Amz-Signature X-Amz-Credential X-Amz-Security-Token X-Amz-Date=
    Signature= Credential=
)
shopt -s nullglob
logs=("$dir"/lazysnap-*.log)
lines=$(cat "${logs[@]}" /dev/null | wc -l)
# A run that wrote (almost) nothing proves nothing.
if [ "${#logs[@]}" -lt "${MIN_LOGS:-50}" ]; then
    echo "check-trace-logs: only ${#logs[@]} logs in $dir: were the tests run with LAZYSNAP_TRACE_DIR?" >&2
    exit 1
fi
bad=0
for s in "${secrets[@]}"; do
    if hits=$(grep -F -l -- "$s" "${logs[@]}"); then
        echo "check-trace-logs: '$s' appears in: $(echo "$hits" | head -n 3 | tr '\n' ' ')" >&2
        grep -F -h -m 1 -- "$s" "${logs[@]}" | head -n 1 | cut -c1-200 >&2
        bad=1
    fi
done
[ "$bad" = 0 ] || exit 1
echo "check-trace-logs: ${#logs[@]} process logs, $lines lines at trace level: no secret"
