#!/usr/bin/env bash
# Where a point lookup's time goes: `perf record` on the lakeward server
# while pgbench runs prepared point lookups as the analyst, then the hottest
# symbols. Run after bench/run.sh, which leaves the data, the keys and the
# server configuration in BENCH_DIR.
#
#   bench/profile-point.sh [--seconds S] [--clients C] [--call-graph]
#
# Writes $BENCH_DIR/out/perf.data and prints the top of `perf report`.
# Needs perf (linux-perf) and pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=10
CLIENTS=1
GRAPH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --call-graph) GRAPH=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PATIENTS="${PATIENTS:-1000000}"
WORK="${BENCH_DIR:-/var/tmp/lakeward-bench-$PATIENTS}"
DATA="$WORK/data"
BIN="${LAKEWARD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/target}/bench-release/lakeward}"
CFG="$WORK/main.toml"
[ -f "$CFG" ] || { echo "no $CFG: run bench/run.sh first" >&2; exit 1; }
PORT="$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$CFG")"

rm -rf "$WORK/audit-main"
"$BIN" --log warn serve --config "$CFG" 2>"$WORK/out/profile-serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.2; done

token="$("$BIN" token --data-dir "$DATA" --role analyst --purposes payment,operations --ttl 1h)"
conn="host=127.0.0.1 port=$PORT dbname=lakeward user=analyst password=$token sslmode=require options='-c lakeward.purpose=operations'"
run() { pgbench -n -M prepared -c "$CLIENTS" -j "$(( CLIENTS < 2 ? CLIENTS : 2 ))" -D patients="$PATIENTS" \
  -T "$1" -f bench/workloads/point-analyst.sql "$conn"; }
run 3 >/dev/null   # warm the caches

args=(-F 999 -p "$pid" -o "$WORK/out/perf.data")
[ "$GRAPH" -eq 1 ] && args+=(--call-graph dwarf,16384)
perf record "${args[@]}" -- sleep "$SECS" 2>/dev/null &
perf_pid=$!
run "$SECS" | grep -E "latency average|tps"
wait "$perf_pid" || true
perf report -i "$WORK/out/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -60
