#!/usr/bin/env bash
# Multi-core scaling on a many-core machine without Swift (the `device` machine; see
# ../shared/notes/DEVICE.md). Two steps:
#
#   Benchmarks/scripts/device-scaling.sh prepare   # here: static builds + C tools into .device/
#   .device/device-scaling.sh run                  # there (one call carrying .device): prints results
#
# `run` measures (1) echo with the server on N = 1, 2, 4, 8 cores against eight echo-load processes
# on cores 8-15 (../shared/bench/device-echo-scale.sh: uring-echo --threads N, reuse-port and
# hand-off distribution, and N independent C liburing servers as the ceiling), and (2) 4 KiB
# random page-cache reads with uring-bench read --rings N for N = 1, 2, 4, 8, 16.
set -euo pipefail
cmd=${1:-}
if [ "$cmd" = prepare ]; then
    here=$(cd "$(dirname "$0")/../.." && pwd)
    shared=${SHARED_BENCH:-$here/../shared/bench}
    cd "$here"
    mkdir -p /tmp/staticlibs .device
    cp /usr/lib/x86_64-linux-gnu/liburing.a /tmp/staticlibs/
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo /.device/ >> .git/info/exclude
    swift build -c release --static-swift-stdlib -Xlinker -L/tmp/staticlibs --product uring-echo
    swift build -c release --static-swift-stdlib -Xlinker -L/tmp/staticlibs --product uring-bench
    bin=$(swift build -c release --show-bin-path)
    cp "$bin/uring-echo" "$bin/uring-bench" .device/
    [ -f "$bin/libMallocInterposerSwift.so" ] && cp "$bin/libMallocInterposerSwift.so" .device/ || true
    gcc -O2 -static -o .device/echo-load "$shared/echo-load.c"
    gcc -O2 -static -o .device/ref-echo-uring "$shared/ref-echo-uring.c" -luring
    cp "$shared/device-echo-scale.sh" .device/
    cp "$0" .device/device-scaling.sh
    du -sh .device
    echo "now: run (carry .device): .device/device-scaling.sh run"
    exit 0
fi
if [ "$cmd" = run ]; then
    dir=$(cd "$(dirname "$0")" && pwd)
    echo "== machine: $(nproc) cores, $(uname -r)"
    echo "== echo scaling (servers on cores 0..N-1, eight echo-load x 32 conns x 64 B on cores 8-15)"
    bash "$dir/device-echo-scale.sh" "$dir" \
        "uring=$dir/uring-echo --host 127.0.0.1 --port {port} --threads {threads}" \
        "uring-handoff=$dir/uring-echo --host 127.0.0.1 --port {port} --threads {threads} --distribute accept"
    echo "== 4 KiB random reads from the page cache, N rings x 32 in flight"
    file=/tmp/uring-bench/testfile
    for n in 1 2 4 8 16; do
        "$dir/uring-bench" read --path "$file" --pattern random --block 4096 --concurrency 32 --rings "$n" \
            --seconds 3 --no-baseline
    done
    echo "== cross-ring hand-off: sleeping rings, then rings that spin 50 us before sleeping"
    for spin in 0 50 0 50 0 50; do "$dir/uring-bench" handoff --seconds 2 --spin-us "$spin"; done
    exit 0
fi
echo "usage: $0 prepare|run" >&2
exit 64
