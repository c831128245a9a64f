#!/usr/bin/env bash
# Where the time of the hot path goes: `perf record` of one whole run of a
# job of bench/throughput.py, summarised per thread and per (thread, symbol).
#   python3 bench/throughput.py --runs 1 --only identity,windows   # writes the configs
#   bash bench/profiles/profile.sh BINARY TAG        # e.g. target/release/sluice after
# Writes bench/profiles/{identity,windows}-TAG.txt (text, no perf.data kept).
set -eu
BIN=$1 TAG=$2
cd "$(dirname "$0")/../.."
W=target/bench-throughput
for job in identity windows; do
  perf record -F 999 -g -o "$W/$job-$TAG.perf" -- "$BIN" run --config "$W/$job.toml" >/dev/null 2>&1
  {
    echo "# $job, $TAG: perf record -F 999 -g of one run ($(date -u +%FT%RZ), load $(cut -d' ' -f1 /proc/loadavg))"
    echo "## samples per thread"
    perf report -i "$W/$job-$TAG.perf" --no-children --sort comm 2>/dev/null | grep '%' | grep -v -- '--' | head -10
    echo "## top (thread, symbol), self time"
    perf report -i "$W/$job-$TAG.perf" --no-children --sort comm,symbol 2>/dev/null \
      | grep '%' | grep -v -- '--' | grep -v '^ *|' | head -30 | cut -c1-140 | sed 's/ *$//'
  } > "bench/profiles/$job-$TAG.txt"
  rm -f "$W/$job-$TAG.perf"
done
