package enrich

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Micro-benchmarks of the enrich stage's hot paths (scenario 6 of
// BENCHMARKS.md): building a request's user message, reading and
// validating a model's answer, the rate limiter and the adaptive gate,
// and a whole Arrow batch through Enrich with the noop and lexicon models
// (answers to typed columns and lineage columns). scripts/bench.sh runs
// them with -benchmem.

// benchTexts are n tweet-like posts of varied length and content.
func benchTexts(n int) []string {
	words := []string{"the", "new", "phone", "is", "amazing", "#monday", "🙂", "worst", "service", "ever", "@user",
		"can't", "wait", "for", "the", "concert", "tonight", "lol", "train", "late", "again", ":(", "http://t.co/x"}
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for w := range 6 + i%18 {
			if w > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[(i*7+w*3)%len(words)])
		}
		out[i] = b.String()
	}
	return out
}

func benchSpec(b *testing.B, provider string) *Spec {
	b.Helper()
	s, err := LoadSpecWith("../jobs/sentiment.yaml", Overrides{Provider: provider})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

var benchRowsPerRequest = []int{1, 20, 50}

func BenchmarkUserMessage(b *testing.B) {
	for _, rpr := range benchRowsPerRequest {
		b.Run(fmt.Sprintf("rpr=%d", rpr), func(b *testing.B) {
			rows := make([]promptRow, rpr)
			for i, t := range benchTexts(rpr) {
				rows[i] = promptRow{ID: strconv.Itoa(i), Text: t}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := userMessage(rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rpr), "ns/row")
		})
	}
}

// benchAnswer is a valid columnar answer of the sentiment job to n rows,
// the score in hundredths.
func benchAnswer(n int) (string, []string) {
	labels := []string{"negative", "neutral", "positive"}
	ids := make([]string, n)
	quoted := make([]string, n)
	sentiments := make([]string, n)
	scores := make([]string, n)
	taken := map[string]bool{}
	for i := range n {
		ids[i] = rowID(strconv.Itoa(i), taken)
		quoted[i] = strconv.Quote(ids[i])
		sentiments[i] = strconv.Quote(labels[i%3])
		scores[i] = strconv.Itoa((i%3 - 1) * 73)
	}
	return `{"id":[` + strings.Join(quoted, ",") + `],"sentiment":[` + strings.Join(sentiments, ",") +
		`],"score":[` + strings.Join(scores, ",") + `]}`, ids
}

func BenchmarkParseAnswer(b *testing.B) {
	spec := benchSpec(b, ProviderNoop)
	for _, rpr := range benchRowsPerRequest {
		b.Run(fmt.Sprintf("rpr=%d", rpr), func(b *testing.B) {
			content, ids := benchAnswer(rpr)
			b.ReportAllocs()
			for b.Loop() {
				answers, unknown, err := parseAnswer(content, ids, spec.Outputs)
				if err != nil || unknown != 0 || answers[0].Status != StatusOK {
					b.Fatalf("parse: %v, %d unknown, %+v", err, unknown, answers[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rpr), "ns/row")
		})
	}
}

// BenchmarkLimiterWait is the limiter's cost per request when quotas are
// far away (it never sleeps): what every request pays.
func BenchmarkLimiterWait(b *testing.B) {
	l := newLimiter(1<<40, 1<<50)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := l.wait(ctx, 1500); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLimiterWaitParallel is the same with every CPU asking at once.
func BenchmarkLimiterWaitParallel(b *testing.B) {
	l := newLimiter(1<<40, 1<<50)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.wait(ctx, 1500); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGate is one acquire and release of the adaptive concurrency
// gate, uncontended.
func BenchmarkGate(b *testing.B) {
	g := newGate(64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := g.acquire(ctx); err != nil {
			b.Fatal(err)
		}
		g.release(false, true)
	}
}

// benchBatch is an Arrow batch of n posts in the source table's columns.
func benchBatch(mem memory.Allocator, n int) arrow.RecordBatch {
	rb := array.NewRecordBuilder(mem, PostsSchema)
	defer rb.Release()
	for i, t := range benchTexts(n) {
		rb.Field(0).(*array.Int64Builder).Append(int64(i + 1))
		if i%100 == 0 {
			rb.Field(1).AppendNull() // a skipped row now and then
		} else {
			rb.Field(1).(*array.StringBuilder).Append(t)
		}
		rb.Field(2).(*array.StringBuilder).Append("author" + strconv.Itoa(i%50))
		rb.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(1_700_000_000_000_000 + int64(i)))
		rb.Field(4).(*array.StringBuilder).Append("en")
	}
	return rb.NewRecordBatch()
}

// benchEnrich runs 8192-row batches (the pipeline's default) through
// Enrich with model: skip rule, cut rule, the model, validation, and the
// assembly of typed output and lineage columns.
func benchEnrich(b *testing.B, model func(*Spec) (Model, error), provider string) {
	spec := benchSpec(b, provider)
	m, err := model(spec)
	if err != nil {
		b.Fatal(err)
	}
	rec := benchBatch(memory.DefaultAllocator, 8192)
	defer rec.Release()
	e, err := NewEnricher(spec, m, rec.Schema(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, _, err := e.Enrich(ctx, rec, 42)
		if err != nil {
			b.Fatal(err)
		}
		out.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*int(rec.NumRows())), "ns/row")
}

func BenchmarkEnrichNoop(b *testing.B) {
	benchEnrich(b, func(s *Spec) (Model, error) { return NewNoop(s) }, ProviderNoop)
}

func BenchmarkEnrichLexicon(b *testing.B) {
	benchEnrich(b, func(s *Spec) (Model, error) { return NewLexicon(s) }, ProviderLexicon)
}
