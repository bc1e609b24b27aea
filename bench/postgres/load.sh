#!/usr/bin/env bash
# Load the Delta tables lakeward serves into PostgreSQL and install the
# native version of the demo policy (bench/postgres/README.md).
#
# usage: bench/postgres/load.sh
#
# environment:
#   PGHOST PGPORT PGUSER   a superuser connection (PGDATABASE: default postgres)
#   LAKEWARD_BASELINE      the lakeward-baseline binary (for `dump`)
#   DATA                   folder of the Delta tables, DATA/<schema>/<table>
#   PG_TABLES              the tables to load (default: all five)
#   PSEUDONYM_KEY          the pseudonymisation key, hex text (default: the
#                          contents of DATA/keys/pseudonym.key, as `lakeward demo`
#                          uses; pseudonyms then match lakeward's)
#
# Steps: schema.sql (drops and recreates schema raw), the five tables streamed
# as CSV from `lakeward-baseline dump` into COPY (in parallel, each in one
# transaction with TRUNCATE so that COPY FREEZE applies), then policy.sql
# (keys, indexes, roles, views, ANALYZE). Prints the time of each step.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

: "${PGHOST:?set PGHOST}" "${PGPORT:?set PGPORT}" "${PGUSER:?set PGUSER}"
: "${LAKEWARD_BASELINE:?set LAKEWARD_BASELINE to the lakeward-baseline binary}" "${DATA:?set DATA to the Delta tables folder}"
export PGHOST PGPORT PGUSER
export PGDATABASE=${PGDATABASE:-postgres}

if [[ -z ${PSEUDONYM_KEY:-} && -f $DATA/keys/pseudonym.key ]]; then
    PSEUDONYM_KEY=$(<"$DATA/keys/pseudonym.key")
fi
: "${PSEUDONYM_KEY:?set PSEUDONYM_KEY (hex)}"
PSEUDONYM_KEY=$(printf %s "$PSEUDONYM_KEY" | tr -d '[:space:]')
[[ $PSEUDONYM_KEY =~ ^([0-9a-fA-F]{2})+$ ]] || { echo "load.sh: PSEUDONYM_KEY must be hex" >&2; exit 2; }
export PSEUDONYM_KEY

[[ -x $LAKEWARD_BASELINE ]] || { echo "load.sh: $LAKEWARD_BASELINE is not executable" >&2; exit 2; }
[[ -d $DATA ]] || { echo "load.sh: $DATA is not a folder" >&2; exit 2; }

psql_() { psql -X -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

log=$(mktemp -d "${TMPDIR:-/tmp}/lakeward-pg-load.XXXXXX")
trap 'rm -rf "$log"' EXIT

t0=$(now)

# 1. schema
s=$(now)
psql_ -q -f "$here/schema.sql"
printf '%-22s %8s s\n' "schema.sql" "$(elapsed "$s" "$(now)")"

# 2. data: table name in lakeward -> table in PostgreSQL
declare -A source=(
    [patients]=clinical.patients
    [encounters]=clinical.encounters
    [observations]=clinical.observations
    [claims]=claims.claims
    [consents]=governance.consents
)
# PG_TABLES: load only these of the five (space-separated; the others stay
# empty), for a scale whose full copy does not fit the disk.
read -r -a tables <<<"${PG_TABLES:-observations claims encounters consents patients}" # largest first
for t in "${tables[@]}"; do
    [[ -n ${source[$t]:-} ]] || { echo "load.sh: PG_TABLES: no table $t" >&2; exit 2; }
done

load_one() {
    local t=$1 s e
    s=$(now)
    "$LAKEWARD_BASELINE" dump --data "$DATA" --table "${source[$t]}" \
        | psql_ -1 -c "TRUNCATE raw.$t" -c "\\copy raw.$t FROM pstdin (FORMAT csv, FREEZE)" \
            >"$log/$t.out" 2>"$log/$t.err"
    e=$(now)
    printf '%s %s\n' "$(elapsed "$s" "$e")" "$(grep -o 'COPY [0-9]*' "$log/$t.out" | tail -1)" >"$log/$t.time"
}

s=$(now)
declare -A pids=()
for t in "${tables[@]}"; do
    load_one "$t" &
    pids[$t]=$!
done
failed=0
for t in "${tables[@]}"; do
    if ! wait "${pids[$t]}"; then
        echo "load.sh: loading raw.$t from ${source[$t]} failed:" >&2
        cat "$log/$t.err" >&2 || true
        failed=1
    fi
done
((failed == 0)) || exit 1
for t in "${tables[@]}"; do
    read -r secs what <"$log/$t.time"
    printf '%-22s %8s s  (%s rows, in parallel)\n' "load raw.$t" "$secs" "${what#COPY }"
done
printf '%-22s %8s s\n' "load (wall)" "$(elapsed "$s" "$(now)")"

# 3. policy (the key is read from the environment by psql itself, so that it
#    is not on a command line)
s=$(now)
psql_ -q -c '\set pseudonym_key `printenv PSEUDONYM_KEY`' -f "$here/policy.sql"
printf '%-22s %8s s\n' "policy.sql" "$(elapsed "$s" "$(now)")"

printf '%-22s %8s s\n' "total" "$(elapsed "$t0" "$(now)")"
