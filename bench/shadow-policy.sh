#!/usr/bin/env bash
# The cost of a shadow policy (SPEC §10): the point-lookup and analytic
# workloads as `analyst` on two lakeward servers over the same data, one
# without a shadow policy and one with `shadow_policy_dir` (the demo
# policy with zip unmasked for the analyst: the point lookup reads zip, so
# every one of its statements records a difference). The servers alternate
# within each round (the first switches every round) so drift on the
# machine hits both.
#
#   bench/shadow-policy.sh [--patients N] [--layout datagen|foreign]
#                          [--runs R] [--seconds S] [--rounds K]
#
# Needs bench/run.sh to have generated $BENCH_DIR (default
# /var/tmp/lakeward-bench-N) and pgbench/psql. LAKEWARD_BIN: the release
# binary to measure. CONTROL=1 runs both servers without a shadow policy
# (an A/A run: how much the two servers differ by themselves).
# PLAN_CACHE=0 turns the plan cache off on both (every statement planned
# each time: under a shadow policy, twice — the cost a statement never seen
# before pays; with POINT_MODE=simple the point lookups are sent as simple
# queries, so each one is planned). Point lookups: pgbench -M prepared for S seconds
# (transactions per second; POINT_MODE selects pgbench's protocol); analytic queries: pgbench -M simple, R runs
# (mean latency). Records go to $BENCH_DIR/shadow-policy.jsonl; the
# medians and ratios are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/server-toml.sh

PATIENTS=1000000
LAYOUT=datagen
RUNS=5
SECONDS_POINT=10
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --seconds) SECONDS_POINT="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
WORK="${BENCH_DIR:-/var/tmp/lakeward-bench-$PATIENTS}"
DATA="$WORK/data"
LW_DATA="$DATA"
[ "$LAYOUT" = foreign ] && LW_DATA="$WORK/data-foreign"
[ -d "$LW_DATA" ] || { echo "no data at $LW_DATA: run bench/run.sh first" >&2; exit 1; }
BIN="${LAKEWARD_BIN:-target/release/lakeward}"
RESULTS="$WORK/shadow-policy.jsonl"
VARIANT="cache$([ "${PLAN_CACHE:-1}" = 0 ] && echo -off || echo -on)-point-${POINT_MODE:-prepared}$([ "${CONTROL:-0}" = 1 ] && echo -control || true)"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The shadow policy: the shipped one with zip unmasked for the analyst.
SHADOW="$WORK/shadow-policy-rules"
rm -rf "$SHADOW" && cp -r policy-rules "$SHADOW"
python3 - "$SHADOW/roles.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
head = '[roles.analyst.columns]\n'
assert head in s
open(p, 'w').write(s.replace(head, head + '"clinical.patients.zip" = "visible"\n', 1))
PY

declare -A PORT=([off]=16505 [on]=16506)
declare -A PID
for mode in off on; do
  rm -rf "$WORK/audit-shadow-$mode"
  shadow_line=""
  [ "$mode" = on ] && [ "${CONTROL:-0}" != 1 ] && shadow_line="shadow_policy_dir = \"$SHADOW\""
  cache_lines=""
  [ "${PLAN_CACHE:-1}" = 0 ] && cache_lines="plan_cache_entries = 0"
  { server_toml "${PORT[$mode]}" "$DATA" "$LW_DATA" "$shadow_line" "$cache_lines"; cat <<TOML
[audit]
dir = "$WORK/audit-shadow-$mode"
table = "$WORK/audit-shadow-$mode/access_log"
instance = "bench-shadow-$mode"
signing_key_file = "$DATA/keys/audit-signing.pem"
durability = "fsync"
accounting = "patients"
TOML
  } >"$WORK/shadow-$mode.toml"
  "$BIN" --log warn serve --config "$WORK/shadow-$mode.toml" 2>"$WORK/shadow-$mode.log" &
  PID[$mode]=$!
done
trap 'kill ${PID[off]} ${PID[on]} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for mode in off on; do
  for _ in $(seq 1 300); do pg_isready -q -h 127.0.0.1 -p "${PORT[$mode]}" && break; sleep 0.2; done
done
# The key indexes build in the background after start-up.
sleep "${SETTLE_SECONDS:-60}"

TOKEN="$("$BIN" token --data-dir "$DATA" --role analyst --purposes operations --ttl 12h)"
conn() { echo "host=127.0.0.1 port=${PORT[$1]} dbname=lakeward user=analyst password=$TOKEN sslmode=require options='-c lakeward.purpose=operations'"; }

QUERIES="${QUERIES:-claims_by_payer_month hba1c_cohort top_dx_per_site}"
for round in $(seq 1 "$ROUNDS"); do
  modes="off on"
  [ $((round % 2)) -eq 0 ] && modes="on off"
  for mode in $modes; do
    tps=$(pgbench -n -M "${POINT_MODE:-prepared}" -c 1 -T "$SECONDS_POINT" -D patients="$PATIENTS" \
      -f bench/workloads/point-analyst.sql "$(conn "$mode")" 2>&1 |
      sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    [ -n "$tps" ] || { echo "pgbench failed: point lookups, shadow $mode" >&2; exit 1; }
    log "round $round: point lookups, shadow $mode: $tps tps"
    printf '{"layout":"%s","patients":%s,"variant":"%s","round":%s,"query":"point-analyst","shadow":"%s","tps":%s}\n' \
      "$LAYOUT" "$PATIENTS" "$VARIANT" "$round" "$mode" "$tps" >>"$RESULTS"
  done
  for q in $QUERIES; do
    for mode in $modes; do
      psql "$(conn "$mode")" -X -q -f "bench/workloads/$q.sql" >/dev/null
      ms=$(pgbench -n -M simple -c 1 -t "$RUNS" -f "bench/workloads/$q.sql" "$(conn "$mode")" 2>&1 |
        sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p')
      [ -n "$ms" ] || { echo "pgbench failed: $q, shadow $mode" >&2; exit 1; }
      log "round $round: $q, shadow $mode: $ms ms"
      printf '{"layout":"%s","patients":%s,"variant":"%s","round":%s,"query":"%s","shadow":"%s","mean_ms":%s}\n' \
        "$LAYOUT" "$PATIENTS" "$VARIANT" "$round" "$q" "$mode" "$ms" >>"$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$LAYOUT" "$PATIENTS" "$ROUNDS" "$VARIANT" $QUERIES <<'PY'
import json, statistics, sys
path, layout, patients, rounds, variant = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l) for l in open(path)]
rows = [r for r in rows if r["layout"] == layout and r["patients"] == patients
        and r.get("variant", "cache-on") == variant]
def med(q, mode, key):
    xs = [r[key] for r in rows if r["query"] == q and r["shadow"] == mode][-rounds:]
    return statistics.median(xs)
print(f"{variant}, {layout}:")
print(f"| workload | shadow off | shadow on | cost (median of {rounds} rounds) |")
print("|---|---:|---:|---:|")
off, on = med("point-analyst", "off", "tps"), med("point-analyst", "on", "tps")
print(f"| point lookups (tps) | {off:.0f} | {on:.0f} | {(off / on - 1) * 100:+.1f} % |")
for q in sys.argv[6:]:
    off, on = med(q, "off", "mean_ms"), med(q, "on", "mean_ms")
    print(f"| {q} (ms) | {off:.1f} | {on:.1f} | {(on / off - 1) * 100:+.1f} % |")
PY
