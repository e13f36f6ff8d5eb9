#!/usr/bin/env bash
# Checks `uring-bench --report` (issue 18): a short run of the whole comparison (1 round of 0.5 s
# runs) must write an HTML page with one SVG chart per workload, each with a bar group for every
# system, and JSON that parses with every workload and system present and no errors; the page's
# embedded JSON must be report.json's. With --browser (or when chromium is installed), the page is
# also rendered by headless chromium and the screenshot must show the charts' colours.
#
#   Benchmarks/scripts/check-report.sh [--bin PATH/TO/uring-bench] [--browser|--no-browser] [--keep DIR]
#
# The peers (Benchmarks/Peers) must be built, or uring-bench builds them first.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=.build/debug/uring-bench
browser=auto
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$2; shift 2 ;;
        --browser) browser=yes; shift ;;
        --no-browser) browser=no; shift ;;
        --keep) keep=$2; shift 2 ;;
        *) echo "usage: $0 [--bin PATH] [--browser|--no-browser] [--keep DIR]" >&2; exit 64 ;;
    esac
done

dir=${keep:-$(mktemp -d)}
mkdir -p "$dir"
[ -n "$keep" ] || trap 'rm -rf "$dir"' EXIT
"$bin" --report "$dir" --rounds 1 --seconds 0.5 --warmup 0.1 > "$dir/stdout.txt"
cat "$dir/stdout.txt"

python3 - "$dir" <<'PY'
import html.parser, json, re, sys, xml.etree.ElementTree as ET

directory = sys.argv[1]
expected = {
    "read-4k-random-1": ["swift-uring", "pread", "foundation", "niofs"],
    "read-4k-random-32": ["swift-uring", "pread", "foundation", "niofs"],
    "read-128k-sequential": ["swift-uring", "pread", "foundation", "niofs"],
    "echo-1x64": ["swift-uring", "nio-handler", "nio-async"],
    "echo-64x64": ["swift-uring", "nio-handler", "nio-async"],
    "echo-64x4k": ["swift-uring", "nio-handler", "nio-async"],
    "http-hello-64": ["swift-uring", "hummingbird"],
}
problems = []
report = json.load(open(f"{directory}/report.json"))
workloads = {w["id"]: w for w in report["workloads"]}
if set(workloads) != set(expected):
    problems.append(f"workloads in the JSON: {sorted(workloads)}")
for wid, systems in expected.items():
    found = {s["system"]: s for s in workloads.get(wid, {}).get("systems", [])}
    if sorted(found) != sorted(systems):
        problems.append(f"{wid}: systems {sorted(found)}, expected {sorted(systems)}")
    for name, s in found.items():
        if not s["per_sec_median"] or s["per_sec_median"] <= 0:
            problems.append(f"{wid}/{name}: no rate")
        if s["errors"]:
            problems.append(f"{wid}/{name}: {s['errors']} error(s)")
        if len(s["rounds"]) != report["rounds"]:
            problems.append(f"{wid}/{name}: {len(s['rounds'])} round figures")
        if name != "swift-uring" and s["ratio_to_swift_uring"] is None:
            problems.append(f"{wid}/{name}: no ratio to swift-uring")
for key in ["cpu", "kernel", "backend", "liburing", "swift", "swift-nio", "hummingbird"]:
    if not report["machine"].get(key):
        problems.append(f"the machine has no {key}")

page = open(f"{directory}/report.html").read()
svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
if len(svgs) != len(expected):
    problems.append(f"{len(svgs)} SVG charts for {len(expected)} workloads")
for svg in svgs:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    wid = root.get("data-workload")
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("data-system"): g for g in root.iter(ns + "g") if g.get("class") == "system"}
    if sorted(groups) != sorted(expected.get(wid, [])):
        problems.append(f"chart {wid}: bars for {sorted(groups)}")
    for name, g in groups.items():
        rects = {r.get("class"): float(r.get("width")) for r in g.iter(ns + "rect")}
        if not all(rects.get(k, 0) > 0 for k in ("rate", "p50", "p99")):
            problems.append(f"chart {wid}/{name}: bars {rects}")
embedded = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
if not embedded or json.loads(embedded.group(1)) != report:
    problems.append("the page's embedded JSON is not report.json's")
class Checker(html.parser.HTMLParser):
    pass
Checker().feed(page)

stdout = open(f"{directory}/stdout.txt").read()
for wid, systems in expected.items():
    for name in systems:
        if not re.search(rf"^scenario=compare workload={wid} system={name} .*per_sec=[1-9]", stdout, re.M):
            problems.append(f"no scenario=compare line for {wid}/{name}")
if problems:
    print("check-report: FAILED\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"check-report: {len(svgs)} charts, {sum(len(v) for v in expected.values())} systems' figures, JSON and lines: ok")
PY

if [ "$browser" = auto ]; then
    if command -v chromium >/dev/null; then browser=yes; else browser=no; fi
fi
if [ "$browser" = yes ]; then
    # Headless chromium renders the page (at half scale: the check below decodes the PNG in
    # Python); the screenshot must hold swift-uring's orange (#e8590c) and the peers' blue
    # (#4c6ef5) bars.
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=0.5 \
        --window-size=1000,6000 \
        --screenshot="$dir/page.png" "file://$(cd "$dir" && pwd)/report.html" > "$dir/chromium.log" 2>&1 || {
        cat "$dir/chromium.log"
        echo "check-report: chromium could not render the page" >&2
        exit 1
    }
    python3 - "$dir/page.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, chunks = 8, {}
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    chunks.setdefault(kind, []).append(data[pos + 8:pos + 8 + length])
    pos += 12 + length
width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
assert depth == 8 and colour in (2, 6), f"PNG depth {depth}, colour type {colour}"
channels = 3 if colour == 2 else 4
raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
stride = width * channels
previous = bytearray(stride)
counts = {(0xE8, 0x59, 0x0C): 0, (0x4C, 0x6E, 0xF5): 0}
offset = 0
for _ in range(height):
    kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
    offset += 1 + stride
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b = previous[i]
        c = previous[i - channels] if i >= channels else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, channels):
        key = tuple(line[x:x + 3])
        if key in counts: counts[key] += 1
    previous = line
print(f"check-report: chromium rendered {width}x{height}; swift-uring bars {counts[(0xE8, 0x59, 0x0C)]} px,"
      f" peers' bars {counts[(0x4C, 0x6E, 0xF5)]} px")
if min(counts.values()) < 500:
    sys.exit("check-report: the screenshot does not show the charts")
PY
fi
echo "check-report: ok"
