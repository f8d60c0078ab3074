#!/usr/bin/env bash
# Before and after a change: BenchmarkPipeline and BenchmarkLexicon
# (./internal/bench, section 1 of BENCHMARKS.md) of a base commit against
# this working tree, run alternately on the same machine so that load
# moves both sides alike.
#
#   scripts/bench-ab.sh BASE [ROUNDS]    # ROUNDS: base/new pairs (default 3)
#
# It builds both test binaries first (the base in a temporary worktree),
# then runs base, new, base, new, ... each on its own checkout's data, and
# prints a Markdown table: per benchmark, the median over the rounds of the
# pipeline's rows/s on each side, and the median of the new/base ratios of
# each round. BENCH_PIPELINE_ROWS and BENCH_GOVADER_ROWS set the sizes (as
# for scripts/bench.sh; defaults 1,000,000 and 100,000).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-ab.sh BASE [ROUNDS]}
rounds=${2:-3}
base_rev=$(git rev-parse --short "$base^{commit}")
new_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo '+changes')"
tmp=$(mktemp -d)
cleanup() { git worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
git worktree add --detach "$tmp/base" "$base_rev" >/dev/null 2>&1
echo "bench-ab: building $base_rev and $new_rev" >&2
(cd "$tmp/base" && go test -c -o "$tmp/base.test" ./internal/bench)
go test -c -o "$tmp/new.test" ./internal/bench
export BENCH_PIPELINE_ROWS=${BENCH_PIPELINE_ROWS:-1000000} BENCH_GOVADER_ROWS=${BENCH_GOVADER_ROWS:-100000}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$rounds"); do
  for side in base new; do
    dir=internal/bench
    [ "$side" = base ] && dir="$tmp/base/internal/bench"
    echo "bench-ab: round $round of $rounds, $side" >&2
    (cd "$dir" && "$tmp/$side.test" -test.run '^$' -test.bench '^(BenchmarkPipeline|BenchmarkLexicon)$' -test.benchtime 1x) |
      awk -v side="$side" -v round="$round" '/^Benchmark/ {
        name = $1; sub(/-[0-9]+$/, "", name)
        for (i = 3; i < NF; i++) if ($(i + 1) == "pipeline_rows/s") print name, side, round, $i }'
  done
done >"$tmp/runs.txt"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "A/B by \`scripts/bench-ab.sh $base $rounds\` on $(date -u +%Y-%m-%dT%H:%M:%SZ): base $base_rev, new $new_rev, $rounds rounds"
echo "alternating base/new, $(nproc) cores, load average $load_before at the start and $load_after at the end."
echo
echo "| benchmark | base rows/s (median) | new rows/s (median) | new / base (median of the rounds' ratios) |"
echo "| --- | ---: | ---: | ---: |"
for bench in BenchmarkPipeline BenchmarkLexicon; do
  b=$(awk -v n="$bench" '$1 == n && $2 == "base" { print $4 }' "$tmp/runs.txt" | median)
  n=$(awk -v n="$bench" '$1 == n && $2 == "new" { print $4 }' "$tmp/runs.txt" | median)
  r=$(awk -v n="$bench" '$1 == n { v[$2 "," $3] = $4 } END { for (k in v) { split(k, p, ","); if (p[1] == "new" && v["base," p[2]] > 0) print v[k] / v["base," p[2]] } }' "$tmp/runs.txt" | median)
  printf '| `%s` | %.0f | %.0f | %.2f |\n' "$bench" "$b" "$n" "$r"
done
