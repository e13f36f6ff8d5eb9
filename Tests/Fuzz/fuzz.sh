#!/usr/bin/env bash
# Fuzzes one target with libFuzzer (plus AddressSanitizer) for a given time.
#
#   Tests/Fuzz/fuzz.sh http    [SECONDS] [libFuzzer flags…]   # HTTP request-head parser, paths, dates
#   Tests/Fuzz/fuzz.sh chunked [SECONDS] [libFuzzer flags…]   # chunked request-body decoder
#   Tests/Fuzz/fuzz.sh address [SECONDS] [libFuzzer flags…]   # SocketAddress parsing
#
# Builds into .build-fuzz/, grows a working corpus in .build-fuzz/corpus/TARGET (seeded from the
# committed Tests/Fuzz/Corpus/TARGET, which is left untouched), writes any crashing input to
# .build-fuzz/artifacts/, and ends with one line:
#   fuzz_target=http seconds=600 runs=… corpus=… crashes=0
# Exit status: 0 when the time ran out without a crash, non-zero otherwise. To replay a crash:
#   .build-fuzz/release/uring-fuzz-http .build-fuzz/artifacts/crash-…
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/opt/swift/usr/bin:$PATH"

target=${1:?usage: Tests/Fuzz/fuzz.sh http|chunked|address [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
case "$target" in
    http | chunked | address) ;;
    *) echo "unknown target '$target' (http, chunked or address)" >&2; exit 2 ;;
esac

swift build -c release --product "uring-fuzz-$target" --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DURING_FUZZING
corpus=.build-fuzz/corpus/$target
mkdir -p "$corpus" .build-fuzz/artifacts
log=.build-fuzz/fuzz-$target.log
status=0
".build-fuzz/release/uring-fuzz-$target" "$corpus" "Tests/Fuzz/Corpus/$target" \
    -max_total_time="$seconds" -artifact_prefix=.build-fuzz/artifacts/ -print_final_stats=1 "$@" \
    >"$log" 2>&1 || status=$?
tail -n 25 "$log"
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
crashes=$(grep -c -E '^==[0-9]+==ERROR|^SUMMARY: libFuzzer|deadly signal|Fatal error' "$log" || true)
echo "fuzz_target=$target seconds=$seconds runs=${runs:-0} corpus=$(ls "$corpus" | wc -l) crashes=$crashes"
exit "$status"
