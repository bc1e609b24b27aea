#!/usr/bin/env bash
# The cost of an aggregation policy (SPEC §8): the analytic benchmark's
# queries as `reporter` (aggregate-only, groups of >= 11 patients) against
# the same queries as `analyst` (the reporter's masks, sites and consent,
# no aggregation policy), on one lakeward server over the data bench/run.sh
# generated. Roles alternate within each round (the first role switches
# every round) so drift on the machine hits both.
#
#   bench/aggregation-policy.sh [--patients N] [--layout datagen|foreign]
#                               [--runs R] [--rounds K]
#
# Needs bench/run.sh to have generated $BENCH_DIR (default
# /var/tmp/lakeward-bench-N; --layout foreign also its data-foreign) and
# pgbench/psql. LAKEWARD_BIN: the release binary to measure. QUERIES: the
# workloads (bench/workloads/<name>.sql) to run, by default the analytic
# benchmark's three; many_small_groups is the shape where most groups are
# small (a day × site × diagnosis grid). Prints one
# line per round, role and query, then the medians and ratios; the records
# go to $BENCH_DIR/aggregation-policy.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/server-toml.sh

PATIENTS=1000000
LAYOUT=datagen
RUNS=5
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
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
PORT=16504
RESULTS="$WORK/aggregation-policy.jsonl"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

rm -rf "$WORK/audit-aggregation-policy"
{ server_toml "$PORT" "$DATA" "$LW_DATA"; cat <<TOML
[audit]
dir = "$WORK/audit-aggregation-policy"
table = "$WORK/audit-aggregation-policy/access_log"
instance = "bench-aggregation-policy"
signing_key_file = "$DATA/keys/audit-signing.pem"
durability = "fsync"
accounting = "patients"
TOML
} >"$WORK/aggregation-policy.toml"
"$BIN" --log warn serve --config "$WORK/aggregation-policy.toml" 2>"$WORK/aggregation-policy.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.2; done
# The key indexes build in the background after start-up.
sleep "${SETTLE_SECONDS:-45}"

declare -A TOKEN
TOKEN[analyst]="$("$BIN" token --data-dir "$DATA" --role analyst --purposes operations --ttl 12h)"
TOKEN[reporter]="$("$BIN" token --data-dir "$DATA" --role reporter --purposes operations --ttl 12h)"
conn() { echo "host=127.0.0.1 port=$PORT dbname=lakeward user=$1 password=${TOKEN[$1]} sslmode=require options='-c lakeward.purpose=operations'"; }

QUERIES="${QUERIES:-claims_by_payer_month hba1c_cohort top_dx_per_site}"
for round in $(seq 1 "$ROUNDS"); do
  roles="analyst reporter"
  [ $((round % 2)) -eq 0 ] && roles="reporter analyst"
  for q in $QUERIES; do
    for role in $roles; do
      psql "$(conn "$role")" -X -q -f "bench/workloads/$q.sql" >/dev/null
      ms=$(pgbench -n -M simple -c 1 -t "$RUNS" -f "bench/workloads/$q.sql" "$(conn "$role")" 2>&1 |
        sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p')
      [ -n "$ms" ] || { echo "pgbench failed: $q as $role" >&2; exit 1; }
      log "round $round: $q as $role: $ms ms"
      printf '{"layout":"%s","patients":%s,"round":%s,"query":"%s","role":"%s","runs":%s,"mean_ms":%s}\n' \
        "$LAYOUT" "$PATIENTS" "$round" "$q" "$role" "$RUNS" "$ms" >>"$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$LAYOUT" "$PATIENTS" "$ROUNDS" $QUERIES <<'PY'
import json, statistics, sys
path, layout, patients, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(path)]
rows = [r for r in rows if r["layout"] == layout and r["patients"] == patients]
# The last `rounds` rounds of each (query, role): this run's.
print(f"| query | analyst ms (median of {rounds} rounds) | reporter ms | ratio |")
print("|---|---:|---:|---:|")
for q in sys.argv[5:]:
    m = {}
    for role in ["analyst", "reporter"]:
        xs = [r["mean_ms"] for r in rows if r["query"] == q and r["role"] == role][-rounds:]
        m[role] = statistics.median(xs)
    print(f"| {q} | {m['analyst']:.1f} | {m['reporter']:.1f} | {m['reporter'] / m['analyst']:.2f}× |")
PY
