#!/usr/bin/env bash
# The flights windows job over 3.37M records with and without a tap attached
# (bench/ab.py: A and B in turn, medians, pair-by-pair ratios):
#   1. untapped at HEAD vs untapped at BEFORE (a binary built before taps
#      existed, e.g. from b01b303): the cost of a tap point nobody watches;
#   2. tapped at the source vs untapped, at HEAD: what watching costs.
#
#   cargo build --release -p sluice
#   bash bench/tap/run.sh BEFORE_BINARY [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BEFORE=$1 RUNS=${2:-7}
S=${SLUICE:-$PWD/target/release/sluice}
mkdir -p target/bench-tap
if [ ! -s target/bench-tap/flights10.ndjson ]; then
  for i in 1 2 3 4 5 6 7 8 9 10; do zcat examples/data/flights-2013.ndjson.gz; done \
    > target/bench-tap/flights10.ndjson
fi
echo "== untapped: HEAD (A) vs before taps (B)"
python3 bench/ab.py -n "$RUNS" --warmup 1 \
  --a "bash bench/tap/job.sh none $S" --b "bash bench/tap/job.sh none $BEFORE"
for at in source 0:flights_delay; do
  echo "== tapped at $at (A) vs untapped (B), HEAD"
  python3 bench/ab.py -n "$RUNS" --warmup 1 \
    --a "bash bench/tap/job.sh $at $S" --b "bash bench/tap/job.sh none $S"
done
