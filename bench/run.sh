#!/usr/bin/env bash
# lakeward against PostgreSQL 15 (same rows, the same demo policy written as
# secure views + row-level security) and against plain DataFusion over the
# same Delta tables (no policy: the cost of enforcement), in one run on one
# machine. Writes the results to $BENCH_DIR/results.jsonl and regenerates the
# generated part of docs/benchmarks.md.
#
#   bench/run.sh [--patients N] [--seconds S] [--clients "1 8 32"]
#                [--runs R] [--only point,analytic,export,connect,audit,accounting]
#                [--no-report] [--layout datagen|foreign] [--rounds K]
#   bench/run.sh --only copy --no-report [--patients N]
#
# `copy` (not in the default run): COPY_ROWS (default 1,000,000) rows of
# clinical.observations by COPY, lakeward in binary to the ADBC PostgreSQL
# driver and in text to psql, PostgreSQL in both, with lakeward's RSS
# sampled every 100 ms (bench/copy-rss.py); the records go to results.jsonl
# and a summary to stderr; docs/benchmarks.md ("COPY export") is written by
# hand.
#
# Needs: pgbench and psql (postgresql-client), the PostgreSQL 15 server
# (postgresql-15), python3, bc and GNU time. Installs them with apt-get when
# missing, while the release binary builds.
# BENCH_DIR (default /var/tmp/lakeward-bench-N) keeps the data, the loaded
# PostgreSQL cluster and the logs between runs; delete it to start over.
# LAKEWARD_BIN: use an already built release binary.
# PG_TABLES: load only these tables into PostgreSQL (space-separated, e.g.
# "patients consents" at 10,000,000 patients, whose full copy needs more
# than 100 GB); workloads over the others run on lakeward alone. Delete
# $BENCH_DIR/pg to load a different set.
#
# --layout foreign: lakeward serves the same tables as another writer wrote
# them: bench/foreign/rewrite.py rewrites datagen's Delta tables with the
# Python `deltalake` package's defaults (rows shuffled, no sorting, no
# partitioning) into $BENCH_DIR/data-foreign, once (pip-installs
# bench/foreign/requirements.txt when `deltalake` is missing). PostgreSQL
# loads the original rows either way; lakeward and plain DataFusion read the
# rewritten tables. Every results.jsonl record carries its `layout`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PATIENTS=1000000
SECS=3
CLIENTS="1 8 32"
RUNS=3
ROUNDS=3
ONLY="point,analytic,export,connect,audit"
REPORT=1
LAYOUT=datagen
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --seconds) SECS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --no-report) REPORT=0; shift ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$LAYOUT" in datagen|foreign) ;; *) echo "--layout: datagen or foreign, not $LAYOUT" >&2; exit 2 ;; esac
# report.py stamps every record with it.
export BENCH_LAYOUT="$LAYOUT"
want() { [[ ",$ONLY," == *",$1,"* ]]; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
T0=$(date +%s)

# --- tools --------------------------------------------------------------------
PGBIN=/usr/lib/postgresql/15/bin
need=()
command -v pgbench >/dev/null || need+=(postgresql-client)
[ -x "$PGBIN/postgres" ] || need+=(postgresql-15)
command -v python3 >/dev/null || need+=(python3)
command -v bc >/dev/null || need+=(bc)
[ -x /usr/bin/time ] || need+=(time)
APT_PID=""
if [ ${#need[@]} -gt 0 ]; then
  # Installed while cargo builds (apt is network and disk, the build is CPU).
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  APT_LOG=$(mktemp "${TMPDIR:-/tmp}/lakeward-bench-apt.XXXXXX")
  log "installing ${need[*]} (log: $APT_LOG)"
  ( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" ) >"$APT_LOG" 2>&1 &
  APT_PID=$!
fi

# --- build --------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/target}"
if [ -z "${LAKEWARD_BIN:-}" ]; then
  # The bench-release profile: release optimisation without link-time
  # optimisation (Cargo.toml), and no object-store clients (the benchmark
  # reads local tables): a fresh machine builds it much sooner.
  # --timings leaves a per-crate report in $CARGO_TARGET_DIR/cargo-timings.
  log "building lakeward (bench-release profile)"
  cargo build --profile bench-release --no-default-features --features bench-tools --locked \
    --bin lakeward --bin lakeward-baseline --timings
fi
BIN="${LAKEWARD_BIN:-$CARGO_TARGET_DIR/bench-release/lakeward}"
BASELINE_BIN="$(dirname "$BIN")/lakeward-baseline"
if [ -n "$APT_PID" ] && ! wait "$APT_PID"; then
  echo "installing ${need[*]} failed:" >&2; cat "$APT_LOG" >&2; exit 1
fi
T_BUILD=$(date +%s)

# --- data -----------------------------------------------------------------------
WORK="${BENCH_DIR:-/var/tmp/lakeward-bench-$PATIENTS}"
DATA="$WORK/data"
OUT="$WORK/out"
RESULTS="$WORK/results.jsonl"
mkdir -p "$WORK" "$OUT"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pg/postmaster.pid" ] && pg_as "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ ! -d "$DATA/clinical" ]; then
  log "generating $PATIENTS patients"
  /usr/bin/time -f '%e s, %M KiB peak' "$BIN" --log warn datagen --data-dir "$DATA" --patients "$PATIENTS" >"$OUT/datagen.txt" 2>&1
fi
if [ ! -f "$DATA/keys/jwt-public.pem" ]; then
  # The demo writes the development certificate, token key, pseudonym key
  # and audit signing key next to the data, then serves; stop it once ready.
  log "creating development keys and certificate"
  "$BIN" demo --data-dir "$DATA" --listen 127.0.0.1:0 >"$OUT/demo.log" 2>&1 &
  demo=$!
  for _ in $(seq 1 600); do grep -q "lakeward listening" "$OUT/demo.log" && break; sleep 0.5; done
  kill "$demo"; wait "$demo" 2>/dev/null || true
fi
# What lakeward serves (and plain DataFusion reads): datagen's tables, or the
# same rows as another writer wrote them. PostgreSQL always loads from $DATA.
LW_DATA="$DATA"
if [ "$LAYOUT" = foreign ]; then
  LW_DATA="$WORK/data-foreign"
  if [ ! -d "$LW_DATA/clinical" ]; then
    if ! python3 -c 'import deltalake' 2>/dev/null; then
      log "installing bench/foreign/requirements.txt"
      python3 -m pip install -q -r bench/foreign/requirements.txt >"$OUT/pip-foreign.txt" 2>&1
    fi
    log "rewriting the tables with the Python deltalake package's defaults"
    python3 bench/foreign/rewrite.py --src "$DATA" --dst "$LW_DATA" >"$OUT/rewrite-foreign.jsonl"
  fi
fi
PSEUDONYM_KEY="$(tr -d '[:space:]' <"$DATA/keys/pseudonym.key")"
declare -A PURPOSE=([analyst]=operations [clinician]=treatment [researcher]=research)
declare -A TOKEN
TOKEN[analyst]="$("$BIN" token --data-dir "$DATA" --role analyst --purposes payment,operations --ttl 12h)"
TOKEN[clinician]="$("$BIN" token --data-dir "$DATA" --role clinician --site S01 --purposes treatment --ttl 12h)"
TOKEN[researcher]="$("$BIN" token --data-dir "$DATA" --role researcher --purposes research --ttl 12h)"
TOKEN[auditor]="$("$BIN" token --data-dir "$DATA" --role auditor --purposes operations --ttl 12h)"
PURPOSE[auditor]=operations

# --- lakeward -------------------------------------------------------------------
LW_PORT=16500
serve_lakeward() { # name port durability [accounting] -> pid in LW_PID
  local name="$1" port="$2" durability="$3" accounting="${4:-patients}"
  # LOOKUP_CACHE_TABLES: the hot-row cache's tables, as TOML strings.
  local cache_tables="${LOOKUP_CACHE_TABLES:-\"clinical.patients\"}"
  rm -rf "$WORK/audit-$name"
  cat >"$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
max_connections = 512
[tls]
cert_file = "$LW_DATA/tls/server.crt"
key_file = "$LW_DATA/tls/server.key"
[data]
root = "$LW_DATA"
[auth]
issuer = "lakeward-demo"
audience = "lakeward"
public_keys = [{ kid = "demo-es256", alg = "ES256", file = "$LW_DATA/keys/jwt-public.pem" }]
[policy]
pseudonym_key_file = "$LW_DATA/keys/pseudonym.key"
[audit]
dir = "$WORK/audit-$name"
table = "$WORK/audit-$name/access_log"
instance = "bench-$name"
signing_key_file = "$LW_DATA/keys/audit-signing.pem"
durability = "$durability"
accounting = "$accounting"
[lookup]
index_memory_mb = ${LOOKUP_INDEX_MB:-4096}
cache_memory_mb = ${LOOKUP_CACHE_MB:-2048}
cache_tables = [$cache_tables]
TOML
  "$BIN" --log "warn,lakeward::engine::lookup=info" serve --config "$WORK/$name.toml" 2>"$OUT/lakeward-$name.log" &
  LW_PID=$!
  PIDS+=("$LW_PID")
  for _ in $(seq 1 300); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
  pg_isready -q -h 127.0.0.1 -p "$port" || { echo "lakeward ($name) did not start; see $OUT/lakeward-$name.log" >&2; exit 1; }
  # Key indexes build in the background after start-up: measure once every
  # table with lookup keys logged "key indexes ready" and nothing more
  # came for three seconds.
  local t0 n last=-1 rows
  t0=$(date +%s)
  while :; do
    n=$(grep -c "key indexes ready" "$OUT/lakeward-$name.log" || true)
    [ "$n" -ge "${LOOKUP_TABLES:-4}" ] && [ "$n" = "$last" ] && break
    [ $(( $(date +%s) - t0 )) -gt 1800 ] && break
    last="$n"; sleep 3
  done
  rows=$(sed -n 's/.*key indexes ready.* rows=\([0-9]*\).*/\1/p' "$OUT/lakeward-$name.log" | paste -sd+ | bc)
  log "lakeward ($name): key indexes over ${rows:-0} rows after $(( $(date +%s) - t0 )) s; RSS $(awk '/VmRSS/{print $2}' /proc/$LW_PID/status) KiB"
  python3 bench/report.py record --system lakeward --workload lookup-index --rows "${rows:-0}" \
    --seconds "$(( $(date +%s) - t0 ))" --peak-rss-kib "$(awk '/VmRSS/{print $2}' /proc/$LW_PID/status)" >>"$RESULTS"
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
lw_conn() { # role port
  echo "host=127.0.0.1 port=$2 dbname=lakeward user=$1 password=${TOKEN[$1]} sslmode=require options='-c lakeward.purpose=${PURPOSE[$1]}'"
}

# --- PostgreSQL -----------------------------------------------------------------
PG_PORT=16510
pg_as() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$(printf '%q ' "$@")"; else "$@"; fi; }
start_postgres() {
  if [ ! -f "$WORK/pg/PG_VERSION" ]; then
    log "initialising PostgreSQL 15"
    mkdir -p "$WORK/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg"
    pg_as "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 >"$OUT/initdb.log"
    cp "$DATA/tls/server.crt" "$DATA/tls/server.key" "$WORK/pg/"
    chmod 600 "$WORK/pg/server.key"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg/server.crt" "$WORK/pg/server.key"
    # Sized for this machine like a DBA would: a quarter of RAM as shared
    # buffers is too much for 2 cores' worth of work; 4 GB caches the data.
    cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK/pg'
max_connections = 200
ssl = on
shared_buffers = 4GB
effective_cache_size = 12GB
work_mem = 64MB
maintenance_work_mem = 1GB
max_parallel_workers_per_gather = 2
max_wal_size = 8GB
checkpoint_timeout = 30min
jit = off
CONF
  fi
  pg_as "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w start >/dev/null
  if [ ! -f "$WORK/pg/lakeward-loaded" ]; then
    log "loading the same rows into PostgreSQL"
    PGHOST="$WORK/pg" PGPORT=$PG_PORT PGUSER=postgres LAKEWARD_BASELINE="$BASELINE_BIN" DATA="$DATA" \
      PSEUDONYM_KEY="$PSEUDONYM_KEY" bench/postgres/load.sh >"$OUT/pg-load.txt" 2>&1
    touch "$WORK/pg/lakeward-loaded"
  fi
}
# Whether PostgreSQL holds every table a point workload reads.
pg_has() { # workload role
  local need=patients t
  [ "$2" = researcher ] && need=encounters
  [ "$1" = chart ] && need="patients encounters observations claims"
  for t in $need consents; do
    [[ " ${PG_TABLES:-patients encounters observations claims consents} " == *" $t "* ]] || return 1
  done
}
pg_conn() { # role
  echo "host=127.0.0.1 port=$PG_PORT dbname=postgres user=$1 password=bench sslmode=require options='-c lakeward.purpose=${PURPOSE[$1]} -c lakeward.site=S01'"
}

# --- measurement helpers --------------------------------------------------------
# pgbench run: system workload role mode clients conn-string pgbench-args...
bench_pgbench() {
  local system="$1" workload="$2" role="$3" mode="$4" clients="$5" conn="$6"; shift 6
  local tag="$system-$workload-$role-$mode-c$clients"
  local threads=$(( clients < 2 ? clients : 2 ))
  rm -f "$OUT/$tag".log*
  if ! pgbench -n -M "$mode" -c "$clients" -j "$threads" -D patients="$PATIENTS" \
      -l --log-prefix="$OUT/$tag.log" "$@" "$conn" >"$OUT/$tag.txt" 2>&1; then
    log "pgbench failed: $tag (see $OUT/$tag.txt)"
    python3 bench/report.py record --system "$system" --workload "$workload" --role "$role" \
      --mode "$mode" --clients "$clients" --failed "$OUT/$tag.txt" >>"$RESULTS"
    return 0
  fi
  python3 bench/report.py pgbench --system "$system" --workload "$workload" --role "$role" \
    --mode "$mode" --clients "$clients" --stdout "$OUT/$tag.txt" --logs "$OUT/$tag.log" >>"$RESULTS"
}
# One psql export, timed, with the server's peak RSS (VmHWM of PID).
bench_export() { # system role conn rows pid
  local system="$1" role="$2" conn="$3" rows="$4" pid="${5:-}"
  local s e n
  s=$(date +%s.%N)
  n=$(psql "$conn" -X -A -t -c "SELECT * FROM clinical.observations LIMIT $rows" | wc -l)
  e=$(date +%s.%N)
  local rss=null base=null
  if [ -n "$pid" ]; then rss=$(awk '/VmHWM/{print $2}' "/proc/$pid/status"); base="${LW_BASE_RSS:-null}"; fi
  python3 bench/report.py record --system "$system" --workload export --role "$role" \
    --rows "$n" --seconds "$(echo "$e - $s" | bc -l)" --peak-rss-kib "$rss" --base-rss-kib "$base" >>"$RESULTS"
}
baseline() { # workload args... (plain DataFusion, no policy, in-process)
  local w="$1"; shift
  "$BASELINE_BIN" "$@" --data "$LW_DATA" | python3 bench/report.py baseline --workload "$w" >>"$RESULTS"
}

# Results of this run replace the previous ones.
: >"$RESULTS"
python3 bench/report.py record --system machine --workload meta --patients "$PATIENTS" \
  --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --seconds "$SECS" --clients-list "$CLIENTS" --runs "$RUNS" --data "$LW_DATA" >>"$RESULTS"

if want point || want analytic || want export || want connect || want copy; then start_postgres; fi
T_SETUP=$(date +%s)

# --- 1. point lookups -----------------------------------------------------------
# Point lookups, analytic queries and the connection storm share one server
# (the same configuration); export and the audit comparison start their own.
MAIN_PID=""
if want point || want analytic || want connect; then
  serve_lakeward main $LW_PORT fsync
  MAIN_PID=$LW_PID
fi
if want point; then
  # The researcher's first lookups by pseudonym ask for the pseudonym index
  # (built in the background), and each role's first statement computes
  # its purpose's consent set (8 s over 45 million consent records at
  # 10,000,000 patients): warm both up outside the measurement.
  for role in analyst clinician researcher; do
    pgbench -n -M prepared -c 1 -T 3 -D patients="$PATIENTS" -f "bench/workloads/point-$role.sql" \
      "$(lw_conn "$role" $LW_PORT)" >/dev/null 2>&1 || true
  done
  pgbench -n -M prepared -c 1 -T 3 -D patients="$PATIENTS" -f bench/workloads/point-chart.sql \
    "$(lw_conn clinician $LW_PORT)" >/dev/null 2>&1 || true
  sleep 2
  for role in analyst clinician researcher; do
    for mode in prepared simple; do
      for c in $CLIENTS; do
        log "point: $role -M $mode, $c clients"
        bench_pgbench lakeward point "$role" "$mode" "$c" "$(lw_conn "$role" $LW_PORT)" -T "$SECS" -f "bench/workloads/point-$role.sql"
        pg_has point "$role" || continue
        bench_pgbench postgres point "$role" "$mode" "$c" "$(pg_conn "$role")" -T "$SECS" -f "bench/workloads/point-$role.sql"
      done
    done
  done
  # A clinician's chart: patient, encounters, observations, claims.
  for c in $CLIENTS; do
    log "point: clinician's chart (4 statements), prepared, $c clients"
    bench_pgbench lakeward chart clinician prepared "$c" "$(lw_conn clinician $LW_PORT)" -T "$SECS" -f bench/workloads/point-chart.sql
    pg_has chart clinician || continue
    bench_pgbench postgres chart clinician prepared "$c" "$(pg_conn clinician)" -T "$SECS" -f bench/workloads/point-chart.sql
  done
  for c in $CLIENTS; do
    log "point: plain DataFusion, $c clients"
    baseline point point --patients "$PATIENTS" --clients "$c" --seconds "$SECS" \
      --sql 'SELECT patient_id, mrn, birth_date, zip, sex, site_id FROM clinical.patients WHERE patient_id = $1'
    baseline point-encounter point --patients "$PATIENTS" --clients "$c" --seconds "$SECS" --ids-from clinical.encounters.encounter_id \
      --sql 'SELECT encounter_id, patient_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE encounter_id = $1'
    log "point: plain DataFusion with deltalake's stock scan, $c clients"
    baseline point-stock point --scan deltalake --patients "$PATIENTS" --clients "$c" --seconds "$SECS" \
      --sql 'SELECT patient_id, mrn, birth_date, zip, sex, site_id FROM clinical.patients WHERE patient_id = $1'
    baseline point-encounter-stock point --scan deltalake --patients "$PATIENTS" --clients "$c" --seconds "$SECS" --ids-from clinical.encounters.encounter_id \
      --sql 'SELECT encounter_id, patient_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE encounter_id = $1'
  done
fi

# --- 2. analytic ----------------------------------------------------------------
if want analytic; then
  for q in claims_by_payer_month hba1c_cohort top_dx_per_site; do
    log "analytic: $q, plain DataFusion"
    baseline "$q" query --file "bench/workloads/$q.sql" --runs "$RUNS"
    baseline "$q-stock" query --scan deltalake --file "bench/workloads/$q.sql" --runs "$RUNS"
    for role in analyst clinician researcher; do
      log "analytic: $q as $role"
      # One warm-up run, then RUNS timed runs, each on its own.
      psql "$(lw_conn "$role" $LW_PORT)" -X -q -f "bench/workloads/$q.sql" >/dev/null
      bench_pgbench lakeward "$q" "$role" simple 1 "$(lw_conn "$role" $LW_PORT)" -t "$RUNS" -f "bench/workloads/$q.sql"
      # PostgreSQL's buffers are warm after the first role's warm-up (simple
      # protocol: no plan is kept between runs).
      if [ "$role" = analyst ]; then
        psql "$(pg_conn "$role")" -X -q -f "bench/workloads/$q.sql" >/dev/null
      fi
      bench_pgbench postgres "$q" "$role" simple 1 "$(pg_conn "$role")" -t "$RUNS" -f "bench/workloads/$q.sql"
    done
  done
fi

# --- 3. connection storm --------------------------------------------------------
if want connect; then
  for c in 8; do
    log "connect: new TLS connections, $c clients"
    bench_pgbench lakeward connect analyst simple "$c" "$(lw_conn analyst $LW_PORT)" -C -T "$SECS" -f bench/workloads/connect.sql
    bench_pgbench postgres connect analyst simple "$c" "$(pg_conn analyst)" -C -T "$SECS" -f bench/workloads/connect.sql
  done
fi
if [ -n "$MAIN_PID" ]; then stop_pid "$MAIN_PID"; fi

# --- 4. export ------------------------------------------------------------------
if want export; then
  log "export: 1,000,000 and 5,000,000 rows"
  serve_lakeward export $LW_PORT fsync
  LW_BASE_RSS=$(awk '/VmRSS/{print $2}' "/proc/$LW_PID/status")
  bench_export lakeward analyst "$(lw_conn analyst $LW_PORT)" 1000000 "$LW_PID"
  bench_export lakeward analyst "$(lw_conn analyst $LW_PORT)" 5000000 "$LW_PID"
  stop_pid "$LW_PID"
  bench_export postgres analyst "$(pg_conn analyst)" 1000000
  baseline export export --sql 'SELECT * FROM clinical.observations LIMIT 1000000' --runs 1
fi

# --- 5. audit on vs off ---------------------------------------------------------
# Both servers run side by side (the idle one only ticks its audit shipper) and
# the runs alternate, fsync then none, ROUNDS times: drift of the machine
# over the minute falls on both alike.
if want audit; then
  declare -A AUDIT_PORT=([fsync]=$LW_PORT [none-benchmark-only]=$((LW_PORT + 1)))
  AUDIT_PIDS=()
  for durability in fsync none-benchmark-only; do
    serve_lakeward "audit-$durability" "${AUDIT_PORT[$durability]}" "$durability"
    AUDIT_PIDS+=("$LW_PID")
  done
  for round in $(seq 1 "$ROUNDS"); do
    for durability in fsync none-benchmark-only; do
      log "audit $durability: point lookups, 8 clients, round $round"
      bench_pgbench "lakeward-audit-$durability-r$round" point analyst prepared 8 \
        "$(lw_conn analyst "${AUDIT_PORT[$durability]}")" -T "$SECS" -f bench/workloads/point-analyst.sql
    done
  done
  for p in "${AUDIT_PIDS[@]}"; do stop_pid "$p"; done
fi

# --- 5b. patient accounting on vs off (bench/run.sh --only accounting) ---------
# Two servers side by side, accounting on (`patients`) and off
# (`none-benchmark-only`), runs alternating on then off, ROUNDS times: point
# lookups at 1 client (latency) and 8 clients (throughput), then each
# analytic query as the analyst (one warm-up, RUNS timed runs).
if want accounting; then
  declare -A ACC_PORT=([patients]=$((LW_PORT + 2)) [none-benchmark-only]=$((LW_PORT + 3)))
  ACC_PIDS=()
  for acc in patients none-benchmark-only; do
    serve_lakeward "accounting-$acc" "${ACC_PORT[$acc]}" fsync "$acc"
    ACC_PIDS+=("$LW_PID")
    pgbench -n -M prepared -c 1 -T 3 -D patients="$PATIENTS" -f bench/workloads/point-analyst.sql \
      "$(lw_conn analyst "${ACC_PORT[$acc]}")" >/dev/null 2>&1 || true
  done
  for round in $(seq 1 "$ROUNDS"); do
    for acc in patients none-benchmark-only; do
      for c in 1 8; do
        log "accounting $acc: point lookups, $c clients, round $round"
        bench_pgbench "lakeward-accounting-$acc-r$round" point analyst prepared "$c" \
          "$(lw_conn analyst "${ACC_PORT[$acc]}")" -T "$SECS" -f bench/workloads/point-analyst.sql
      done
    done
  done
  for round in $(seq 1 "$ROUNDS"); do
    for q in claims_by_payer_month hba1c_cohort top_dx_per_site; do
      for acc in patients none-benchmark-only; do
        log "accounting $acc: $q as analyst, round $round"
        psql "$(lw_conn analyst "${ACC_PORT[$acc]}")" -X -q -f "bench/workloads/$q.sql" >/dev/null
        bench_pgbench "lakeward-accounting-$acc-r$round" "$q" analyst simple 1 \
          "$(lw_conn analyst "${ACC_PORT[$acc]}")" -t "$RUNS" -f "bench/workloads/$q.sql"
      done
    done
  done
  for p in "${ACC_PIDS[@]}"; do stop_pid "$p"; done
fi

# --- 6. COPY export (bench/run.sh --only copy) ----------------------------------
# The same rows as the export, by COPY: lakeward in binary to the ADBC
# driver (cursor.execute + fetch_arrow_table, which the driver runs as
# COPY (…) TO STDOUT (FORMAT binary)), lakeward in text to psql's \copy, and
# PostgreSQL (the analyst's policy views) in both. lakeward's VmRSS is
# sampled every 100 ms on a fresh server; the ADBC run goes first, so VmHWM
# is its peak.
if want copy; then
  COPY_ROWS="${COPY_ROWS:-1000000}"
  COPY_SQL="SELECT * FROM clinical.observations LIMIT $COPY_ROWS"
  adbc_uri() { # port dbname user password options (libpq URI: %20 for spaces, %3D for =)
    echo "postgresql://$3:$4@127.0.0.1:$1/$2?sslmode=require&options=$5"
  }
  lw_opts="-c%20lakeward.purpose%3D${PURPOSE[analyst]}"
  copy_run() { # client target system format [pid]
    local client="$1" target="$2" system="$3" format="$4" pid="${5:-}"
    local tag="copy-$system-$client-$format"
    local arg=(--uri "$target"); [ "$client" = psql ] && arg=(--conn "$target")
    python3 bench/copy-rss.py --client "$client" "${arg[@]}" --sql "$COPY_SQL" \
      ${pid:+--pid "$pid" --samples "$OUT/$tag-rss.csv"} \
      system="$system" workload=copy role=analyst format="$format" layout="$LAYOUT" >>"$RESULTS"
  }
  serve_lakeward copy $LW_PORT fsync
  log "copy: $COPY_ROWS rows, lakeward binary COPY to ADBC"
  copy_run adbc "$(adbc_uri $LW_PORT lakeward analyst "${TOKEN[analyst]}" "$lw_opts")" lakeward binary "$LW_PID"
  # What the driver sent, as lakeward audited it (every statement of the
  # analyst so far: the ADBC session): the rows come from one binary COPY.
  psql "$(lw_conn auditor $LW_PORT)" -X -A -F ' | ' -c \
    "SELECT event, statement_kind, rows_returned, query_fingerprint FROM audit.access_log
     WHERE \"user\" = 'analyst' AND rows_returned IS NOT NULL ORDER BY ts" \
    | tee "$OUT/copy-adbc-audit.txt" >&2
  log "copy: $COPY_ROWS rows, lakeward text COPY to psql"
  copy_run psql "$(lw_conn analyst $LW_PORT)" lakeward text "$LW_PID"
  stop_pid "$LW_PID"
  log "copy: $COPY_ROWS rows, PostgreSQL binary COPY to ADBC and text COPY to psql"
  copy_run adbc "$(adbc_uri $PG_PORT postgres analyst bench "$lw_opts%20-c%20lakeward.site%3DS01")" postgres binary
  copy_run psql "$(pg_conn analyst)" postgres text
  python3 - "$RESULTS" <<'PY' >&2
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("workload") != "copy":
        continue
    rss = ""
    if r.get("peak_rss_kib"):
        rss = (f", lakeward RSS {r['base_rss_kib'] / 1024:.0f} MiB before, peak {r['peak_rss_kib'] / 1024:.0f} MiB,"
               f" median {r['median_rss_kib'] / 1024:.0f} MiB, per tenth {r['rss_profile_mib']}")
    print(f"{r['system']} {r['format']} COPY -> {r['client']}: {r['rows']:,} rows in {r['seconds']:.2f} s,"
          f" {r['rows_per_s']:,} rows/s{rss}")
PY
fi

T_END=$(date +%s)
python3 bench/report.py record --system machine --workload timing --build-s $((T_BUILD - T0)) \
  --setup-s $((T_SETUP - T_BUILD)) --total-s $((T_END - T0)) >>"$RESULTS"
log "done in $((T_END - T0)) s (build $((T_BUILD - T0)) s, data and PostgreSQL $((T_SETUP - T_BUILD)) s)"
if [ "$REPORT" = 1 ]; then
  python3 bench/report.py render --results "$RESULTS" --outdir "$OUT" --doc docs/benchmarks.md
  log "docs/benchmarks.md regenerated from $RESULTS"
fi
