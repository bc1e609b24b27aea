#!/usr/bin/env bash
# Distributed execution (SPEC §11): the analytic workloads as `analyst` on
# one node and on a coordinator with 1 and 2 `lakeward worker`s, all on
# this machine, over the same data. Every statement is distributed
# (`distribute_min_bytes = 0`); the coordinator logs each stage's tasks,
# operator CPU time and bytes sent (`[cluster] stage_metrics`).
#
#   bench/cluster.sh [--patients N] [--layout datagen|foreign] [--runs R]
#                    [--bytes-per-task B]
#
# Needs bench/run.sh to have generated $BENCH_DIR (default
# /var/tmp/lakeward-bench-N) and pgbench/psql. LAKEWARD_BIN: the release
# binary. Records go to $BENCH_DIR/cluster.jsonl (mean latency per query
# and set-up) and the stage lines to $BENCH_DIR/cluster-stages-<setup>.log;
# a table of medians is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/server-toml.sh

PATIENTS=1000000
LAYOUT=datagen
RUNS=5
BYTES_PER_TASK=$((64 << 20))
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --layout) LAYOUT="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --bytes-per-task) BYTES_PER_TASK="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
WORK="${BENCH_DIR:-/var/tmp/lakeward-bench-$PATIENTS}"
DATA="$WORK/data"
LW_DATA="$DATA"
[ "$LAYOUT" = foreign ] && LW_DATA="$WORK/data-foreign"
[ -d "$LW_DATA" ] || { echo "no data at $LW_DATA: run bench/run.sh first" >&2; exit 1; }
BIN="${LAKEWARD_BIN:-target/release/lakeward}"
RESULTS="$WORK/cluster.jsonl"
QUERIES="${QUERIES:-claims_by_payer_month hba1c_cohort top_dx_per_site many_small_groups}"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

export LAKEWARD_CLUSTER_TOKEN
LAKEWARD_CLUSTER_TOKEN="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

start_worker() { # PORT
  local port="$1"
  cat >"$WORK/cluster-worker-$port.toml" <<TOML
[tls]
cert_file = "$DATA/tls/server.crt"
key_file = "$DATA/tls/server.key"
[data]
root = "$LW_DATA"
[policy]
pseudonym_key_file = "$DATA/keys/pseudonym.key"
[cluster]
listen = "127.0.0.1:$port"
ca_file = "$DATA/tls/server.crt"
TOML
  "$BIN" --log warn worker --config "$WORK/cluster-worker-$port.toml" 2>"$WORK/cluster-worker-$port.log" &
  PIDS+=($!)
}

start_server() { # PORT SETUP WORKER_PORTS...
  local port="$1" setup="$2"
  shift 2
  local cluster=""
  if [ $# -gt 0 ]; then
    local urls=""
    for w in "$@"; do urls="$urls\"https://127.0.0.1:$w\", "; done
    cluster="[cluster]
workers = [${urls%, }]
ca_file = \"$DATA/tls/server.crt\"
distribute_min_bytes = 0
bytes_per_task = $BYTES_PER_TASK
stage_metrics = true"
  fi
  rm -rf "$WORK/audit-cluster-$setup"
  { server_toml "$port" "$DATA" "$LW_DATA"; cat <<TOML
[audit]
dir = "$WORK/audit-cluster-$setup"
table = "$WORK/audit-cluster-$setup/access_log"
instance = "bench-cluster-$setup"
signing_key_file = "$DATA/keys/audit-signing.pem"
durability = "fsync"
accounting = "patients"
$cluster
TOML
  } >"$WORK/cluster-$setup.toml"
  "$BIN" --log warn,lakeward::cluster=info --log-format json serve --config "$WORK/cluster-$setup.toml" \
    2>"$WORK/cluster-stages-$setup.log" &
  PIDS+=($!)
  for _ in $(seq 1 300); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "the $setup server exited: $WORK/cluster-stages-$setup.log" >&2; exit 1; }
}

for port in 16601 16602 16603 16611 16612; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: another server would answer in place of this run's" >&2
    exit 1
  fi
done
start_worker 16611
start_worker 16612
sleep 5
start_server 16601 single
start_server 16602 workers-1 16611
start_server 16603 workers-2 16611 16612
declare -A PORT=([single]=16601 [workers-1]=16602 [workers-2]=16603)
sleep "${SETTLE_SECONDS:-30}"

TOKEN="$("$BIN" token --data-dir "$DATA" --role analyst --purposes operations --ttl 12h)"
conn() { echo "host=127.0.0.1 port=${PORT[$1]} dbname=lakeward user=analyst password=$TOKEN sslmode=require options='-c lakeward.purpose=operations'"; }

# One setup at a time (the machine's two cores are shared by every process).
for q in $QUERIES; do
  for setup in single workers-1 workers-2; do
    psql "$(conn "$setup")" -X -q -f "bench/workloads/$q.sql" >/dev/null
    sleep 1
    stages="$WORK/cluster-stages-$setup.log"
    from=$(wc -l <"$stages")
    ms=$(pgbench -n -M simple -c 1 -t "$RUNS" -f "bench/workloads/$q.sql" "$(conn "$setup")" 2>&1 |
      sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p')
    [ -n "$ms" ] || { echo "pgbench failed: $q, $setup" >&2; exit 1; }
    sleep 1
    # The stages of the R timed executions: per stage, its tasks and the
    # mean over executions of its operators' CPU time and what it sent.
    per_stage=$(tail -n +"$((from + 1))" "$stages" | python3 bench/lib/cluster_stages.py "$RUNS")
    log "$q, $setup: $ms ms, stages $per_stage"
    printf '{"layout":"%s","patients":%s,"query":"%s","setup":"%s","bytes_per_task":%s,"mean_ms":%s,"stages":%s}\n' \
      "$LAYOUT" "$PATIENTS" "$q" "$setup" "$BYTES_PER_TASK" "$ms" "$per_stage" >>"$RESULTS"
  done
done

python3 - "$RESULTS" "$LAYOUT" "$PATIENTS" "$BYTES_PER_TASK" $QUERIES <<'PY'
import json, sys
path, layout, patients, per_task = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(path)]
rows = [r for r in rows if r["layout"] == layout and r["patients"] == patients
        and r["bytes_per_task"] == per_task]
def size(b):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
print(f"{layout}, {patients} patients, {per_task >> 20} MiB per task (stages listed from the scans up;")
print("per stage: operator CPU time, Parquet decoding included, summed over its tasks):")
print("| query | patients | workers | stages | tasks | per-stage time | bytes shuffled | total time |")
print("|---|---:|---:|---:|---|---|---:|---:|")
for q in sys.argv[5:]:
    for setup, workers in (("single", 0), ("workers-1", 1), ("workers-2", 2)):
        last = [r for r in rows if r["query"] == q and r["setup"] == setup][-1:]
        if not last:
            continue
        r = last[0]
        st = sorted(r.get("stages", []), key=lambda s: s["stage"])
        tasks = " · ".join(str(s["tasks"]) for s in st) or "–"
        cpu = " · ".join(f"{s['cpu_ms']:.0f} ms" for s in st) or "–"
        shuffled = size(sum(s["bytes_sent"] for s in st)) if st else "–"
        print(f"| {q} | {patients:,} | {workers or 'one node'} | {len(st) or '–'} | {tasks} | {cpu} | {shuffled} | {r['mean_ms']:.0f} ms |")
PY
