#!/usr/bin/env bash
# Is uring-bench's load generator the bottleneck? (issue 18) It (its default uring engine: one thread
# on an io_uring of its own; its epoll engine, the default where io_uring is denied; and its ring
# engine: a task per connection on a swift-uring ring) and the harness's C load generator
# (echo-load, an epoll client, with and without --spin) load the harness's C reference echo server
# (ref-echo-uring, liburing, multishot receive into a buffer ring) in turn: the server on CPU 0, the
# load generator on CPU 1, one core each, rounds interleaved with the order rotating. Prints each
# run, then the medians, the median of the per-round ratios uring-bench / echo-load, and how busy
# each load generator kept the server (its CPU time over the window, % of one core: a load
# generator that is not the bottleneck keeps it near 100 %).
#
#   Benchmarks/scripts/loadgen-compare.sh [--harness DIR] [--rounds 5] [--seconds 3] [--warmup 1]
#       [--settings 1x64,64x64,64x4096] [--bin PATH/TO/uring-bench]
#       [--loaders echo-load,echo-load-spin,uring-bench,uring-bench-epoll,uring-bench-ring]
#
# DIR holds echo-load.c and ref-echo-uring.c (default: ../shared/bench beside the repository);
# they are compiled with gcc into a temporary directory. The harness is not part of this
# repository: this script only runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."

harness=../shared/bench
rounds=5
seconds=3
warmup=1
settings=1x64,64x64,64x4096
bin=.build/release/uring-bench
loader_list=echo-load,echo-load-spin,uring-bench,uring-bench-epoll,uring-bench-ring
while [ $# -gt 0 ]; do
    case "$1" in
        --harness) harness=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --settings) settings=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --loaders) loader_list=$2; shift 2 ;;
        *) sed -n '2,18p' "$0" >&2; exit 64 ;;
    esac
done
[ -x "$bin" ] || { echo "build it first: swift build -c release --product uring-bench" >&2; exit 1; }
for source in echo-load.c ref-echo-uring.c; do
    [ -r "$harness/$source" ] || { echo "no $harness/$source (use --harness DIR)" >&2; exit 1; }
done
work=$(mktemp -d)
server_pid=""
cleanup() { [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -o "$work/echo-load" "$harness/echo-load.c"
gcc -O2 -o "$work/ref-echo-uring" "$harness/ref-echo-uring.c" -luring
port=$((20000 + RANDOM % 20000))
taskset -c 0 "$work/ref-echo-uring" --port "$port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }
results="$work/results"
: > "$results"
IFS=, read -r -a sets <<<"$settings"
IFS=, read -r -a loaders <<<"$loader_list"
for round in $(seq "$rounds"); do
    for setting in "${sets[@]}"; do
        conns=${setting%x*}
        size=${setting#*x}
        shift_by=$(( (round - 1) % ${#loaders[@]} ))
        order=("${loaders[@]:$shift_by}" "${loaders[@]:0:$shift_by}")
        for loader in "${order[@]}"; do
            case $loader in
                echo-load|echo-load-spin)
                    spin=""; [ "$loader" = echo-load-spin ] && spin=--spin
                    line=$(taskset -c 1 "$work/echo-load" --port "$port" --conns "$conns" --size "$size" \
                        --seconds "$seconds" --warmup "$warmup" --server-pid "$server_pid" $spin)
                    rate=$(field rps "$line"); errors=$(field verify_errors "$line")
                    busy=$(field server_cpu_pct "$line") ;;
                uring-bench|uring-bench-epoll|uring-bench-ring)
                    engine=uring; [ "$loader" = uring-bench-epoll ] && engine=epoll
                    [ "$loader" = uring-bench-ring ] && engine=ring
                    line=$(taskset -c 1 "$bin" echo --target "127.0.0.1:$port" --connections "$conns" \
                        --size "$size" --seconds "$seconds" --warmup "$warmup" --server-pid "$server_pid" \
                        --engine "$engine")
                    rate=$(field requests_per_sec "$line"); errors=$(field verify_errors "$line")
                    busy=$(python3 -c "print(round($(field server_cpu_us_per_request "$line") * $rate / 1e4, 1))") ;;
            esac
            echo "round=$round setting=$setting loader=$loader rate=$rate server_busy_pct=$busy verify_errors=$errors"
            echo "$round $setting $loader $rate $busy" >> "$results"
        done
    done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
rate = {(r, s, l): float(v) for r, s, l, v, _ in rows}
busy = {(r, s, l): float(b) for r, s, l, _, b in rows}
settings = sorted({s for _, s, _ in rate}, key=lambda s: [int(x) for x in s.split("x")])
rounds = sorted({r for r, _, _ in rate})
names = tuple(l for l in ("echo-load", "echo-load-spin", "uring-bench", "uring-bench-epoll", "uring-bench-ring")
              if any(k[2] == l for k in rate))
print("\nmedian requests/s, server busy %, and uring-bench's per-round ratios (median, min-max)")
for s in settings:
    med = {l: statistics.median(rate[(r, s, l)] for r in rounds) for l in names}
    load = {l: statistics.median(busy[(r, s, l)] for r in rounds) for l in names}
    def ratio(a, b):
        values = [rate[(r, s, a)] / rate[(r, s, b)] for r in rounds]
        return statistics.median(values), min(values), max(values)
    print(f"{s}: " + ", ".join(f"{l} {med[l]:.0f} ({load[l]:.0f} %)" for l in names))
    pairs = [(a, b, key) for a, b, key in (("uring-bench", "echo-load", "ratio_to_echo_load"),
                                           ("uring-bench", "echo-load-spin", "ratio_to_echo_load_spin"),
                                           ("uring-bench-epoll", "echo-load", "epoll_ratio_to_echo_load"),
                                           ("uring-bench-ring", "echo-load-spin", "ring_ratio_to_echo_load_spin"))
             if a in names and b in names]
    for a, b, _ in pairs:
        m, lo, hi = ratio(a, b)
        print(f"    {a} / {b}: {m:.3f}x ({lo:.2f}-{hi:.2f})")
    print(f"scenario=loadgen-compare setting={s} rounds={len(rounds)}"
          + "".join(f" {l.replace('-', '_')}_rps={med[l]:.0f} {l.replace('-', '_')}_server_busy_pct={load[l]:.0f}" for l in names)
          + "".join(f" {key}={ratio(a, b)[0]:.3f}" for a, b, key in pairs))
PY
