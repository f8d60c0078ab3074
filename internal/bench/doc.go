// Package bench holds the end-to-end benchmarks of the enricher that
// scripts/bench.sh runs and BENCHMARKS.md reports; the package itself has
// no code the binary uses. Its benchmarks (bench_test.go) put the whole
// pipeline (plan, incremental read, enrich, write and commit) side by side
// with the bare iceberg-go library doing the same I/O on the same snapshot,
// in the same process, and report rates and ratios with b.ReportMetric.
//
// Sizes come from the environment: BENCH_PIPELINE_ROWS (rows of the snapshot,
// default 1,000,000) and BENCH_GOVADER_ROWS (rows scored on one core to
// measure govader's own rate, default 100,000).
package bench
