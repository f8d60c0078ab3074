// Package bench holds the end-to-end benchmarks of the enricher that
// scripts/bench.sh runs and BENCHMARKS.md reports; the package itself has
// no code the binary uses. Its benchmarks (bench_test.go) put the whole
// pipeline (plan, incremental read, enrich, write and commit) side by side
// with the bare iceberg-go library doing the same I/O on the same snapshot,
// in the same process, and report rates and ratios with b.ReportMetric.
//
// BenchmarkLongRun (longrun_test.go) is the long run of issue 12: many small
// events through the real consumer, with the enricher's defaults, the same
// paced as one event a minute, and maintenance off; it reports the consume
// time per event over the first and last events and the tables' metadata
// as they grow. TestLongRunStaysBounded is its CI-sized check, on bytes and
// counts only.
//
// Sizes come from the environment: BENCH_PIPELINE_ROWS (rows of the snapshot,
// default 1,000,000) and BENCH_GOVADER_ROWS (rows scored on one core to
// measure govader's own rate, default 100,000); for the long run
// BENCH_LONGRUN_EVENTS (default 10,000), BENCH_LONGRUN_ROWS (rows per event,
// default 10), BENCH_LONGRUN_OFF_EVENTS (events with maintenance off,
// default 2,000) and BENCH_LONGRUN_MODES (which configurations).
package bench
