#!/usr/bin/env bash
# Compares uring-http with nginx (and Hummingbird 2, if built) under wrk on loopback: the server
# pinned to CPU 0, wrk (one thread, 64 connections) pinned to CPU 1, rounds interleaved.
#
#   Benchmarks/scripts/http-compare.sh [--rounds 3] [--seconds 5] [--warmup 1] [--hb PATH/TO/hb-hello] [--tls]
#       [--settings hello,64k]   (a subset of the settings below)
#       [--also NAME=PATH]       (another uring-http build, e.g. the one before a change, run as
#                                 server NAME in the same rounds; repeatable)
#
# --tls: HTTPS (TLS 1.3, a P-256 certificate made with the openssl command, the same for both
# servers; uring-http --tls-certificate/--tls-key, nginx `listen ... ssl`), with the settings
# "hello", "64k" (a 64 KiB file) and "handshake" (hello with `Connection: close`: a new
# connection, so a full handshake, per request). Hummingbird is not run with --tls.
#
# --api: the handler API (issue 17): uring-api (Sources/Examples/APIServer) against nginx, the
# fused uring-http where it can answer, and Hummingbird 2 serving the same endpoints
# (Benchmarks/Peers' uring-peers-http, built on first use). Settings:
#   plaintext  GET /plaintext (nginx: `return 200`; uring-http --hello)
#   pipelined  the same, 16 requests pipelined per connection (as TechEmpower runs it)
#   json       GET /json, a small Codable object (nginx: `return 200` of the same bytes)
#   4k 64k 1m  a static file (uring-api: /files/, its FileHandler; nginx: sendfile on)
#   256m       a 256 MiB file downloaded by 4 connections at once (compared in bytes/s)
#   echo1m     POST /echo of 1 MiB bodies, echoed back (uring-api and Hummingbird only)
# Ratios are to nginx, or to Hummingbird where nginx does not run the setting; the summary also
# gives uring-api against Hummingbird.
#
# Needs wrk and nginx (apt-get install -y wrk nginx) and a release build of uring-http
# (swift build -c release --product uring-http; with --api, --product uring-api as well).
# Settings: "hello" (uring-http --hello, nginx `return 200 "Hello, World!"`, hb-hello) and "4k"
# (a 4 KiB static file from each: nginx with sendfile, hb-hello --root through FileMiddleware).
# Prints one line per run and a median table.
set -euo pipefail
rounds=3
seconds=5
warmup=1  # an unmeasured wrk run first, for every server alike (connections, caches, first-use costs)
hb=""
tls=0
api=0
also=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tls) tls=1; shift ;;
        --api) api=1; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --hb) hb=$2; shift 2 ;;
        --settings) only=$2; shift 2 ;;
        --also) also+=("$2"); shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
here=$(cd "$(dirname "$0")/../.." && pwd)
uring="$here/.build/release/uring-http"
[ -x "$uring" ] || { echo "build first: swift build -c release --product uring-http" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx" >&2; exit 1; }
api_binary="$here/.build/release/uring-api"
hbapi="$here/Benchmarks/Peers/.build/release/uring-peers-http"
if [ "$api" = 1 ]; then
    [ -x "$api_binary" ] || { echo "build first: swift build -c release --product uring-api" >&2; exit 1; }
    if [ ! -x "$hbapi" ]; then
        echo "building the Hummingbird peer (Benchmarks/Peers, uring-peers-http; minutes the first time)" >&2
        swift build -c release --package-path "$here/Benchmarks/Peers" --product uring-peers-http >&2
    fi
fi

work=$(mktemp -d /tmp/http-compare.XXXXXX)
mkdir -p "$work/www" "$work/nginx"
head -c 4096 /dev/urandom > "$work/www/4k.bin"
head -c 65536 /dev/urandom > "$work/www/64k.bin"
head -c 1048576 /dev/urandom > "$work/www/1m.bin"
if [ "$api" = 1 ]; then
    head -c 268435456 /dev/urandom > "$work/www/256m.bin"
    head -c 1048576 /dev/urandom > "$work/body-1m.bin"
    cat > "$work/pipeline.lua" <<'LUA'
init = function(args)
    local depth = tonumber(args[1]) or 1
    local r = {}
    for i = 1, depth do r[i] = wrk.format(nil) end
    req = table.concat(r)
end
request = function() return req end
LUA
    cat > "$work/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$work/body-1m.bin", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
fi
scheme=http
listen_extra=""
ssl_lines=""
tls_args=()
if [ "$tls" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
        -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
    scheme=https
    listen_extra=" ssl"
    ssl_lines="ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
    tls_args=(--tls-certificate "$work/cert.pem" --tls-key "$work/key.pem")
    hb=""
fi
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 10000000;
    default_type application/octet-stream;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:PORT$listen_extra;
        $ssl_lines
        root $work/www;
        location = /hello { default_type text/plain; return 200 "Hello, World!"; }
        location = /json { default_type application/json; return 200 '{"message":"Hello, World!"}'; }
    }
}
CONF

port=9700
start_server() {  # name setting -> sets pid, url
    port=$((port + 1))
    # A port nothing listens on (a server left over from an interrupted run would answer instead).
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    case "$1" in
        nginx)
            sed "s/PORT/$port/" "$work/nginx/nginx.conf" > "$work/nginx/run.conf"
            taskset -c 0 nginx -c "$work/nginx/run.conf" -p "$work/nginx" >/dev/null 2>&1 & pid=$!
            case "$2" in
                hello|handshake|plaintext|pipelined) url="$scheme://127.0.0.1:$port/hello" ;;
                json) url="$scheme://127.0.0.1:$port/json" ;;
                *) url="$scheme://127.0.0.1:$port/$2.bin" ;;
            esac ;;
        api|hbapi)  # uring-api and its Hummingbird twin serve the same paths
            local binary="$api_binary"
            [ "$1" = hbapi ] && binary="$hbapi"
            taskset -c 0 "$binary" --root "$work/www" --port $port >/dev/null 2>&1 & pid=$!
            case "$2" in
                plaintext|pipelined) url="http://127.0.0.1:$port/plaintext" ;;
                json) url="http://127.0.0.1:$port/json" ;;
                echo1m) url="http://127.0.0.1:$port/echo" ;;
                *) url="http://127.0.0.1:$port/files/$2.bin" ;;
            esac ;;
        uring|also-*)
            local binary="$uring"
            [ "${1#also-}" != "$1" ] && binary="${also_paths[${1#also-}]}"
            case "$2" in
                hello|handshake|plaintext|pipelined)
                    taskset -c 0 "$binary" --hello --port $port "${tls_args[@]}" >/dev/null 2>&1 & pid=$!
                    url="$scheme://127.0.0.1:$port/hello" ;;
                *)
                    taskset -c 0 "$binary" --root "$work/www" --port $port "${tls_args[@]}" >/dev/null 2>&1 & pid=$!
                    url="$scheme://127.0.0.1:$port/$2.bin" ;;
            esac ;;
        hummingbird)
            if [ "$2" = hello ]; then
                taskset -c 0 "$hb" --port $port >/dev/null 2>&1 & pid=$!
                url="http://127.0.0.1:$port/hello"  # its route is /**, which does not match /
            else
                taskset -c 0 "$hb" --port $port --root "$work/www" >/dev/null 2>&1 & pid=$!
                url="http://127.0.0.1:$port/4k.bin"
            fi ;;
    esac
    for _ in $(seq 200); do
        curl -sk -o /dev/null "${url%/echo}/" && return 0
        sleep 0.05
    done
    echo "server $1 did not start" >&2
    return 1
}

servers="nginx uring"
declare -A also_paths=()
for entry in "${also[@]}"; do
    also_paths[${entry%%=*}]=${entry#*=}
    servers="$servers also-${entry%%=*}"
done
[ -n "$hb" ] && servers="$servers hummingbird"
settings="hello 4k"
[ "$tls" = 1 ] && settings="hello 64k handshake"
if [ "$api" = 1 ]; then
    servers="nginx uring api hbapi"
    for entry in "${also[@]}"; do servers="$servers also-${entry%%=*}"; done
    settings="plaintext pipelined json 4k 64k 1m 256m echo1m"
fi
[ -n "${only:-}" ] && settings="${only//,/ }"
# Whether a server runs a setting.
runs() {  # server setting
    case "$1:$2" in
        nginx:echo1m) return 1 ;;
        uring:json|uring:echo1m|also-*:json|also-*:echo1m) return 1 ;;
        hbapi:hello|hbapi:handshake) return 1 ;;
    esac
    return 0
}
results="$work/results.txt"
for round in $(seq "$rounds"); do
    for setting in $settings; do
        for server in $servers; do
            runs "$server" "$setting" || continue
            start_server "$server" "$setting"
            extra=()
            connections=64
            [ "$setting" = handshake ] && extra=(-H "Connection: close")
            [ "$setting" = pipelined ] && extra=(-s "$work/pipeline.lua" -- 16)
            [ "$setting" = echo1m ] && extra=(-s "$work/post.lua")
            [ "$setting" = 256m ] && connections=4
            [ "$warmup" != 0 ] && taskset -c 1 wrk -t1 -c$connections -d"${warmup}s" "$url" "${extra[@]}" >/dev/null 2>&1
            out=$(taskset -c 1 wrk -t1 -c$connections -d"${seconds}s" "$url" "${extra[@]}" 2>&1)
            kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
            rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
            # Transfer/sec in bytes (wrk prints KB, MB or GB).
            bps=$(echo "$out" | awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=v+0;
                m = (u=="GB") ? 1073741824 : (u=="MB") ? 1048576 : (u=="KB") ? 1024 : 1; printf "%.0f", n*m}')
            errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
            echo "round $round $setting $server rps=$rps bytes_per_sec=$bps $errors"
            value=$rps
            [ "$setting" = 256m ] && value=$bps
            echo "$setting $server $round $value" >> "$results"
        done
    done
done

python3 - "$results" "$servers" "$settings" <<'PY'
import sys, statistics, collections
rows = [l.split() for l in open(sys.argv[1])]
servers = sys.argv[2].split()
settings = sys.argv[3].split()
data = collections.defaultdict(dict)
for setting, server, rnd, rps in rows:
    data[(setting, server)][rnd] = float(rps)
print("\nmedian requests/s, bytes/s for 256m (paired ratio to nginx, or to hbapi where nginx does not run; "
      "median over rounds)")
for setting in settings:
    base = "nginx" if data.get((setting, "nginx")) else "hbapi"
    line = [setting.ljust(9)]
    for server in servers:
        values = data.get((setting, server))
        if not values or not data.get((setting, base)):
            continue
        ratios = [values[r] / data[(setting, base)][r] for r in values if r in data[(setting, base)]]
        line.append("%s %.0f (%.2fx)" % (server, statistics.median(values.values()), statistics.median(ratios)))
    if data.get((setting, "api")) and data.get((setting, "hbapi")) and base != "hbapi":
        a, h = data[(setting, "api")], data[(setting, "hbapi")]
        line.append("api/hbapi %.2fx" % statistics.median([a[r] / h[r] for r in a if r in h]))
    print("  ".join(line))
PY
rm -rf "$work"
