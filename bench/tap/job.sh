#!/usr/bin/env bash
# One run of bench/tap/flights.toml with the sluice binary BIN: MODE `none`
# waits for the admin API to answer and lets the job run; MODE `AT` (e.g.
# `source`, `0:flights_delay`, `window`) also attaches `sluice tap --at AT
# --max-records 10000` (the most a tap shows: the worst case) as soon as the
# admin API answers, its lines written to /dev/null. Both modes poll the same.
#   bench/tap/job.sh MODE BIN
set -euo pipefail
cd "$(dirname "$0")"
MODE=$1 BIN=$2
"$BIN" run --config flights.toml 2>/dev/null &
DAEMON=$!
until (exec 3<>/dev/tcp/127.0.0.1/19464) 2>/dev/null; do
  kill -0 $DAEMON 2>/dev/null || break
  sleep 0.005
done
TAP=
if [ "$MODE" != none ]; then
  "$BIN" tap --admin 127.0.0.1:19464 --pipeline hourly --at "$MODE" --max-records 10000 >/dev/null 2>&1 &
  TAP=$!
fi
wait $DAEMON
[ -z "$TAP" ] || kill $TAP 2>/dev/null || true
