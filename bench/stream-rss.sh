#!/usr/bin/env bash
# Streams R rows (default 1,000,000) from lakeward to psql and reports the
# server's peak resident memory (VmHWM) and throughput.
#   bench/stream-rss.sh [--patients N] [--rows R] [--profile debug|release]
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=200000; ROWS=1000000; PROFILE=release; PORT=6590
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2;;
    --rows) ROWS="$2"; shift 2;;
    --profile) PROFILE="$2"; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/target}"
if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin lakeward; else cargo build --quiet --bin lakeward; fi
BIN="$CARGO_TARGET_DIR/$PROFILE/lakeward"
DATA="${BENCH_DATA:-/tmp/lakeward-bench-$PATIENTS}"
[ -d "$DATA/clinical" ] || "$BIN" --log warn datagen --data-dir "$DATA" --patients "$PATIENTS" >/dev/null

"$BIN" --log warn demo --data-dir "$DATA" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.1; done
base=$(grep VmRSS /proc/$PID/status | awk '{print $2}')
start=$(date +%s.%N)
# The analyst role (operations): masks and consent apply, as for a real export.
export PGPASSWORD="$("$BIN" token --data-dir "$DATA" --role analyst --ttl 1h)"
got=$(psql "host=127.0.0.1 port=$PORT dbname=lakeward user=analyst sslmode=require options='-c lakeward.purpose=operations'" -X -A -t \
  -c "SELECT * FROM clinical.observations LIMIT $ROWS" | wc -l)
end=$(date +%s.%N)
peak=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
secs=$(echo "$end - $start" | bc -l)
printf 'profile=%s rows=%s seconds=%.2f rows_per_s=%.0f rss_before_kib=%s peak_rss_kib=%s\n' \
  "$PROFILE" "$got" "$secs" "$(echo "$got / $secs" | bc -l)" "$base" "$peak"
