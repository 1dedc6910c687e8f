#!/usr/bin/env bash
# Benchmarks on a realistic tree (a Next.js workspace, ~21k files, ~430 MB).
#   ./scripts/bench.sh [format] [mount] [save] [remote] [pod]
#   (sections; default: format mount save)
# remote: issue 15's acceptance item 3 over a shaped link (20 ms RTT,
#   1 Gbit/s) to a loopback S3 server, read through presigned specs:
#   extract --spec vs curl | zstd -d | tar -x, a cold sequential read of a
#   1 GiB file through a --spec mount vs a raw ranged GET, mount ready and
#   first byte; medians, ratios and PASS/FAIL. It builds the s3_server
#   example (dev-dependencies), writes 1 GiB of random data (kept) and
#   needs /dev/fuse, curl and jq; run it as `./scripts/bench.sh remote`.
# pod: issue 16's acceptance item 4 over the same link, through `lazysnap
#   signer`: a 1 GiB save through the signer vs straight to s3://, the
#   upload of a one-file change in the Next.js tree, and mount ready
#   through the signer vs from a spec (`./scripts/bench.sh pod`).
# Env: LAZYSNAP_BENCH_DIR (work dir, default /tmp/lazysnap-bench),
#      LAZYSNAP_BENCH_TREE (use this tree instead of installing Next.js),
#      RUNS (repetitions of each timing, default 3 and the best reported;
#      remote: default 5, at least 5, and the median reported).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
sections="${*:-format mount save}"
work="${LAZYSNAP_BENCH_DIR:-/tmp/lazysnap-bench}"
runs="${RUNS:-3}"
mkdir -p "$work"

for tool in zstd node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench.sh: $tool is required" >&2; exit 1; }
done

tree="${LAZYSNAP_BENCH_TREE:-$work/next}"
if [ ! -d "$tree/node_modules" ] && [ -z "${LAZYSNAP_BENCH_TREE:-}" ]; then
    echo "== installing the Next.js workspace into $tree (npm, ~1 min)"
    mkdir -p "$tree"
    (cd "$tree" && npm init -y >/dev/null && npm install --no-audit --no-fund \
        next react react-dom typescript eslint eslint-config-next @types/react @types/node >/dev/null)
fi

echo "== building lazysnap (release)"
targets=()
case " $sections " in *" remote "*|*" pod "*) targets=(--bins --example s3_server) ;; esac
cargo build --release --locked -j "${CARGO_BUILD_JOBS:-2}" "${targets[@]}" 2>&1 | tail -n 1
bin="$repo/target/release/lazysnap"

# best_of CMD...: run CMD $runs times (after `prep` if defined), print the best wall time in seconds.
best_of() {
    local best="" t0 t1 dt
    for _ in $(seq "$runs"); do
        if declare -F prep >/dev/null; then prep; fi
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        dt=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || (( $(echo "$dt < $best" | bc -l) )); then best=$dt; fi
    done
    printf '%.3f' "$best"
}

ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }

# best_into ARRAY KEY VALUE: keep the smaller value in associative ARRAY[KEY].
best_into() {
    local -n arr="$1"
    if [ -z "${arr[$2]:-}" ] || (( $(echo "$3 < ${arr[$2]}" | bc -l) )); then arr[$2]=$3; fi
}

command -v bc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }

section_format() {
    local store="$work/store" out="$work/out" files bytes
    files=$(find "$tree" -type f | wc -l)
    bytes=$(du -sb "$tree" | cut -f1)
    echo "== format: tree $tree: $files files, $((bytes / 1048576)) MiB"
    rm -rf "$store"; mkdir -p "$store"

    prep() { rm -rf "$store/bench"; }
    t_create=$(best_of "$bin" create "$tree" --store "$store" --name bench/next)
    unset -f prep
    t_tarzstd=$(best_of bash -c "tar -C '$tree' -cf - . | zstd -3 -T0 -q -c > '$work/plain.tar.zst'")
    snap="$store/bench/next.tar.zst"
    s_snap=$(stat -c %s "$snap"); s_plain=$(stat -c %s "$work/plain.tar.zst")
    s_index=$("$bin" inspect bench/next --store "$store" --json | sed -n 's/.*"index_size": \([0-9]*\).*/\1/p')

    # Restores, on disk and on tmpfs (the latter shows CPU cost without the disk's noise).
    for where in disk tmpfs; do
        if [ "$where" = tmpfs ]; then dst=/dev/shm/lazysnap-bench-out; else dst="$out"; fi
        prep() { rm -rf "$dst" "$dst.stock"; sync; mkdir -p "$dst.stock"; }
        t=$(best_of "$bin" extract bench/next "$dst" --store "$store")
        eval "t_extract_$where=$t"
        t=$(best_of bash -c "zstd -dc '$snap' | tar -x -C '$dst.stock'")
        eval "t_stock_$where=$t"
        unset -f prep
        rm -rf "$dst" "$dst.stock"
    done
    cat_stats=$("$bin" cat bench/next node_modules/next/package.json --store "$store" --stats 2>&1 >/dev/null)

    echo
    echo "| measure (best of $runs)                         | lazysnap | stock | ratio |"
    echo "|-------------------------------------------------|----------|-------|-------|"
    echo "| create vs tar -c \| zstd -3 -T0 (s)              | $t_create | $t_tarzstd | $(ratio "$t_create" "$t_tarzstd") |"
    echo "| extract vs zstd -d \| tar -x, disk (s)           | $t_extract_disk | $t_stock_disk | $(ratio "$t_extract_disk" "$t_stock_disk") |"
    echo "| extract vs zstd -d \| tar -x, tmpfs (s)          | $t_extract_tmpfs | $t_stock_tmpfs | $(ratio "$t_extract_tmpfs" "$t_stock_tmpfs") |"
    echo "| size vs tar \| zstd -3 (bytes)                   | $s_snap | $s_plain | $(ratio "$s_snap" "$s_plain") |"
    echo "| index frame (bytes)                             | $s_index | | |"
    echo "| cat of one small file: $cat_stats | | | |"
}

now() { date +%s.%N; }
since() { printf '%.3f' "$(echo "$(now) - $1" | bc -l)"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# Time task $1 (0 walk, 1 random files, 2 full read) on the mount at $2.
mount_task() {
    local t
    t=$(now)
    case "$1" in
        0) find "$2" -printf '%s %m\n' > /dev/null ;;
        1) (cd "$2" && xargs -d '\n' cat < "$3" > /dev/null) ;;
        2) tar -C "$2" -cf - . | cat > /dev/null ;;
    esac
    since "$t"
}



section_mount() {
    command -v squashfuse_ll >/dev/null 2>&1 && command -v mksquashfs >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq squashfuse squashfs-tools fuse3 >/dev/null; }
    local store="$work/store" img="$work/tree.sqfs" mnt="$work/mnt" list="$work/random200.txt"
    export LAZYSNAP_STATE_DIR="$work/state"
    mkdir -p "$store" "$mnt"
    [ -f "$store/bench/next.tar.zst" ] || "$bin" create "$tree" --store "$store" --name bench/next >/dev/null
    [ -f "$img" ] || mksquashfs "$tree" "$img" -comp zstd -quiet -noappend >/dev/null
    (cd "$tree" && find . -type f | LC_ALL=C sort | awk 'NR % 97 == 1' | head -n 200 | sed 's|^\./||') > "$list"
    echo "== mount: $(wc -l < "$list") random files; snapshot $(du -h "$store/bench/next.tar.zst" | cut -f1), squashfs $(du -h "$img" | cut -f1)"

    # Each task: cold on a fresh mount with an empty page cache, then warm
    # on the same mount; best of $runs for both. Mount time: best cold mount.
    local mount_cmd_ls="\"$bin\" mount bench/next \"$mnt\" --store \"$store\" --read-only --no-prefetch"
    local mount_cmd_sq="squashfuse_ll \"$img\" \"$mnt\""
    local umount_ls="\"$bin\" umount \"$mnt\"" umount_sq="fusermount3 -u \"$mnt\""
    local tool task r t d pid
    declare -A cold warm mnt_t
    for tool in ls sq; do
        for task in 0 1 2; do
            for r in $(seq "$runs"); do
                drop_caches
                local mc="mount_cmd_$tool" uc="umount_$tool"
                t=$(now); eval "${!mc}"; ls "$mnt" > /dev/null; d=$(since "$t")
                best_into mnt_t "$tool" "$d"
                if [ "$tool" = ls ] && [ -z "${reqs:-}" ]; then
                    reqs=$("$bin" stats "$mnt" --json | sed -n 's/.*"requests": \([0-9]*\).*/\1/p')
                fi
                best_into cold "$tool$task" "$(mount_task "$task" "$mnt" "$list")"
                best_into warm "$tool$task" "$(mount_task "$task" "$mnt" "$list")"
                if [ "$tool" = ls ] && [ "$task" = 2 ]; then
                    pid=$("$bin" stats "$mnt" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
                    peak=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$pid/status")
                fi
                eval "${!uc}"
            done
        done
    done
    local ls_mount=${mnt_t[ls]} sq_mount=${mnt_t[sq]}
    local ls_cold=("${cold[ls0]}" "${cold[ls1]}" "${cold[ls2]}") sq_cold=("${cold[sq0]}" "${cold[sq1]}" "${cold[sq2]}")
    local lw_walk=${warm[ls0]} lw_rand=${warm[ls1]} lw_read=${warm[ls2]}
    local sw_walk=${warm[sq0]} sw_rand=${warm[sq1]} sw_read=${warm[sq2]}
    echo
    echo "| task (seconds)                 | lazysnap | squashfuse | ratio |"
    echo "|--------------------------------|----------|------------|-------|"
    echo "| mount until ls works (cold)    | $ls_mount | $sq_mount | $(ratio "$ls_mount" "$sq_mount") |"
    echo "| find walk, cold                | ${ls_cold[0]} | ${sq_cold[0]} | $(ratio "${ls_cold[0]}" "${sq_cold[0]}") |"
    echo "| 200 random files, cold         | ${ls_cold[1]} | ${sq_cold[1]} | $(ratio "${ls_cold[1]}" "${sq_cold[1]}") |"
    echo "| full read (tar -c), cold       | ${ls_cold[2]} | ${sq_cold[2]} | $(ratio "${ls_cold[2]}" "${sq_cold[2]}") |"
    echo "| find walk, warm                | $lw_walk | $sw_walk | $(ratio "$lw_walk" "$sw_walk") |"
    echo "| 200 random files, warm         | $lw_rand | $sw_rand | $(ratio "$lw_rand" "$sw_rand") |"
    echo "| full read (tar -c), warm       | $lw_read | $sw_read | $(ratio "$lw_read" "$sw_read") |"
    echo "| store requests before ls works | $reqs | | |"
    echo "| daemon peak RSS after full read (MiB; budget 256) | $peak | | |"
    echo "| warm walk + full read | $(echo "$lw_walk + $lw_read" | bc) | $(echo "$sw_walk + $sw_read" | bc) | $(ratio "$(echo "$lw_walk + $lw_read" | bc)" "$(echo "$sw_walk + $sw_read" | bc)") |"
}

section_save() {
    local store="$work/store" mnt="$work/wmnt" t d f size
    export LAZYSNAP_STATE_DIR="$work/state"
    mkdir -p "$store" "$mnt"
    [ -f "$store/bench/next.tar.zst" ] || "$bin" create "$tree" --store "$store" --name bench/next >/dev/null
    for n in one hundred; do rm -f "$store/bench/save-$n.tar.zst"; done
    rm -rf "$work/state/mounts"
    echo "== save: writable mount of the tree, then saves"
    "$bin" mount bench/next "$mnt" --store "$store" >/dev/null
    f=$(cd "$mnt" && find node_modules -type f -size +9k -size -11k -print -quit)
    echo "// changed" >> "$mnt/$f"
    t=$(now); "$bin" save "$mnt" --name bench/save-one >/dev/null; d=$(since "$t")
    size=$(stat -c %s "$store/bench/save-one.tar.zst")
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| save after changing one ~10 KB file ($f) | $d s, $size bytes (index included) |"
    mkdir -p "$mnt/new-files"
    (tar -C "$tree" -cf - node_modules || true) | head -c $((100 << 20)) | (cd "$mnt/new-files" && split -b 1M - part-)
    t=$(now); "$bin" save "$mnt" --name bench/save-hundred >/dev/null; d=$(since "$t")
    size=$(stat -c %s "$store/bench/save-hundred.tar.zst")
    echo "| save of 100 MiB of new files | $d s ($(echo "100 / $d" | bc) MiB/s), $size bytes |"
    "$bin" umount "$mnt"

    # A 10-deep chain made by create --parent on a hardlinked copy of the tree.
    local copy="$work/chain-tree" i parent=bench/next
    rm -rf "$copy"; cp -al "$tree" "$copy"
    for i in $(seq 1 10); do
        rm -f "$store/bench/chain-$i.tar.zst"
        echo "step $i" > "$copy/chain-step-$i"
        "$bin" create "$copy" --store "$store" --name "bench/chain-$i" --parent "$parent" >/dev/null
        parent="bench/chain-$i"
    done
    t=$(now); "$bin" mount bench/chain-10 "$mnt" --store "$store" --read-only; ls "$mnt" > /dev/null; d=$(since "$t")
    local reqs
    reqs=$("$bin" stats "$mnt" --json | sed -n 's/.*"requests": \([0-9]*\).*/\1/p')
    "$bin" umount "$mnt"
    echo "| mount of a 10-deep chain until ls works | $d s, $reqs store requests |"
    rm -rf "$copy"
}

# ---- remote: issue 15's acceptance item 3, through the shaping proxy ----
# An S3 server (s3s-fs, examples/s3_server.rs) on loopback behind
# lazysnap-shaper at 20 ms RTT / 1 Gbit/s; the snapshots are written with
# credentials straight to the server and read back with none, through
# presigned mount specs whose URLs point at the shaper.

# median V...: the median of the values (mean of the middle two if even).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# verdict VALUE OP LIMIT: PASS or FAIL.
verdict() {
    if (( $(echo "$1 $2 $3" | bc -l) )); then echo PASS; else echo FAIL; fi
}

remote_pids=()
remote_mnts=()
remote_cleanup() {
    local m p
    for m in "${remote_mnts[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { "$bin" umount "$m" >/dev/null 2>&1 || fusermount3 -uz "$m" 2>/dev/null || true; }
    done
    for p in "${remote_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${remote_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    remote_pids=()
}

# wait_listening LOG PID: the address the server at PID printed to LOG
# (`listening on [http://]HOST:PORT`).
wait_listening() {
    local i addr
    for i in $(seq 200); do
        addr=$(sed -n 's|^listening on \(http://\)\{0,1\}\([0-9.:]*\).*|\2|p' "$1" | head -n 1)
        if [ -n "$addr" ]; then echo "$addr"; return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench.sh: server did not start; its log:" >&2; cat "$1" >&2; return 1
}

# remote_up: the S3 server behind the shaper (20 ms RTT, 1 Gbit/s), the
# 1 GiB file, and snapshot `next` (the tree) written straight to the
# server. Sets rruns, rdir, big, s3dir, mnt, out, ak, sk, s3addr, link and
# with_s3 for the sections that follow.
remote_up() {
    local tool
    for tool in curl jq mountpoint; do
        command -v "$tool" >/dev/null 2>&1 || { echo "bench.sh: $tool is required for remote and pod" >&2; exit 1; }
    done
    rruns=${RUNS:-5}
    if [ "$rruns" -lt 5 ]; then echo "== remote: RUNS=$rruns is below 5; using 5"; rruns=5; fi
    rdir="$work/remote" big="$work/remote-big" s3dir="$work/remote/s3"
    mnt="$work/remote/mnt" out="$work/remote/out" ak=AKBENCH sk=bench-secret-key
    local shaper="$repo/target/release/lazysnap-shaper" server="$repo/target/release/examples/s3_server"
    export LAZYSNAP_STATE_DIR="$work/state"
    # Readers hold no credential: nothing AWS_* in this shell's environment.
    local v
    for v in $(compgen -e | grep '^AWS_' || true); do unset "$v"; done
    trap remote_cleanup EXIT
    rm -rf "$rdir"; mkdir -p "$s3dir/bench" "$mnt" "$big"
    remote_mnts=("$mnt")

    # 1 GiB of low-compressibility data (kept between runs).
    if [ "$(stat -c %s "$big/big.bin" 2>/dev/null || echo 0)" != 1073741824 ]; then
        echo "== remote: writing 1 GiB from /dev/urandom"
        head -c 1073741824 /dev/urandom > "$big/big.bin"
    fi

    "$server" "$s3dir" 0 "$ak" "$sk" > "$rdir/s3.log" 2>&1 &
    remote_pids+=($!)
    s3addr=$(wait_listening "$rdir/s3.log" "$!")
    "$shaper" --upstream "$s3addr" --listen 127.0.0.1:0 --rtt 20ms --bandwidth 1Gbit > "$rdir/shaper.log" 2>&1 &
    remote_pids+=($!)
    link=$(wait_listening "$rdir/shaper.log" "$!")
    echo "== remote: S3 server at $s3addr, shaper at $link (20 ms RTT, 1 Gbit/s)"
    local t
    t=$(now); with_s3 "$s3addr" "$bin" create "$tree" --store s3://bench/snaps --name next >/dev/null
    echo "== remote: created next in $(since "$t") s"
}

# with_s3 ENDPOINT CMD...: CMD with the S3 credentials, against ENDPOINT.
with_s3() {
    local ep=$1; shift
    env AWS_ENDPOINT_URL="http://$ep" AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" \
        AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true LAZYSNAP_S3_PATH_STYLE=1 "$@"
}

section_remote() {
    remote_up
    local t tool
    t=$(now); with_s3 "$s3addr" "$bin" create "$big" --store s3://bench/snaps --name big >/dev/null
    echo "== remote: created big in $(since "$t") s"
    # Presigned through the shaper's address: every read crosses the link.
    with_s3 "$link" "$bin" presign next --store s3://bench/snaps --expires 2h -o "$rdir/next.json" >/dev/null
    with_s3 "$link" "$bin" presign big --store s3://bench/snaps --expires 2h -o "$rdir/big.json" >/dev/null
    local next_url big_url big_data
    next_url=$(jq -r '.layers[0].url' "$rdir/next.json")
    big_url=$(jq -r '.layers[0].url' "$rdir/big.json")
    # The data frames: everything before the index.
    big_data=$(jq -r '.layers[0].index_offset' "$rdir/big.json")
    case "$big_data" in ''|null) echo "bench.sh: no index_offset in the big spec" >&2; exit 1 ;; esac
    echo "== remote: next $(jq -r '.layers[0].size' "$rdir/next.json") bytes, big $(jq -r '.layers[0].size' "$rdir/big.json") bytes ($big_data of data frames); $rruns runs"

    local r d ex=() st=() rd=() rg=() mr=() fb=() bytes
    for r in $(seq "$rruns"); do
        # 2. Full restore: extract --spec against curl | zstd -d | tar -x
        #    (order alternating, caches dropped, destinations on disk).
        local order="ls curl"; [ $((r % 2)) = 0 ] && order="curl ls"
        for tool in $order; do
            rm -rf "$out"; drop_caches
            if [ "$tool" = ls ]; then
                t=$(now); "$bin" extract --spec "$rdir/next.json" "$out"; ex+=("$(since "$t")")
            else
                mkdir -p "$out"
                t=$(now); curl -sSf "$next_url" | zstd -dq | tar -x -C "$out"; st+=("$(since "$t")")
            fi
        done
        rm -rf "$out"

        # 3. Cold sequential read of the 1 GiB file on a fresh mount, against
        #    one ranged GET of the object's data frames over the same link.
        drop_caches
        "$bin" mount --spec "$rdir/big.json" "$mnt" --read-only >/dev/null
        t=$(now); dd if="$mnt/big.bin" of=/dev/null bs=1M status=none; d=$(since "$t")
        "$bin" umount "$mnt"
        rd+=("$(echo "1073741824 / $d / 1000000" | bc -l)")
        t=$(now)
        bytes=$(curl -sSf -r "0-$((big_data - 1))" -o /dev/null -w '%{size_download}' "$big_url")
        d=$(since "$t")
        [ "$bytes" = "$big_data" ] || { echo "bench.sh: ranged GET gave $bytes bytes, not $big_data" >&2; exit 1; }
        rg+=("$(echo "$bytes / $d / 1000000" | bc -l)")

        # 4. Mount ready (mount returned and ls works), then the first byte
        #    of one small file.
        drop_caches
        t=$(now); "$bin" mount --spec "$rdir/next.json" "$mnt" --read-only >/dev/null; ls "$mnt" >/dev/null; mr+=("$(since "$t")")
        t=$(now); head -c1 "$mnt/package.json" >/dev/null; fb+=("$(since "$t")")
        "$bin" umount "$mnt"
        echo "   run $r: extract ${ex[-1]} s, curl|zstd|tar ${st[-1]} s; read $(printf %.1f "${rd[-1]}") MB/s, GET $(printf %.1f "${rg[-1]}") MB/s; mount ${mr[-1]} s, first byte ${fb[-1]} s"
    done
    remote_cleanup
    trap - EXIT

    local m_ex m_st m_rd m_rg m_mr m_fb r_ex r_rd
    m_ex=$(median "${ex[@]}"); m_st=$(median "${st[@]}")
    m_rd=$(median "${rd[@]}"); m_rg=$(median "${rg[@]}")
    m_mr=$(median "${mr[@]}"); m_fb=$(median "${fb[@]}")
    # Verdicts on the unrounded ratios.
    r_ex=$(echo "$m_ex / $m_st" | bc -l); r_rd=$(echo "$m_rd / $m_rg" | bc -l)
    echo
    echo "| through the shaper, 20 ms RTT / 1 Gbit/s (median of $rruns)          | lazysnap | reference | ratio | target | result |"
    echo "|-------------------------------------------------------------------|----------|-----------|-------|--------|--------|"
    echo "| extract --spec vs curl \| zstd -d \| tar -x, Next.js (s)            | $m_ex | $m_st | $(printf %.2f "$r_ex") | ≤ 1.00 | $(verdict "$r_ex" '<=' 1.00) |"
    echo "| cold read of 1 GiB file, --spec mount vs ranged GET (MB/s)        | $(printf %.1f "$m_rd") | $(printf %.1f "$m_rg") | $(printf %.2f "$r_rd") | ≥ 0.80 | $(verdict "$r_rd" '>=' 0.80) |"
    echo "| mount --spec until ls works, Next.js (s)                          | $m_mr | | | | |"
    echo "| first byte of package.json after mount (s)                        | $m_fb | | | | |"
}

# ---- pod: issue 16's acceptance item 4, through the same link ----
# Topology: the pod is 20 ms / 1 Gbit/s from S3 (the shaper); the signer
# sits next to S3 (its own calls go straight to the server) and next to
# the pod (loopback: a signer in the cluster). Its presigned URLs name the
# shaper (LAZYSNAP_S3_PRESIGN_ENDPOINT), so every pod GET and PUT crosses
# the link. The direct save runs in the pod with credentials, all of it
# over the link.
section_pod() {
    remote_up
    local t token sha saddr r
    token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$token" > "$rdir/token"; chmod 600 "$rdir/token"
    sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
    printf '{"version":1,"tokens":[{"sha256":"%s","prefix":"","rights":"read-write","comment":"bench"}]}\n' "$sha" > "$rdir/tokens.json"
    with_s3 "$s3addr" env LAZYSNAP_S3_PRESIGN_ENDPOINT="http://$link" "$bin" signer --listen 127.0.0.1:0 --store s3://bench/snaps --tokens "$rdir/tokens.json" \
        > "$rdir/signer.out" 2> "$rdir/signer.log" &
    remote_pids+=($!)
    saddr=$(wait_listening "$rdir/signer.out" "$!")
    # pod CMD...: CMD as a pod runs it (a token, no credential).
    pod() { env LAZYSNAP_SIGNER="http://$saddr" LAZYSNAP_TOKEN_FILE="$rdir/token" "$@"; }
    mkdir -p "$rdir/base-src"; echo base > "$rdir/base-src/README"
    with_s3 "$s3addr" "$bin" create "$rdir/base-src" --store s3://bench/snaps --name base >/dev/null
    with_s3 "$link" "$bin" presign next --store s3://bench/snaps --expires 2h -o "$rdir/next.json" >/dev/null
    # (A long-running signer has its connections to S3 open: warm it.)
    pod "$bin" inspect next >/dev/null
    echo "== pod: signer at $saddr; $rruns runs"

    local direct=() signed=() mspec=() msig=() up
    for r in $(seq "$rruns"); do
        # 1. A 1 GiB save, straight to s3:// and through the signer (order
        #    alternating): the change is written into the mount untimed.
        local order="direct signer"; [ $((r % 2)) = 0 ] && order="signer direct"
        for how in $order; do
            rm -rf "$rdir/upper"
            if [ "$how" = direct ]; then
                with_s3 "$link" "$bin" mount base "$mnt" --store s3://bench/snaps --upper "$rdir/upper" >/dev/null
            else
                pod "$bin" mount base "$mnt" --upper "$rdir/upper" >/dev/null
            fi
            cp "$big/big.bin" "$mnt/big.bin"; sync
            if [ "$how" = direct ]; then
                t=$(now); with_s3 "$link" "$bin" save "$mnt" --name "d$r" >/dev/null; direct+=("$(since "$t")")
            else
                t=$(now); pod "$bin" save "$mnt" --name "p$r" >/dev/null; signed+=("$(since "$t")")
            fi
            "$bin" umount "$mnt"
        done
        with_s3 "$s3addr" "$bin" rm "d$r" --store s3://bench/snaps >/dev/null
        with_s3 "$s3addr" "$bin" rm "p$r" --store s3://bench/snaps >/dev/null

        # 3. Mount ready (mount returned and ls works), from a spec and
        #    through the signer (order alternating).
        order="spec signer"; [ $((r % 2)) = 0 ] && order="signer spec"
        for how in $order; do
            drop_caches
            if [ "$how" = spec ]; then
                t=$(now); "$bin" mount --spec "$rdir/next.json" "$mnt" --read-only >/dev/null; ls "$mnt" >/dev/null; mspec+=("$(since "$t")")
            else
                t=$(now); pod "$bin" mount next "$mnt" --read-only >/dev/null; ls "$mnt" >/dev/null; msig+=("$(since "$t")")
            fi
            "$bin" umount "$mnt"
        done
        echo "   run $r: save 1 GiB direct ${direct[-1]} s, through the signer ${signed[-1]} s; mount ready from a spec ${mspec[-1]} s, through the signer ${msig[-1]} s"
    done

    # 2. A one-file change in the Next.js workspace, saved through the signer.
    rm -rf "$rdir/upper"
    pod "$bin" mount next "$mnt" --upper "$rdir/upper" >/dev/null
    echo '{"name": "bench-edit"}' > "$mnt/package.json"
    pod "$bin" save "$mnt" --name next-edit >/dev/null
    "$bin" umount "$mnt"
    local size index
    size=$(pod "$bin" inspect next-edit --json | jq -r .size)
    index=$(pod "$bin" inspect next-edit --json | jq -r .index_size)
    up=$((size - index))
    remote_cleanup
    trap - EXIT

    local m_d m_s m_ms m_mg r_save d_mount
    m_d=$(median "${direct[@]}"); m_s=$(median "${signed[@]}")
    m_ms=$(median "${mspec[@]}"); m_mg=$(median "${msig[@]}")
    # Speed ratio: signer speed / direct speed = direct time / signer time.
    r_save=$(echo "$m_d / $m_s" | bc -l)
    d_mount=$(echo "($m_mg - $m_ms) * 1000" | bc -l)
    echo
    echo "| pod mode, 20 ms RTT / 1 Gbit/s to S3 (median of $rruns)        | signer | reference | ratio / delta | target | result |"
    echo "|--------------------------------------------------------------|--------|-----------|---------------|--------|--------|"
    echo "| save of 1 GiB, through the signer vs straight to s3:// (s)   | $m_s | $m_d | $(printf %.2f "$r_save") | ≥ 0.80 | $(verdict "$r_save" '>=' 0.80) |"
    echo "| one-file change in Next.js: uploaded beyond the index (B)    | $up | index $index | | ≤ 1000000 | $(verdict "$up" '<=' 1000000) |"
    echo "| mount ready through the signer vs from a spec (s; delta ms)  | $m_mg | $m_ms | $(printf %.1f "$d_mount") ms | ≤ 20 ms | $(verdict "$d_mount" '<=' 20) |"
}

for s in $sections; do
    "section_$s"
done
