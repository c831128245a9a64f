#!/usr/bin/env bash
# The postgres sink's throughput against psql's \copy of the same rows, side
# by side (bench/ab.py: A and B in turn, medians, pair-by-pair ratios):
#   append: the 336,776 flights (ten columns) into an emptied table, vs
#           \copy of the same rows as CSV into an emptied table;
#   upsert: the same rows into a table that already holds them (every row an
#           ON CONFLICT … DO UPDATE), vs \copy into a temporary table and one
#           INSERT … SELECT … ON CONFLICT … DO UPDATE.
# A throw-away cluster on 127.0.0.1:55432 (Debian's postgresql package; run
# as root it runs the server as `postgres`), stopped at the end.
#
#   cargo build --release -p sluice && bash bench/postgres/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
W=$PWD/target/bench-postgres
mkdir -p "$W"
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATA=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$DATA"
as_pg "$BIN/initdb" -D "$DATA/db" -A trust -U postgres >/dev/null
as_pg "$BIN/pg_ctl" -D "$DATA/db" -l "$DATA/log" -w \
  -o "-p 55432 -k $DATA -c listen_addresses=127.0.0.1" start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DATA/db" -m fast stop >/dev/null; rm -rf "$DATA"' EXIT
PSQL="$BIN/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 55432 -U postgres postgres"

COLS="carrier text, flight bigint, tailnum text, origin text, dest text, dep_delay bigint,
      arr_delay bigint, distance bigint, sched_dep_ts timestamptz, event_time timestamptz"
KEY="carrier, flight, origin, sched_dep_ts"
$PSQL <<SQL
CREATE TABLE flights_append ($COLS);
CREATE TABLE flights_copy ($COLS);
CREATE TABLE flights_upsert ($COLS, PRIMARY KEY ($KEY));
CREATE TABLE flights_copy_upsert ($COLS, PRIMARY KEY ($KEY));
SQL

# The same rows as CSV, for \copy (an empty field is NULL).
python3 - "$W/flights.csv" <<'PY'
import csv, gzip, json, sys
cols = ["carrier", "flight", "tailnum", "origin", "dest", "dep_delay", "arr_delay",
        "distance", "sched_dep_ts", "event_time"]
with gzip.open("examples/data/flights-2013.ndjson.gz", "rt") as f, open(sys.argv[1], "w", newline="") as out:
    w = csv.writer(out)
    for line in f:
        r = json.loads(line)
        w.writerow(["" if r.get(c) is None else r[c] for c in cols])
PY

S=$PWD/target/release/sluice
SET=$(echo "$COLS" | tr ',' '\n' | awk 'NF {print $1}' | grep -v -E '^(carrier|flight|origin|sched_dep_ts)$' \
      | sed 's/.*/& = EXCLUDED.&/' | paste -sd, -)
cat > "$W/copy-upsert.sql" <<SQL
BEGIN;
CREATE TEMP TABLE staged (LIKE flights_copy_upsert) ON COMMIT DROP;
\\copy staged FROM '$W/flights.csv' CSV
INSERT INTO flights_copy_upsert SELECT * FROM staged ON CONFLICT ($KEY) DO UPDATE SET $SET;
COMMIT;
SQL
cat > "$W/sluice-append.sh" <<SH
$PSQL -c 'TRUNCATE flights_append' && exec $S run --config bench/postgres/append.toml
SH
cat > "$W/copy-append.sh" <<SH
$PSQL -c 'TRUNCATE flights_copy' && exec $PSQL -c "\\\\copy flights_copy FROM '$W/flights.csv' CSV"
SH

echo "== append: sluice (A) vs psql \\copy (B), $RUNS runs each"
python3 bench/ab.py -n "$RUNS" --a "bash $W/sluice-append.sh" --b "bash $W/copy-append.sh"
echo "== upsert into a full table: sluice (A) vs \\copy + INSERT … ON CONFLICT (B), $RUNS runs each"
python3 bench/ab.py -n "$RUNS" --a "$S run --config bench/postgres/upsert.toml" --b "$PSQL -f $W/copy-upsert.sql"
echo "== rows in each table (336,776 each)"
$PSQL -t -c "SELECT (SELECT count(*) FROM flights_append), (SELECT count(*) FROM flights_copy),
                    (SELECT count(*) FROM flights_upsert), (SELECT count(*) FROM flights_copy_upsert)"
echo "== the tables agree (rows in one and not the other: 0 0)"
$PSQL -t -c "SELECT (SELECT count(*) FROM (SELECT * FROM flights_append EXCEPT ALL SELECT * FROM flights_copy) d),
                    (SELECT count(*) FROM (SELECT * FROM flights_upsert EXCEPT SELECT * FROM flights_copy_upsert) e)"
