package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"
	"github.com/jonreiter/govader"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

// fixture is the source snapshot every run reads: one append of
// BENCH_PIPELINE_ROWS generated posts, made once per process.
type fixture struct {
	dir  string
	cat  *storage.Catalog
	src  *table.Table
	snap int64
	rows int64
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
	seq     atomic.Int64
)

const fixtureSeed = 7

func TestMain(m *testing.M) {
	code := m.Run()
	if fix != nil {
		_ = fix.cat.Close()
		_ = os.RemoveAll(fix.dir)
	}
	os.Exit(code)
}

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

func getFixture(b *testing.B) *fixture {
	b.Helper()
	fixOnce.Do(func() {
		f := &fixture{rows: envInt("BENCH_PIPELINE_ROWS", 1_000_000)}
		if f.dir, fixErr = os.MkdirTemp("", "enricher-bench-"); fixErr != nil {
			return
		}
		ctx := context.Background()
		f.cat, fixErr = storage.OpenCatalog(ctx, storage.CatalogConfig{Type: storage.CatalogSQL,
			URI: filepath.Join(f.dir, "catalog.db"), Warehouse: filepath.Join(f.dir, "warehouse")})
		if fixErr != nil {
			return
		}
		if f.src, fixErr = f.cat.CreateIcebergTable(ctx, "social.posts", postdata.Schema(), nil); fixErr != nil {
			return
		}
		f.src, _, fixErr = postdata.Append(ctx, f.src, postdata.Sample(f.rows, 1, fixtureSeed))
		if fixErr == nil {
			f.snap = f.src.CurrentSnapshot().SnapshotID
		}
		fix = f
	})
	if fixErr != nil {
		b.Fatalf("benchmark fixture: %v", fixErr)
	}
	return fix
}

func spec(b *testing.B, provider string) *enrich.Spec {
	b.Helper()
	s, err := enrich.LoadSpecWith("../../jobs/sentiment.yaml", enrich.Overrides{Provider: provider})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// bare is the baseline: iceberg-go alone doing the pipeline's I/O. An
// incremental append scan of the snapshot, its rows (the columns the job
// reads) streamed straight into an append to a table of the same columns,
// one commit. Library defaults throughout; the table is created beforehand
// with the same properties as the enricher's tables.
func (f *fixture) bare(ctx context.Context, b *testing.B, columns []string) float64 {
	b.Helper()
	proj, err := f.src.Scan(table.WithSelectedFields(columns...)).Projection()
	if err != nil {
		b.Fatal(err)
	}
	tgt, err := f.cat.CreateIcebergTable(ctx, fmt.Sprintf("social.bare_%d", seq.Add(1)), proj, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.drop(tgt)
	runtime.GC()
	start := time.Now()
	var rows int64
	pprof.Do(ctx, pprof.Labels("side", "bare"), func(ctx context.Context) {
		tasks, err := f.src.NewIncrementalAppendScan().FromSnapshotInclusive(f.snap).ToSnapshot(f.snap).PlanFiles(ctx)
		if err != nil {
			b.Fatal(err)
		}
		sc, recs, err := f.src.Scan(table.WithSelectedFields(columns...)).ReadTasks(ctx, tasks)
		if err != nil {
			b.Fatal(err)
		}
		counted := func(yield func(arrow.RecordBatch, error) bool) {
			for rec, err := range recs {
				if err == nil {
					rows += rec.NumRows()
				}
				if !yield(rec, err) {
					return
				}
			}
		}
		rdr := array.ReaderFromIter(sc, counted)
		defer rdr.Release()
		txn := tgt.NewTransaction()
		if err := txn.Append(ctx, rdr, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := txn.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	})
	elapsed := time.Since(start)
	if rows != f.rows {
		b.Fatalf("bare library read %d rows, want %d", rows, f.rows)
	}
	return float64(rows) / elapsed.Seconds()
}

// pipeline is one snapshot event processed by the enricher's processor with
// the runtime defaults (the ones `enricher run` uses when the config sets
// none), into a fresh target table.
func (f *fixture) pipeline(ctx context.Context, b *testing.B, s *enrich.Spec, model enrich.Model, label string) float64 {
	b.Helper()
	job := *s
	job.Target.Table = fmt.Sprintf("social.%s_%d", label, seq.Add(1))
	proc, err := pipeline.NewProcessor(f.cat, []pipeline.Job{{Spec: &job, Model: model}},
		pipeline.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	start := time.Now()
	var res []pipeline.Result
	pprof.Do(ctx, pprof.Labels("side", label), func(ctx context.Context) {
		res, err = proc.Process(ctx, consumer.SnapshotEvent{Version: 1, Table: s.Source.Table, SnapshotID: f.snap})
	})
	elapsed := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if got := res[0].RowsWritten; got != f.rows {
		b.Fatalf("pipeline wrote %d rows, want %d", got, f.rows)
	}
	if tgt, err := f.cat.LoadTable(ctx, job.Target.Table); err == nil {
		f.drop(tgt)
	}
	return float64(f.rows) / elapsed.Seconds()
}

// drop deletes a benchmark target's files, so that repeated runs do not
// fill the disk. (The catalog entry stays; nobody reads it again.)
func (f *fixture) drop(tgt *table.Table) {
	loc := tgt.Location()
	if p, ok := strings.CutPrefix(loc, "file://"); ok {
		_ = os.RemoveAll(p)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkPipeline is scenario 1 of BENCHMARKS.md: the enricher with the
// noop model against the bare library, on the same snapshot, one after the
// other in each iteration. It reports both rates and their ratio (the
// median over b.N iterations; run it with -benchtime 1x -count N).
func BenchmarkPipeline(b *testing.B) {
	f := getFixture(b)
	ctx := context.Background()
	s := spec(b, enrich.ProviderNoop)
	model, err := enrich.NewNoop(s)
	if err != nil {
		b.Fatal(err)
	}
	var bare, pipe, ratio []float64
	for b.Loop() {
		br := f.bare(ctx, b, s.Columns())
		pr := f.pipeline(ctx, b, s, model, "noop")
		bare, pipe, ratio = append(bare, br), append(pipe, pr), append(ratio, pr/br)
	}
	b.ReportMetric(float64(f.rows), "rows")
	b.ReportMetric(median(bare), "bare_rows/s")
	b.ReportMetric(median(pipe), "pipeline_rows/s")
	b.ReportMetric(median(ratio), "ratio")
}

// BenchmarkLexicon is the lexicon half of scenario 1: the enricher with
// the offline VADER model on the same snapshot, against govader's own
// scoring rate on one core (the same texts, cut as the pipeline cuts
// them) times the cores the pipeline may use.
func BenchmarkLexicon(b *testing.B) {
	f := getFixture(b)
	ctx := context.Background()
	s := spec(b, enrich.ProviderLexicon)
	model, err := enrich.NewLexicon(s)
	if err != nil {
		b.Fatal(err)
	}
	texts := sampleTexts(envInt("BENCH_GOVADER_ROWS", 100_000), s.Model.MaxTextChars)
	cores := runtime.GOMAXPROCS(0)
	var one, all, pipe, ratio, ratioAll []float64
	for b.Loop() {
		r1 := govaderRate(texts, 1)
		rn := govaderRate(texts, cores)
		pr := f.pipeline(ctx, b, s, model, "lexicon")
		one, all, pipe = append(one, r1), append(all, rn), append(pipe, pr)
		ratio, ratioAll = append(ratio, pr/(r1*float64(cores))), append(ratioAll, pr/rn)
	}
	b.ReportMetric(float64(f.rows), "rows")
	b.ReportMetric(float64(cores), "cores")
	b.ReportMetric(median(one), "govader_1core_rows/s")
	b.ReportMetric(median(all), "govader_allcores_rows/s")
	b.ReportMetric(median(pipe), "pipeline_rows/s")
	b.ReportMetric(median(ratio), "ratio")
	b.ReportMetric(median(ratioAll), "ratio_to_allcores")
}

// sampleTexts are the first n texts of the fixture's posts, as the
// pipeline hands them to the model: cut to maxChars, blank ones left out
// (they are never scored).
func sampleTexts(n int64, maxChars int) []string {
	var out []string
	for p := range postdata.Sample(n, 1, fixtureSeed) {
		if enrich.Blank(p.Text) {
			continue
		}
		t, _ := enrich.Truncate(p.Text, maxChars)
		out = append(out, t)
	}
	return out
}

// govaderRate is rows/s of govader alone over texts, split between
// goroutines goroutines (each with its own analyzer). With one it is the
// one-core rate; with one per core it is what the cores give right now,
// other load on the machine included.
func govaderRate(texts []string, goroutines int) float64 {
	sias := make([]*govader.SentimentIntensityAnalyzer, goroutines)
	for i := range sias {
		sias[i] = govader.NewSentimentIntensityAnalyzer()
	}
	runtime.GC()
	start := time.Now()
	var wg sync.WaitGroup
	per := (len(texts) + goroutines - 1) / goroutines
	for i, lo := 0, 0; lo < len(texts); i, lo = i+1, lo+per {
		part, sia := texts[lo:min(lo+per, len(texts))], sias[i]
		wg.Go(func() {
			var sink float64
			for _, t := range part {
				sink += sia.PolarityScores(t).Compound
			}
			_ = sink
		})
	}
	wg.Wait()
	return float64(len(texts)) / time.Since(start).Seconds()
}
