#!/bin/sh
# The built-in stages in whole jobs (release build): each job with the stage
# (A) against the same job without it (B), run in turn by bench/ab.py.
#
#   cargo build --release -p sluice && sh bench/state/run.sh [RUNS]
set -eu
cd "$(dirname "$0")/../.."
n="${1:-7}"
mkdir -p target/bench-state target/dedup-in
python3 examples/dedup/make_input.py > target/dedup-in/flights-with-duplicates.ndjson
bin=target/release/sluice
echo "== dedup (370,453 records in, 336,776 out) vs no stage (370,453 out)"
python3 bench/ab.py -n "$n" --warmup 1 \
    --a "$bin run --config bench/state/dedup.toml" \
    --b "$bin run --config bench/state/nodedup.toml"
echo "== join with airports (336,776, gzip) vs no stage"
python3 bench/ab.py -n "$n" --warmup 1 \
    --a "$bin run --config bench/state/join.toml" \
    --b "$bin run --config bench/state/nojoin.toml"
