#!/usr/bin/env bash
# What the durable audit costs end to end: pgbench point lookups through
# lakeward (TLS, JWT, policy, audit) at 1, 16 and 64 clients, once with
# `[audit] durability = "fsync"` (production) and once with
# "none-benchmark-only". Prints one line per run: mode, clients, tps, mean
# latency. Usage: bench/audit-latency.sh [--patients N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
PATIENTS=10000
SECONDS_PER_RUN=10
while [ $# -gt 0 ]; do
  case "$1" in
    --patients) PATIENTS="$2"; shift 2 ;;
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v pgbench >/dev/null || { echo "pgbench is needed (apt-get install postgresql-client)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakeward/release-target}"
# LAKEWARD_BIN: an already built release binary (skips the build).
if [ -z "${LAKEWARD_BIN:-}" ]; then
  cargo build --release --locked --bin lakeward
fi
BIN="${LAKEWARD_BIN:-$CARGO_TARGET_DIR/release/lakeward}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
DATA="$WORK/data"

# Data, development certificate and keys, exactly as the demo makes them.
"$BIN" demo --data-dir "$DATA" --patients "$PATIENTS" --listen 127.0.0.1:0 >"$WORK/demo.log" 2>&1 &
for _ in $(seq 1 600); do grep -q "lakeward listening" "$WORK/demo.log" && break; sleep 0.5; done
kill %1; wait %1 2>/dev/null || true
export PGPASSWORD="$("$BIN" token --data-dir "$DATA" --role analyst --ttl 1h)"
printf '\\set id random(1, %d)\nSELECT patient_id, sex, site_id FROM clinical.patients WHERE patient_id = :id;\n' "$PATIENTS" >"$WORK/point.sql"

run() { # mode port
  local mode="$1" port="$2"
  cat >"$WORK/$mode.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
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
dir = "$WORK/wal-$mode"
instance = "bench-$mode"
signing_key_file = "$DATA/keys/audit-signing.pem"
durability = "$mode"
TOML
  "$BIN" --log warn serve --config "$WORK/$mode.toml" 2>"$WORK/$mode.log" &
  local pid=$!
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
  for clients in 1 16 64; do
    local out
    out="$(pgbench -n -M simple -f "$WORK/point.sql" -c "$clients" -j 2 -T "$SECONDS_PER_RUN" \
      "host=127.0.0.1 port=$port dbname=lakeward user=analyst sslmode=require options='-c lakeward.purpose=operations'" 2>&1)"
    local tps lat
    tps="$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)"
    lat="$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')"
    echo "$mode clients=$clients tps=$tps latency_ms=$lat"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run fsync 16432
run none-benchmark-only 16433
