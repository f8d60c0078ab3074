#!/usr/bin/env bash
# Peak memory of the consume phase at two snapshot sizes, 10x apart.
#
#   scripts/bench-memory.sh [SMALL] [LARGE] [RUNS]      (default 100000 1000000 3)
#
# Each run is `enricher demo --generate N --rounds 1`: one append snapshot
# of N posts, then the whole flow. The demo resets the kernel's peak-RSS mark
# (/proc/self/clear_refs) after ingesting, so the figure is the resident set
# while consuming: plan, read, enrich, write and commit. Prints a Markdown
# table with the median of RUNS runs and the ratio LARGE/SMALL.
set -euo pipefail
cd "$(dirname "$0")/.."
small=${1:-100000}; large=${2:-1000000}; runs=${3:-3}
bin=$(mktemp -d)/enricher
work=$(mktemp -d)
trap 'rm -rf "$work" "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/enricher

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

measure() { # N -> "peakMiB rows/s" medians
  local n=$1 peaks=() rates=()
  for _ in $(seq "$runs"); do
    out=$("$bin" demo --generate "$n" --rounds 1 --samples 0 --workdir "$work/demo")
    peaks+=("$(grep 'peak memory' <<<"$out" | awk '{print $3}')")
    rates+=("$(grep -E '^  time' <<<"$out" | sed -E 's/.*\(([0-9]+) rows\/s\).*/\1/')")
  done
  echo "$(printf '%s\n' "${peaks[@]}" | median) $(printf '%s\n' "${rates[@]}" | median)"
}

read -r ps rs < <(measure "$small")
read -r pl rl < <(measure "$large")
ratio=$(awk -v a="$pl" -v b="$ps" 'BEGIN {printf "%.2f", a/b}')
echo "| rows | peak RSS while consuming (MiB) | rows/s |"
echo "| ---: | ---: | ---: |"
echo "| $small | $ps | $rs |"
echo "| $large | $pl | $rl |"
echo
echo "peak RSS ratio ${large}/${small} rows: $ratio (median of $runs runs each)"
