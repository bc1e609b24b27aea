#!/usr/bin/env bash
# Memory soak: C clients (default 8) run the analytic benchmark queries
# (bench/workloads/{claims_by_payer_month,hba1c_cohort,top_dx_per_site}.sql)
# as the analyst in a loop for S seconds against lakeward serving N patients
# (default 1,000,000) with a memory budget of L MiB, while
#   - one clinician runs point lookups (bound parameter) beside them, and
#   - the runaway self-join of the memory issue is sent three times.
# Samples the server's resident memory every half second and reports its
# peak (VmHWM) against the budget, the analytic and point-lookup rates, and
# how each runaway statement ended.
#
#   bench/memory-soak.sh [--patients N] [--limit-mb L] [--clients C]
#                        [--seconds S]
#
# Needs pgbench and psql (postgresql-client), python3.
# LAKEWARD_BIN: an already built binary (default: the bench-release build).
# SOAK_DIR (default /var/tmp/lakeward-soak-N) keeps the data between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

PATIENTS=1000000
LIMIT_MB=2048
CLIENTS=8
SECS=120
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --limit-mb) LIMIT_MB="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

command -v pgbench >/dev/null || { echo "needs pgbench (postgresql-client)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/target}"
if [ -z "${LAKEWARD_BIN:-}" ]; then
  log "building lakeward (bench-release profile)"
  cargo build --profile bench-release --no-default-features --locked --bin lakeward
fi
BIN="${LAKEWARD_BIN:-$CARGO_TARGET_DIR/bench-release/lakeward}"

WORK="${SOAK_DIR:-/var/tmp/lakeward-soak-$PATIENTS}"
DATA="$WORK/data"
OUT="$WORK/out"
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ ! -d "$DATA/clinical" ]; then
  log "generating $PATIENTS patients"
  "$BIN" --log warn datagen --data-dir "$DATA" --patients "$PATIENTS" >"$OUT/datagen.txt" 2>&1
fi
if [ ! -f "$DATA/keys/jwt-public.pem" ]; then
  log "creating development keys and certificate"
  "$BIN" demo --data-dir "$DATA" --listen 127.0.0.1:0 >"$OUT/demo.log" 2>&1 &
  demo=$!
  for _ in $(seq 1 600); do grep -q "lakeward listening" "$OUT/demo.log" && break; sleep 0.5; done
  kill "$demo"; wait "$demo" 2>/dev/null || true
fi

PORT=16700
rm -rf "$WORK/audit" "$WORK/spill"
cat >"$WORK/soak.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
max_connections = 256
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
dir = "$WORK/audit"
table = "$WORK/audit/access_log"
instance = "soak"
signing_key_file = "$DATA/keys/audit-signing.pem"
[memory]
limit_mb = $LIMIT_MB
spill_dir = "$WORK/spill"
spill_max_mb = 20480
[limits]
statement_timeout_secs = 300
TOML
"$BIN" --log warn,lakeward=info serve --config "$WORK/soak.toml" 2>"$OUT/soak-serve.log" &
LW=$!
PIDS+=("$LW")
for _ in $(seq 1 600); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.5; done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { echo "lakeward did not start; see $OUT/soak-serve.log" >&2; exit 1; }

ANALYST="$("$BIN" token --data-dir "$DATA" --role analyst --purposes payment,operations --ttl 4h)"
CLINICIAN="$("$BIN" token --data-dir "$DATA" --role clinician --site S01 --purposes treatment --ttl 4h)"
conn() { # role token purpose
  echo "host=127.0.0.1 port=$PORT dbname=lakeward user=$1 password=$2 sslmode=require options='-c lakeward.purpose=$3'"
}

# Warm up: every analytic query once, so the first plans and the Delta
# snapshots are not part of the sample.
for q in claims_by_payer_month hba1c_cohort top_dx_per_site; do
  psql "$(conn analyst "$ANALYST" operations)" -X -q -o /dev/null -f "bench/workloads/$q.sql"
done
RSS_START=$(awk '/VmRSS/ {print $2}' "/proc/$LW/status")

# Resident memory every half second.
( while kill -0 "$LW" 2>/dev/null; do
    printf '%s %s\n' "$(date +%s.%N)" "$(awk '/VmRSS/ {print $2}' "/proc/$LW/status" 2>/dev/null)"
    sleep 0.5
  done ) >"$OUT/rss.txt" &
PIDS+=("$!")

log "soak: $CLIENTS analysts x ${SECS}s at $PATIENTS patients, budget $LIMIT_MB MiB"
pgbench -n -c "$CLIENTS" -j 2 -T "$SECS" \
  -f bench/workloads/claims_by_payer_month.sql \
  -f bench/workloads/hba1c_cohort.sql \
  -f bench/workloads/top_dx_per_site.sql \
  "$(conn analyst "$ANALYST" operations)" >"$OUT/analytic.txt" 2>&1 &
ANALYTIC=$!
pgbench -n -M prepared -c 1 -j 1 -T "$SECS" -D patients="$PATIENTS" \
  -f bench/workloads/point-clinician.sql \
  "$(conn clinician "$CLINICIAN" treatment)" >"$OUT/point.txt" 2>&1 &
POINT=$!

RUNAWAY="SELECT count(DISTINCT CAST(a.encounter_id AS TEXT) || '/' || CAST(b.encounter_id AS TEXT)) FROM clinical.encounters a JOIN clinical.encounters b ON a.site_id = b.site_id"
: >"$OUT/runaway.txt"
for i in 1 2 3; do
  sleep $((SECS / 4))
  start=$(date +%s.%N)
  psql "$(conn analyst "$ANALYST" operations)" -X -A -t -v VERBOSITY=verbose -c "$RUNAWAY" >>"$OUT/runaway.txt" 2>&1 || true
  printf 'runaway %s took %.1f s\n' "$i" "$(echo "$(date +%s.%N) - $start" | bc -l)" >>"$OUT/runaway.txt"
done
wait "$ANALYTIC" || true
wait "$POINT" || true

PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$LW/status")
RSS_END=$(awk '/VmRSS/ {print $2}' "/proc/$LW/status")
TPS_A=$(awk '/^tps/ {print $3; exit}' "$OUT/analytic.txt")
FAILED_A=$(awk '/number of failed transactions/ {print $5; exit}' "$OUT/analytic.txt")
TPS_P=$(awk '/^tps/ {print $3; exit}' "$OUT/point.txt")
LAT_P=$(awk '/latency average/ {print $4; exit}' "$OUT/point.txt")
OOM=$(grep -c "53200" "$OUT/runaway.txt" || true)
echo "patients=$PATIENTS budget_mib=$LIMIT_MB clients=$CLIENTS seconds=$SECS" \
  "analytic_tps=${TPS_A:-?} analytic_failed=${FAILED_A:-?} point_tps=${TPS_P:-?} point_latency_ms=${LAT_P:-?}" \
  "runaway_53200=$OOM/3 rss_start_mib=$((RSS_START / 1024)) peak_rss_mib=$((PEAK / 1024)) rss_end_mib=$((RSS_END / 1024))" \
  | tee "$OUT/summary.txt"
cat "$OUT/runaway.txt"
