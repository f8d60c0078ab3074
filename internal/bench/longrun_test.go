package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go/table"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// The source table's upkeep in the long run, as an ingestion job would do
// it: every sourceExpireEvery appends it expires the source's snapshots
// down to the newest sourceKeepSnapshots (iceberg-go's own
// ExpireSnapshots, files of the expired snapshots deleted). The consumer
// is never behind by more than one snapshot, so this never cuts the
// history between its watermark and the next event.
const (
	sourceExpireEvery   = 100
	sourceKeepSnapshots = 10
	// longRunWindow is how many events the first and last medians span
	// (fewer, a quarter of the run, in a short run).
	longRunWindow = 500
)

// longRunConfig is one configuration of the long run.
type longRunConfig struct {
	events, rows int
	// off: maintenance off. The target is created before the first event
	// as the enricher created targets before issue 12 (no table
	// properties but enricher.job, so Iceberg's defaults: every
	// metadata.json kept, no manifest merging), and the processor runs
	// with NoMaintenance (no snapshot expiry after commits, no automatic
	// maintenance). Otherwise the enricher's defaults: the processor
	// creates the target with storage.TargetProperties and expires and
	// maintains it on its own.
	off bool
	// maintainEvery, when set, is the processor's MaintainEvery.
	maintainEvery time.Duration
	// checkpoints are the event counts after which both tables' health is
	// measured.
	checkpoints []int
	// mode names the configuration in pprof labels.
	mode string
}

// checkpoints are the event counts after which a run of events events
// measures its tables: a twentieth, a tenth, a fifth, half and all of
// full events (500, 1k, 2k, 5k and 10k for 10k), as far as the run goes,
// and its end.
func checkpoints(full, events int) []int {
	var out []int
	for _, div := range []int{20, 10, 5, 2, 1} {
		if n := full / div; n > 0 && n <= events && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if !slices.Contains(out, events) {
		out = append(out, events)
	}
	return out
}

// tableState is a table's health after some events, with its metadata
// folder on disk: every metadata.json, manifest list and manifest still
// there (Health counts only the metadata.json files the metadata log
// lists), and of those the ones the table no longer references (not the
// current metadata.json or one in its log, nor a held snapshot's manifest
// list or one of its manifests): orphans, which only orphan cleanup
// deletes.
type tableState struct {
	storage.TableHealth
	DirBytes, UnrefBytes int64
	DirFiles, UnrefFiles int
}

type checkpoint struct {
	events   int
	tgt, src tableState
	// load is the 1-minute load average of the machine.
	load float64
}

// longRunResult is what one run measured: per event, the consume time
// (the Consumer's OnOutcome Duration: Handle from receipt to the commit
// and what follows it in the event, snapshot expiry and automatic
// maintenance when due), the CPU time the process spent from publish to
// settlement (user + system, all threads: less sensitive than the wall
// clock to other work on the machine), and the plan and commit stages
// (OnStage).
type longRunResult struct {
	consume, cpu, plan, commit []time.Duration
	checkpoints                []checkpoint
	// expiries and maintenances count the processor's "expired target
	// snapshots" and "target maintained" log lines.
	expiries, maintenances int64
	wall                   time.Duration
}

// labeled is the consumer's handler with a pprof label on each
// message's work (and the goroutines it starts): longrun=MODE/PHASE,
// PHASE being first, middle or last (the event's window), so that a
// -cpuprofile of the benchmark compares the first and the last events
// with -tagfocus.
type labeled struct {
	consumer.Handler
	label atomic.Value // string
}

func (h *labeled) Handle(ctx context.Context, m *consumer.Message) (rep consumer.Report, err error) {
	pprof.Do(ctx, pprof.Labels("longrun", h.label.Load().(string)), func(ctx context.Context) {
		rep, err = h.Handler.Handle(ctx, m)
	})
	return rep, err
}

// countingHandler is a slog handler that drops every record but counts
// the processor's maintenance lines.
type countingHandler struct {
	expiries, maintenances *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case "expired target snapshots":
		h.expiries.Add(1)
	case "target maintained":
		h.maintenances.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// runLongRun pushes cfg.events append snapshots of cfg.rows posts each
// through the real consumer (consumer.Consumer on a MemQueue, the
// pipeline's Processor as its Handler, the sentiment job with the
// lexicon model) into a fresh warehouse, one event at a time as an
// ingestion job would publish them: append to the source, publish the
// snapshot event, wait for the message to be settled. At the end it
// checks that the target holds every source row exactly once.
func runLongRun(ctx context.Context, tb testing.TB, cfg longRunConfig) longRunResult {
	tb.Helper()
	dir := tb.TempDir()
	cat := testbed.SQLCatalog(tb, dir)
	spec, err := enrich.LoadSpecWith("../../jobs/sentiment.yaml", enrich.Overrides{Provider: enrich.ProviderLexicon})
	if err != nil {
		tb.Fatal(err)
	}
	model, err := enrich.NewLexicon(spec)
	if err != nil {
		tb.Fatal(err)
	}
	src, err := cat.CreateIcebergTable(ctx, spec.Source.Table, postdata.Schema(), storage.SourceProperties())
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.off {
		in, err := storage.ProjectedSchema(src, spec.Columns())
		if err != nil {
			tb.Fatal(err)
		}
		enr, err := enrich.NewEnricher(spec, model, in, memory.DefaultAllocator)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := cat.CreateTable(ctx, spec.Target.Table, enr.Schema(), map[string]string{"enricher.job": spec.Name}); err != nil {
			tb.Fatal(err)
		}
	}

	var res longRunResult
	var planNs, commitNs, expiries, maintenances atomic.Int64
	proc, err := pipeline.NewProcessor(cat, []pipeline.Job{{Spec: spec, Model: model}}, pipeline.Options{
		Logger:        slog.New(countingHandler{expiries: &expiries, maintenances: &maintenances}),
		NoMaintenance: cfg.off,
		MaintainEvery: cfg.maintainEvery,
		OnStage: func(_, stage string, d time.Duration) {
			switch stage {
			case "plan":
				planNs.Add(int64(d))
			case "commit":
				commitNs.Add(int64(d))
			}
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	q := consumer.NewMemQueue()
	outcomes := make(chan consumer.MessageOutcome, 1)
	h := &labeled{Handler: proc}
	w := window(cfg.events)
	c := &consumer.Consumer{Source: q, Handler: h, Logger: slog.New(slog.DiscardHandler),
		OnOutcome: func(o consumer.MessageOutcome) { outcomes <- o }}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			q.Close()
			if err := <-done; err != nil {
				tb.Errorf("consumer: %v", err)
			}
		}
	}
	defer stop()

	start := time.Now()
	nextID := int64(1)
	for i := 1; i <= cfg.events; i++ {
		src, _, err = postdata.Append(ctx, src, postdata.Sample(int64(cfg.rows), nextID, uint64(nextID)))
		if err != nil {
			tb.Fatalf("event %d: append to the source: %v", i, err)
		}
		nextID += int64(cfg.rows)
		phase := "middle"
		switch {
		case i <= w:
			phase = "first"
		case i > cfg.events-w:
			phase = "last"
		}
		h.label.Store(cfg.mode + "/" + phase)
		planNs.Store(0)
		commitNs.Store(0)
		cpu0 := cpuTime(tb)
		q.Publish(consumer.SnapshotEvent{Version: consumer.EventVersion, Table: spec.Source.Table,
			SnapshotID: src.CurrentSnapshot().SnapshotID}.Encode())
		var o consumer.MessageOutcome
		select {
		case o = <-outcomes:
		case err := <-done:
			stopped = true
			tb.Fatalf("event %d: the consumer stopped: %v", i, err)
		}
		if o.Action != consumer.ActionAcked {
			tb.Fatalf("event %d: message %s: %v", i, o.Action, o.Err)
		}
		if rep, ok := o.Report.(*pipeline.Report); !ok || len(rep.Results) != 1 || rep.Results[0].RowsWritten != int64(cfg.rows) {
			tb.Fatalf("event %d: want %d rows written, report %+v", i, cfg.rows, o.Report)
		}
		res.cpu = append(res.cpu, cpuTime(tb)-cpu0)
		res.consume = append(res.consume, o.Duration)
		res.plan = append(res.plan, time.Duration(planNs.Load()))
		res.commit = append(res.commit, time.Duration(commitNs.Load()))
		if i%sourceExpireEvery == 0 {
			src = testbed.ExpireSource(tb, src, sourceKeepSnapshots)
		}
		if slices.Contains(cfg.checkpoints, i) {
			res.checkpoints = append(res.checkpoints, measure(ctx, tb, cat, spec, i))
		}
	}
	res.wall = time.Since(start)
	stop()
	res.expiries, res.maintenances = expiries.Load(), maintenances.Load()
	requireExactlyOnce(ctx, tb, cat, spec.Target.Table, nextID-1)
	return res
}

// measure takes both tables' health after events events.
func measure(ctx context.Context, tb testing.TB, cat *storage.Catalog, spec *enrich.Spec, events int) checkpoint {
	tb.Helper()
	state := func(name string) tableState {
		tbl, err := cat.LoadTable(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := storage.Health(ctx, tbl)
		if err != nil {
			tb.Fatal(err)
		}
		return metadataFolder(tb, tbl, h)
	}
	return checkpoint{events: events, tgt: state(spec.Target.Table), src: state(spec.Source.Table), load: loadAvg()}
}

// cpuTime is the CPU time the process has used (user + system).
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the machine's 1-minute load average (-1 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var l float64
	if _, err := fmt.Sscan(string(b), &l); err != nil {
		return -1
	}
	return l
}

// metadataFolder measures tbl's metadata folder on disk.
func metadataFolder(tb testing.TB, tbl *table.Table, h storage.TableHealth) tableState {
	tb.Helper()
	local := func(p string) string { return strings.TrimPrefix(p, "file://") }
	refs := map[string]bool{local(tbl.MetadataLocation()): true}
	for e := range tbl.Metadata().PreviousFiles() {
		refs[local(e.MetadataFile)] = true
	}
	fsys, err := tbl.FS(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	for _, snap := range tbl.Metadata().Snapshots() {
		refs[local(snap.ManifestList)] = true
		manifests, err := snap.Manifests(fsys)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range manifests {
			refs[local(m.FilePath())] = true
		}
	}
	s := tableState{TableHealth: h}
	err = filepath.WalkDir(filepath.Join(local(tbl.Location()), "metadata"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		s.DirBytes += fi.Size()
		s.DirFiles++
		if !refs[path] {
			s.UnrefBytes += fi.Size()
			s.UnrefFiles++
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		tb.Fatal(err)
	}
	return s
}

// requireExactlyOnce checks that the target holds posts 1..n once each.
func requireExactlyOnce(ctx context.Context, tb testing.TB, cat *storage.Catalog, name string, n int64) {
	tb.Helper()
	tgt, err := cat.LoadTable(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	seen := make([]uint8, n+1)
	var rows int64
	for row, err := range storage.Rows(ctx, tgt, 0) {
		if err != nil {
			tb.Fatal(err)
		}
		id, ok := row["post_id"].(int64)
		if !ok || id < 1 || id > n {
			tb.Fatalf("target row with post_id %v, want 1..%d", row["post_id"], n)
		}
		if seen[id]++; seen[id] > 1 {
			tb.Fatalf("post %d is in the target more than once", id)
		}
		rows++
	}
	if rows != n {
		tb.Fatalf("target holds %d rows, want %d", rows, n)
	}
}

// window is how many events the first and last medians of a run of
// events events span.
func window(events int) int { return min(longRunWindow, max(1, events/4)) }

// windowStats are the median, the mean and the 95th percentile, in ms,
// of the first and the last w values of ds.
func windowStats(ds []time.Duration, w int) (first, last [3]float64) {
	stats := func(ds []time.Duration) [3]float64 {
		ms := make([]float64, len(ds))
		sum := 0.0
		for i, d := range ds {
			ms[i] = float64(d) / float64(time.Millisecond)
			sum += ms[i]
		}
		slices.Sort(ms)
		return [3]float64{median(ms), sum / float64(len(ms)), ms[min(len(ms)-1, len(ms)*95/100)]}
	}
	return stats(ds[:w]), stats(ds[len(ds)-w:])
}

// longRunModes are BenchmarkLongRun's configurations, in order.
var longRunModes = []string{"defaults", "defaults-paced", "off"}

// BenchmarkLongRun is scenario 7 of BENCHMARKS.md: BENCH_LONGRUN_EVENTS
// events (default 10,000) of BENCH_LONGRUN_ROWS posts each (default 10)
// through the real consumer, in three configurations, one after the
// other (sub-benchmarks maintenance=MODE):
//
//   - defaults: the processor's defaults (pipeline.Options with only a
//     logger and the timing hooks), target created by the processor.
//     At the benchmark's pace (tens of events a second) the hourly
//     automatic maintenance runs once, when the target first holds 64
//     files, and not again.
//   - defaults-paced: the same with MaintainEvery = 1 ns, so that
//     maintenance is due whenever the target holds 64 data files: what
//     the hourly default does at one event a minute or slower (an hour
//     brings at most 60 new files), the rate of issue 12's deployment.
//   - off: maintenance off (see longRunConfig.off), for
//     BENCH_LONGRUN_OFF_EVENTS events (default 2,000: without
//     maintenance the metadata folder grows with the square of the
//     events, about 0.5 GB after 1,000, so 10,000 would need some 50 GB
//     and hours).
//
// BENCH_LONGRUN_MODES (comma-separated) runs only some of them. Each
// reports the median consume time per event over the first and the last
// 500 events (a quarter of the run when shorter) and their ratio, the
// same for CPU time and for the plan and commit stages, the slowest
// event, and both tables' health after 500, 1k, 2k, 5k and 10k events
// (prefix at<N>_; fractions of BENCH_LONGRUN_EVENTS) and at the end
// (prefix end_, with the current metadata.json and the manifests too):
// the metadata.json bytes Health counts (metadata_B), the whole metadata
// folder on disk (metadata_dir_B), snapshots, manifests, data files.
// Run it with -benchtime 1x: an iteration is a whole run.
func BenchmarkLongRun(b *testing.B) {
	events := int(envInt("BENCH_LONGRUN_EVENTS", 10_000))
	offEvents := int(min(envInt("BENCH_LONGRUN_OFF_EVENTS", 2_000), int64(events)))
	rows := int(envInt("BENCH_LONGRUN_ROWS", 10))
	modes := longRunModes
	if v := os.Getenv("BENCH_LONGRUN_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}
	for _, mode := range modes {
		cfg := longRunConfig{events: events, rows: rows, mode: mode}
		switch mode {
		case "defaults":
		case "defaults-paced":
			cfg.maintainEvery = time.Nanosecond
		case "off":
			cfg.off, cfg.events = true, offEvents
		default:
			b.Fatalf("BENCH_LONGRUN_MODES: unknown mode %q (want %s)", mode, strings.Join(longRunModes, ", "))
		}
		cfg.checkpoints = checkpoints(events, cfg.events)
		b.Run("maintenance="+mode, func(b *testing.B) {
			var runs []longRunResult
			for b.Loop() {
				runs = append(runs, runLongRun(b.Context(), b, cfg))
			}
			reportLongRun(b, cfg, runs)
		})
	}
}

// reportLongRun reports the medians over runs of what they measured.
func reportLongRun(b *testing.B, cfg longRunConfig, runs []longRunResult) {
	w := window(cfg.events)
	metric := func(unit string, f func(r longRunResult) float64) {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		b.ReportMetric(median(xs), unit)
	}
	b.ReportMetric(float64(cfg.events), "events")
	b.ReportMetric(float64(cfg.rows), "rows/event")
	b.ReportMetric(float64(w), "window")
	for _, s := range []struct {
		prefix string
		get    func(longRunResult) []time.Duration
	}{
		{"", func(r longRunResult) []time.Duration { return r.consume }},
		{"cpu_", func(r longRunResult) []time.Duration { return r.cpu }},
		{"plan_", func(r longRunResult) []time.Duration { return r.plan }},
		{"commit_", func(r longRunResult) []time.Duration { return r.commit }},
	} {
		for k, stat := range []string{"", "mean_", "p95_"} {
			if stat != "" && s.prefix != "" && s.prefix != "cpu_" {
				continue // medians only for the stages
			}
			metric(s.prefix+stat+"first_ms", func(r longRunResult) float64 { f, _ := windowStats(s.get(r), w); return f[k] })
			metric(s.prefix+stat+"last_ms", func(r longRunResult) float64 { _, l := windowStats(s.get(r), w); return l[k] })
			metric(s.prefix+stat+"ratio", func(r longRunResult) float64 { f, l := windowStats(s.get(r), w); return l[k] / f[k] })
		}
	}
	metric("max_ms", func(r longRunResult) float64 { return float64(slices.Max(r.consume)) / float64(time.Millisecond) })
	metric("wall_s", func(r longRunResult) float64 { return r.wall.Seconds() })
	metric("target_expiries", func(r longRunResult) float64 { return float64(r.expiries) })
	metric("target_maintenances", func(r longRunResult) float64 { return float64(r.maintenances) })
	for k, n := range cfg.checkpoints {
		cp := func(r longRunResult) checkpoint { return r.checkpoints[k] }
		// The last checkpoint (the end) is reported twice: at<N>_ and end_,
		// with more figures.
		prefixes := []string{fmt.Sprintf("at%d_", n)}
		if n == cfg.events {
			prefixes = append(prefixes, "end_")
		}
		for _, prefix := range prefixes {
			metric(prefix+"load", func(r longRunResult) float64 { return cp(r).load })
			for _, side := range []string{"target", "source"} {
				st := func(r longRunResult) tableState {
					if side == "target" {
						return cp(r).tgt
					}
					return cp(r).src
				}
				metric(prefix+side+"_metadata_B", func(r longRunResult) float64 { return float64(st(r).MetadataBytes) })
				metric(prefix+side+"_metadata_dir_B", func(r longRunResult) float64 { return float64(st(r).DirBytes) })
				metric(prefix+side+"_unreferenced_B", func(r longRunResult) float64 { return float64(st(r).UnrefBytes) })
				metric(prefix+side+"_snapshots", func(r longRunResult) float64 { return float64(st(r).Snapshots) })
				metric(prefix+side+"_data_files", func(r longRunResult) float64 { return float64(st(r).DataFiles) })
				if prefix == "end_" {
					metric(prefix+side+"_metadata_json_B", func(r longRunResult) float64 { return float64(st(r).CurrentMetadataBytes) })
					metric(prefix+side+"_metadata_dir_files", func(r longRunResult) float64 { return float64(st(r).DirFiles) })
					metric(prefix+side+"_unreferenced_files", func(r longRunResult) float64 { return float64(st(r).UnrefFiles) })
					metric(prefix+side+"_manifests", func(r longRunResult) float64 { return float64(st(r).Manifests) })
					metric(prefix+side+"_manifest_B", func(r longRunResult) float64 { return float64(st(r).ManifestBytes) })
				}
			}
		}
	}
}

// TestLongRunStaysBounded is the long run at CI size, with the defaults
// paced as one event a minute (maintenance due whenever the target holds
// 64 files; see BenchmarkLongRun): over 300 events through the real
// consumer, every row lands once, the target holds a bounded history, and
// what a commit reads and rewrites (the current metadata.json, the
// current snapshot's manifests) and the metadata the table references
// stop growing: their peak over the last 100 events is no higher than
// over the 100 before (up to 25%, for where the expiry, merge and
// maintenance cycles happen to stand). Bytes and counts only: nothing is
// timed.
//
// Not asserted: the unreferenced files of the metadata folder (logged).
// A commit that merges manifests leaves its own new manifest behind
// (iceberg-go 0.7 does not delete it), and only orphan cleanup deletes
// it, a day after it was written (storage.DefaultOrphanGrace): a day's
// worth in a deployment, every one of them in a run that takes seconds.
func TestLongRunStaysBounded(t *testing.T) {
	const events = 300
	var cps []int
	for n := 10; n <= events; n += 10 {
		cps = append(cps, n)
	}
	res := runLongRun(t.Context(), t, longRunConfig{events: events, rows: 10, mode: "test",
		maintainEvery: time.Nanosecond, checkpoints: cps})
	if res.maintenances == 0 {
		t.Error("the target was never maintained")
	}
	peak := func(from, to int, get func(tableState) int64) (out int64) {
		for _, cp := range res.checkpoints {
			if cp.events > from && cp.events <= to {
				out = max(out, get(cp.tgt))
			}
		}
		return out
	}
	for _, m := range []struct {
		name string
		get  func(tableState) int64
	}{
		{"metadata.json bytes (Health)", func(s tableState) int64 { return s.MetadataBytes }},
		{"current metadata.json bytes", func(s tableState) int64 { return s.CurrentMetadataBytes }},
		{"manifest bytes", func(s tableState) int64 { return s.ManifestBytes }},
		{"manifests", func(s tableState) int64 { return int64(s.Manifests) }},
		{"referenced metadata bytes", func(s tableState) int64 { return s.DirBytes - s.UnrefBytes }},
		{"data files", func(s tableState) int64 { return s.DataFiles }},
	} {
		before, last := peak(100, 200, m.get), peak(200, 300, m.get)
		t.Logf("%s: peak %d over events 101-200, %d over 201-300", m.name, before, last)
		if before <= 0 || float64(last) > 1.25*float64(before) {
			t.Errorf("%s grow: peak %d over events 101-200, %d over 201-300", m.name, before, last)
		}
	}
	end := res.checkpoints[len(res.checkpoints)-1].tgt
	t.Logf("unreferenced files in the metadata folder after %d events: %d, %d bytes", events, end.UnrefFiles, end.UnrefBytes)
	if limit := storage.DefaultMinSnapshotsToKeep + storage.DefaultExpireBatch; end.Snapshots > limit {
		t.Errorf("the target holds %d snapshots, want at most %d", end.Snapshots, limit)
	}
	if end.MetadataFiles > storage.DefaultPreviousVersionsMax+1 {
		t.Errorf("the target keeps %d metadata.json files, want at most %d", end.MetadataFiles, storage.DefaultPreviousVersionsMax+1)
	}
}
