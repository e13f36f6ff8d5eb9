#!/usr/bin/env bash
# HTTP servers already running on this machine, loaded in turn by wrk (one thread, 64
# connections, on CPU 1 by default), rounds interleaved: each run's requests/s and the server's CPU
# time per request (user + system from /proc/PID/stat over the measured run). On a noisy shared
# host the CPU time per request moves less than the rate, so an A/B of two builds of one server
# reads it first. Prints each round, then per server the medians and the medians of its
# per-round ratios to the server named before it and to the first. `client_cpu_pct` is wrk's own
# CPU time over its run, in % of one CPU: near 100, the client and not the server sets the rate.
#
#   Benchmarks/scripts/server-cpu-ab.sh [--rounds 7] [--seconds 2] [--connections 64] [--cpu 1] [--tls]
#       [--close] [--post FILE] NAME=PORT:PATH NAME=PORT:PATH ...
#
# --tls: the servers speak HTTPS (wrk does not check certificates). --close: a new connection per
# request (`Connection: close`; with --tls, a full handshake per request). --post FILE: each
# request is a POST with FILE as its body (application/octet-stream), e.g. uring-api's and
# Hummingbird's `POST /echo`. A server must be one
# process (nginx: `master_process off;`): the first process listening on the port is measured.
#
# Example (two builds of uring-http, each started on CPU 0 first):
#   taskset -c 0 .build/release/uring-http --port 8081 --root /tmp/www &
#   taskset -c 0 /tmp/old/uring-http --port 8082 --root /tmp/www &
#   Benchmarks/scripts/server-cpu-ab.sh new=8081:/4k.bin old=8082:/4k.bin
set -euo pipefail

rounds=7
seconds=2
connections=64
cpu=1
scheme=http
headers=()
servers=()
post=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --cpu) cpu=$2; shift 2 ;;
        --tls) scheme=https; shift ;;
        --close) headers=(-H "Connection: close"); shift ;;
        --post) post=$2; shift 2 ;;
        *=*:*) servers+=("$1"); shift ;;
        *) sed -n "2,22p" "$0" >&2; exit 64 ;;
    esac
done
[ ${#servers[@]} -ge 1 ] || { sed -n "2,22p" "$0" >&2; exit 64; }
command -v wrk > /dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

# The CPU time (clock ticks) of the process listening on port $1.
pid_of() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results=$(mktemp)
script=$(mktemp --suffix .lua)
trap 'rm -f "$results" "$script"' EXIT
if [ -n "$post" ]; then
    [ -r "$post" ] || { echo "cannot read $post" >&2; exit 1; }
    cat > "$script" <<LUA
wrk.method = "POST"
local f = io.open("$post", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
    headers+=(-s "$script")
fi
for round in $(seq "$rounds"); do
    line="round=$round"
    for spec in "${servers[@]}"; do
        name=${spec%%=*}; rest=${spec#*=}; port=${rest%%:*}; path=${rest#*:}
        pid=$(pid_of "$port")
        [ -n "$pid" ] || { echo "nothing listens on port $port" >&2; exit 1; }
        url="$scheme://127.0.0.1:$port$path"
        taskset -c "$cpu" wrk -t1 -c"$connections" -d1s "${headers[@]}" "$url" > /dev/null  # warm-up
        before=$(ticks "$pid")
        # wrk's own user + system time comes last (bash's `time`, to standard error).
        out=$({ TIMEFORMAT='client_seconds %R %U %S'; time taskset -c "$cpu" wrk -t1 -c"$connections" \
            -d"${seconds}s" "${headers[@]}" "$url"; } 2>&1)
        after=$(ticks "$pid")
        requests=$(awk '/requests in/{print $1}' <<<"$out")
        rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        [ -n "$rate" ] && [ -n "$requests" ] || { echo "wrk failed against $name: $out" >&2; exit 1; }
        us=$(python3 -c "print(round(($after - $before) / $hz * 1e6 / max($requests, 1), 2))")
        client=$(awk '/^client_seconds/ && $2 > 0 {printf "%.0f", 100 * ($3 + $4) / $2}' <<<"$out")
        client=${client:-0}
        line="$line $name rps=$rate us_per_request=$us client_cpu_pct=$client"
        echo "$round $name $rate $us $client" >> "$results"
    done
    echo "$line"
done
python3 - "$results" "${servers[0]%%=*}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
first = sys.argv[2]
rate = {(r, n): float(v) for r, n, v, _, _ in rows}
cpu = {(r, n): float(u) for r, n, _, u, _ in rows}
client = {(r, n): float(c) for r, n, _, _, c in rows}
rounds = sorted({r for r, _ in rate}, key=int)
names = list(dict.fromkeys(n for _, n in rate))
# Each server against the one named before it (old=… new=… pairs read as new/old), and against
# the first.
for i, n in enumerate(names):
    line = (f"server={n} rounds={len(rounds)} rps={statistics.median(rate[(r, n)] for r in rounds):.0f}"
            f" us_per_request={statistics.median(cpu[(r, n)] for r in rounds):.2f}"
            f" client_cpu_pct={statistics.median(client[(r, n)] for r in rounds):.0f}")
    for base in dict.fromkeys([names[i - 1], first] if i > 0 else []):
        rr = [rate[(r, n)] / rate[(r, base)] for r in rounds]
        cr = [cpu[(r, n)] / cpu[(r, base)] for r in rounds]
        line += (f" rps_ratio_to_{base}={statistics.median(rr):.3f} ({min(rr):.2f}-{max(rr):.2f})"
                 f" cpu_ratio_to_{base}={statistics.median(cr):.3f} ({min(cr):.2f}-{max(cr):.2f})")
    print(line)
PY
