#!/usr/bin/env bash
# How fast an auditor gets `audit.patient_access WHERE patient_id = X` over
# years of audit (SPEC §9): a history of N statements (default 10,000,000:
# 20,000,000 records) over P patients (default 1,000,000) written straight
# into a Delta audit table by `lakeward-baseline audit-fill` (no server,
# chained like lakeward chains), then served by `lakeward serve` as
# `audit.access_log` and queried by the auditor over TLS with psql:
#
#   - cold: the first `SELECT * FROM audit.patient_access WHERE patient_id = X`
#     after the server started (and, when this user may, after dropping the
#     page cache);
#   - warm: the same for WARM random patients (min / median / max);
#   - `… AND ts >= now() - interval '90 days'`;
#   - `… AND disclosure = 'returned'` (rows reaching a client only);
#   - `SELECT count(*) … WHERE patient_id IN (3 ids)`;
#   - where the time goes: the records the bounds filter keeps (with
#     SETS_COST=1 also the patient set text they hold, what answering
#     without the patient index reads), and EXPLAIN ANALYZE of one lookup.
#
# Before the queries, `lakeward audit index` builds the patient index of
# the generated history (timed once per history).
#
#   bench/audit/patient-access.sh [--statements N] [--patients P] [--seed S]
#       [--warm K] [--data-patients D] [--fill-args "--aggregate-share 0.02 …"]
#
# BENCH_DIR (default /var/tmp/lakeward-audit-bench) keeps the served demo
# data, the generated history (one folder per statements/patients/seed/
# fill arguments, generated only when missing) and the results. The serving
# instance appends its own records (instance `bench-auditor`) to the
# history table; its segment log lives next to the table, so its chain
# continues from run to run. Delete the history folder to start over.
# LAKEWARD_BIN: an already built bench-release `lakeward` (its
# `lakeward-baseline` next to it); otherwise both are built
# (`--profile bench-release --features bench-tools`).
#
# Results: a markdown section on stdout and in
# bench/audit/results/patient-access-<date>.md (the raw measurements in
# $BENCH_DIR/results/patient-access-<date>.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

STATEMENTS=10000000
PATIENTS=1000000
SEED=1
WARM=20
DATA_PATIENTS=10000
FILL_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --statements) STATEMENTS="$2"; shift 2 ;;
    --patients) PATIENTS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --warm) WARM="$2"; shift 2 ;;
    --data-patients) DATA_PATIENTS="$2"; shift 2 ;;
    --fill-args) FILL_ARGS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
for tool in psql pg_isready python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install postgresql-client python3)" >&2; exit 1; }
done

# --- build ----------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/bench-target}"
if [ -z "${LAKEWARD_BIN:-}" ]; then
  log "building lakeward and lakeward-baseline (bench-release profile)"
  cargo build --profile bench-release --no-default-features --features bench-tools --locked \
    --bin lakeward --bin lakeward-baseline
fi
BIN="${LAKEWARD_BIN:-$CARGO_TARGET_DIR/bench-release/lakeward}"
BASELINE_BIN="$(dirname "$BIN")/lakeward-baseline"

WORK="${BENCH_DIR:-/var/tmp/lakeward-audit-bench}"
DATA="$WORK/data"
STAMP="$(date -u +%Y-%m-%d)"
mkdir -p "$WORK/results" "$ROOT/bench/audit/results"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- served data and keys ----------------------------------------------------------
# The demo dataset (small: the auditor reads only the audit table), its
# development certificate, token key and audit signing key.
if [ ! -f "$DATA/keys/jwt-public.pem" ]; then
  log "creating the demo data ($DATA_PATIENTS patients), keys and certificate"
  "$BIN" demo --data-dir "$DATA" --patients "$DATA_PATIENTS" --listen 127.0.0.1:0 >"$WORK/demo.log" 2>&1 &
  demo=$!
  for _ in $(seq 1 600); do grep -q "lakeward listening" "$WORK/demo.log" && break; sleep 0.5; done
  kill "$demo"; wait "$demo" 2>/dev/null || true
fi

# --- the history ---------------------------------------------------------------------
TAG="n${STATEMENTS}-p${PATIENTS}-s${SEED}"
[ -n "$FILL_ARGS" ] && TAG="$TAG-$(printf '%s' "$FILL_ARGS" | sha256sum | cut -c1-8)"
HIST="$WORK/history-$TAG"
TABLE="$HIST/access_log"
if [ ! -f "$HIST/fill.json" ]; then
  rm -rf "$HIST" "$HIST.partial"
  mkdir -p "$HIST.partial"
  log "generating $STATEMENTS statements over $PATIENTS patients into $HIST (df: $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free)"
  # shellcheck disable=SC2086
  /usr/bin/time -f '%e s elapsed, %U s user, %S s system, %M KiB peak RSS' -o "$HIST.partial/fill.time" \
    "$BASELINE_BIN" audit-fill --table "$HIST.partial/access_log" --statements "$STATEMENTS" \
    --patients "$PATIENTS" --seed "$SEED" $FILL_ARGS >"$HIST.partial/fill.json" 2>"$HIST.partial/fill.log"
  # Delta logs hold paths relative to the table: the folder can move.
  mv "$HIST.partial" "$HIST"
  log "generated: $(cat "$HIST/fill.time")"
fi
FILL_JSON="$(cat "$HIST/fill.json")"
FILL_TIME="$(cat "$HIST/fill.time" 2>/dev/null || true)"

# --- the server ------------------------------------------------------------------------
PORT=16530
mkdir -p "$HIST/serve-audit"
cat >"$WORK/patient-access.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[tls]
cert_file = "$DATA/tls/server.crt"
key_file = "$DATA/tls/server.key"
[data]
root = "$DATA"
[auth]
issuer = "lakeward-demo"
audience = "lakeward"
public_keys = [{ kid = "demo-es256", alg = "ES256", file = "$DATA/keys/jwt-public.pem" }]
[policy]
pseudonym_key_file = "$DATA/keys/pseudonym.key"
[audit]
dir = "$HIST/serve-audit"
table = "$TABLE"
instance = "bench-auditor"
signing_key_file = "$DATA/keys/audit-signing.pem"
durability = "fsync"
TOML
# --- the patient index ---------------------------------------------------------------
# The history is written straight into the table, as an upgrade from a
# lakeward without the index finds it: `lakeward audit index` indexes it
# (once; later runs find it up to date). COMPACT_MIN_FILES (default 8):
# months of more files are compacted (the rebuild writes about one file
# per month already sorted by chunk).
if [ ! -f "$HIST/index.time" ]; then
  log "indexing the history's patient sets (df: $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ') free)"
  /usr/bin/time -f '%e s elapsed, %U s user, %S s system, %M KiB peak RSS' -o "$HIST/index.time.partial" \
    "$BIN" --log warn audit index --config "$WORK/patient-access.toml" \
    --compact-min-files "${COMPACT_MIN_FILES:-8}" >"$HIST/index.out" 2>"$HIST/index.log"
  du -sb "$TABLE.patient_index" | cut -f1 >"$HIST/index.bytes"
  find "$TABLE.patient_index" -name '*.parquet' | wc -l >"$HIST/index.files"
  mv "$HIST/index.time.partial" "$HIST/index.time"
  log "indexed: $(cat "$HIST/index.out") ($(cat "$HIST/index.time"))"
fi

TOKEN="$("$BIN" token --data-dir "$DATA" --role auditor --purposes operations --ttl 12h)"
CONN="host=127.0.0.1 port=$PORT dbname=lakeward user=auditor password=$TOKEN sslmode=require options='-c lakeward.purpose=operations'"

# Page cache: dropped before the cold query when this user may (root
# outside a restricted container); otherwise "cold" is a fresh server
# over whatever the kernel still caches.
CACHE="not dropped (not permitted)"
if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then CACHE="dropped"; fi
log "page cache $CACHE; starting lakeward over $TABLE"
T_START=$(date +%s.%N)
"$BIN" --log warn serve --config "$WORK/patient-access.toml" 2>"$WORK/lakeward.log" &
LW_PID=$!
PIDS+=("$LW_PID")
for _ in $(seq 1 1500); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.2; done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { echo "lakeward did not start; see $WORK/lakeward.log" >&2; exit 1; }
T_READY=$(date +%s.%N)
RSS_READY=$(awk '/VmRSS/{print $2}' "/proc/$LW_PID/status")
log "ready after $(echo "$T_READY - $T_START" | bc -l | cut -c1-6) s, RSS $RSS_READY KiB"

# --- the queries --------------------------------------------------------------------------
# Random patients (reproducible: QUERY_SEED), drawn from 1..P.
NIDS=$((1 + WARM + 5 + 3 + 15 + 1))
read -r -a IDS <<<"$(python3 -c 'import random, sys
r = random.Random(int(sys.argv[1]))
print(" ".join(str(r.randint(1, int(sys.argv[2]))) for _ in range(int(sys.argv[3]))))' "${QUERY_SEED:-7}" "$PATIENTS" "$NIDS")"
SCRIPT="$WORK/patient-access.sql"
{
  echo '\timing on'
  echo '\pset footer off'
  i=0
  q() { echo "\\echo @@ $1 $2"; echo "$3;"; }
  q cold "${IDS[$i]}" "SELECT * FROM audit.patient_access WHERE patient_id = ${IDS[$i]}"; i=$((i + 1))
  for _ in $(seq 1 "$WARM"); do
    q warm "${IDS[$i]}" "SELECT * FROM audit.patient_access WHERE patient_id = ${IDS[$i]}"; i=$((i + 1))
  done
  for _ in 1 2 3 4 5; do
    q recent "${IDS[$i]}" "SELECT * FROM audit.patient_access WHERE patient_id = ${IDS[$i]} AND ts >= now() - interval '90 days'"
    i=$((i + 1))
  done
  for _ in 1 2 3; do
    q returned "${IDS[$i]}" "SELECT * FROM audit.patient_access WHERE patient_id = ${IDS[$i]} AND disclosure = 'returned'"
    i=$((i + 1))
  done
  for _ in 1 2 3 4 5; do
    set3="${IDS[$i]},${IDS[$((i + 1))]},${IDS[$((i + 2))]}"
    q in3 "$set3" "SELECT count(*) FROM audit.patient_access WHERE patient_id IN (${set3//,/, })"
    i=$((i + 3))
  done
  # Where the time goes, for the first warm patient and two others.
  for p in "${IDS[1]}" "${IDS[2]}" "${IDS[$i]}"; do
    bounds="event = 'completion' AND patient_id_min <= $p AND patient_id_max >= $p"
    q bounds "$p" "SELECT count(*) AS records FROM audit.access_log WHERE $bounds"
    if [ -n "${SETS_COST:-}" ]; then
      q bounds_sets "$p" "SELECT count(*) AS records, count(patients_returned) AS returned_sets, count(patients_aggregated) AS aggregated_sets, coalesce(sum(octet_length(patients_returned)), 0) AS returned_bytes, coalesce(sum(octet_length(patients_aggregated)), 0) AS aggregated_bytes FROM audit.access_log WHERE $bounds"
    fi
    q rows_only "$p" "SELECT count(*) FROM audit.patient_access WHERE patient_id = $p"
  done
  q all_records 0 "SELECT count(*) AS records, count(patients_returned) AS returned_sets, count(patients_aggregated) AS aggregated_sets FROM audit.access_log"
  q explain "${IDS[1]}" "EXPLAIN ANALYZE SELECT * FROM audit.patient_access WHERE patient_id = ${IDS[1]}"
} >"$SCRIPT"
log "running $(grep -c '^\\echo' "$SCRIPT") statements as the auditor"
OUTFILE="$WORK/results/patient-access-$STAMP.out"
T_Q=$(date +%s)
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
psql "$CONN" -X -A -t -F '|' -v ON_ERROR_STOP=1 -f "$SCRIPT" >"$OUTFILE" 2>"$WORK/psql.err" || {
  echo "psql failed; see $WORK/psql.err and $OUTFILE" >&2; cat "$WORK/psql.err" >&2; exit 1; }
log "queries done in $(( $(date +%s) - T_Q )) s"
RSS_PEAK=$(awk '/VmHWM/{print $2}' "/proc/$LW_PID/status")
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
# The server's CPU time over start-up and the queries (utime + stime).
CPU_S=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$LW_PID/stat")
kill "$LW_PID"; wait "$LW_PID" 2>/dev/null || true

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 bench/audit/summarise.py --out "$OUTFILE" --fill-json "$FILL_JSON" --fill-time "$FILL_TIME" \
  --commit "$COMMIT" --date "$STAMP" --cache "$CACHE" --rss-ready-kib "$RSS_READY" --rss-peak-kib "$RSS_PEAK" \
  --ready-s "$(echo "$T_READY - $T_START" | bc -l)" --table "$TABLE" --query-s "$(( $(date +%s) - T_Q ))" \
  --load "$LOAD_BEFORE / $LOAD_AFTER" --server-cpu-s "$CPU_S" \
  --index "$(cat "$HIST/index.out" 2>/dev/null | tr '\n' ' ')" --index-time "$(cat "$HIST/index.time" 2>/dev/null)" \
  --index-bytes "$(cat "$HIST/index.bytes" 2>/dev/null || echo 0)" --index-files "$(cat "$HIST/index.files" 2>/dev/null || echo 0)" \
  --jsonl "$WORK/results/patient-access-$STAMP.jsonl" --explain "$WORK/results/patient-access-$STAMP-explain.txt" \
  | tee "$ROOT/bench/audit/results/patient-access-$STAMP.md"
log "results: bench/audit/results/patient-access-$STAMP.md, raw in $WORK/results"
