package enrich_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

func sentimentSpec(t *testing.T) *enrich.Spec {
	t.Helper()
	spec, err := enrich.LoadSpec("../jobs/sentiment.yaml")
	require.NoError(t, err)
	return spec
}

// input builds a batch of posts; a nil text is a null.
func input(t *testing.T, mem memory.Allocator, texts []*string) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, enrich.PostsSchema)
	defer b.Release()
	for i, s := range texts {
		b.Field(0).(*array.Int64Builder).Append(int64(1000 + i))
		if s == nil {
			b.Field(1).AppendNull()
		} else {
			b.Field(1).(*array.StringBuilder).Append(*s)
		}
		b.Field(2).(*array.StringBuilder).Append("author" + string(rune('a'+i)))
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(1_700_000_000_000_000 + int64(i)))
		b.Field(4).(*array.StringBuilder).Append("en")
	}
	return b.NewRecordBatch()
}

func ptr(s string) *string { return &s }

func column[T any](t *testing.T, rec arrow.RecordBatch, name string) []any {
	t.Helper()
	idx := rec.Schema().FieldIndices(name)
	require.Len(t, idx, 1, "column %s", name)
	col := rec.Column(idx[0])
	out := make([]any, col.Len())
	for i := range out {
		if col.IsNull(i) {
			continue
		}
		out[i] = col.(interface{ Value(int) T }).Value(i)
	}
	return out
}

func TestEnricherLexiconEndToEnd(t *testing.T) {
	t.Parallel()
	mem, enr := lexiconEnricher(t)

	rec := input(t, mem, []*string{
		ptr("I love this, it is wonderful and amazing"),
		ptr("This is terrible, awful and I hate it"),
		ptr("The train leaves at nine"),
		ptr("   "),
		nil,
	})
	defer rec.Release()
	out, counts, err := enr.Enrich(t.Context(), rec, 42)
	require.NoError(t, err)
	defer out.Release()

	assert.Equal(t, enrich.Counts{enrich.StatusOK: 3, enrich.StatusSkipped: 2}, counts)
	assert.Equal(t, []any{"positive", "negative", "neutral", nil, nil}, column[string](t, out, "sentiment"))
	assert.Equal(t, []any{"ok", "ok", "ok", "skipped", "skipped"}, column[string](t, out, enrich.ColStatus))
	assert.Equal(t, []any{int64(1000), int64(1001), int64(1002), int64(1003), int64(1004)}, column[int64](t, out, "post_id"))
	assert.Equal(t, "authorc", column[string](t, out, "author")[2])
	for i, s := range column[float64](t, out, "score")[:3] {
		x := s.(float64)
		assert.True(t, x >= -1 && x <= 1, "score %d = %g", i, x)
	}
	assert.Greater(t, column[float64](t, out, "score")[0].(float64), 0.5)
	assert.Less(t, column[float64](t, out, "score")[1].(float64), -0.5)
	for _, v := range column[int64](t, out, enrich.ColSourceSnapshotID) {
		assert.Equal(t, int64(42), v)
	}
	for _, v := range column[string](t, out, enrich.ColModel) {
		assert.Equal(t, "lexicon/vader", v)
	}
	for _, v := range column[string](t, out, enrich.ColSpecVersion) {
		assert.Equal(t, "1", v)
	}
	// The text column is read but not carried.
	assert.Empty(t, out.Schema().FieldIndices("text"))
	// Schema: key, carried, outputs, lineage.
	var names []string
	for _, f := range enr.Schema().Fields() {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"post_id", "author", "created_at", "lang", "sentiment", "score",
		"_source_snapshot_id", "_model", "_spec_version", "_status", "_error", "_enriched_at"}, names)
}

// recorder is a Model that answers fixed values and records what it saw.
type recorder struct {
	mu     sync.Mutex
	texts  []string
	answer func(it enrich.Item) enrich.Answer
	err    error
}

func (r *recorder) Name() string { return "test/recorder" }

func (r *recorder) Annotate(_ context.Context, items []enrich.Item, out []enrich.Answer) error {
	if r.err != nil {
		return r.err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, it := range items {
		r.texts = append(r.texts, it.Text)
		out[i] = r.answer(it)
	}
	return nil
}

func fixed(label string, score float64) func(enrich.Item) enrich.Answer {
	return func(enrich.Item) enrich.Answer {
		return enrich.Answer{Status: enrich.StatusOK, Values: []enrich.Value{{Set: true, Str: label}, {Set: true, Num: score}}}
	}
}

func TestEnricherTruncatesOverlongText(t *testing.T) {
	t.Parallel()
	spec := sentimentSpec(t)
	spec.Model.MaxTextChars = 10
	model := &recorder{answer: fixed("neutral", 0)}
	enr := newEnricher(t, spec, model, nil)
	rec := input(t, memory.DefaultAllocator, []*string{ptr(strings.Repeat("é", 25)), ptr("short")})
	defer rec.Release()
	out, counts, err := enr.Enrich(t.Context(), rec, 1)
	require.NoError(t, err)
	defer out.Release()
	assert.Equal(t, []string{strings.Repeat("é", 10), "short"}, model.texts)
	assert.Equal(t, enrich.Counts{enrich.StatusOK: 2}, counts)
}

func TestEnricherRejectsInvalidModelOutput(t *testing.T) {
	t.Parallel()
	mem := checkedAlloc(t)
	spec := sentimentSpec(t)
	answers := map[int]enrich.Answer{
		0: {Status: enrich.StatusOK, Values: []enrich.Value{{Set: true, Str: "ecstatic"}, {Set: true, Num: 0.9}}},
		1: {Status: enrich.StatusOK, Values: []enrich.Value{{Set: true, Str: "positive"}, {Set: true, Num: 7}}},
		2: {Status: enrich.StatusOK, Values: []enrich.Value{{Set: true, Str: "positive"}}},
		3: {Status: enrich.StatusFailed, Error: "model timed out"},
		4: {Status: enrich.StatusOK, Values: []enrich.Value{{Set: true, Str: "positive"}, {Set: true, Num: 0.5}}},
	}
	model := &recorder{answer: func(it enrich.Item) enrich.Answer { return answers[it.ID] }}
	enr := newEnricher(t, spec, model, mem)
	rec := input(t, mem, []*string{ptr("a"), ptr("b"), ptr("c"), ptr("d"), ptr("e")})
	defer rec.Release()
	out, counts, err := enr.Enrich(t.Context(), rec, 1)
	require.NoError(t, err)
	defer out.Release()
	assert.Equal(t, enrich.Counts{enrich.StatusInvalidOutput: 3, enrich.StatusFailed: 1, enrich.StatusOK: 1}, counts)
	errs := column[string](t, out, enrich.ColError)
	assert.Contains(t, errs[0], `"ecstatic" is not one of`)
	assert.Contains(t, errs[1], "above the maximum")
	assert.Contains(t, errs[2], "1 values for 2 output fields")
	assert.Equal(t, "model timed out", errs[3])
	assert.Nil(t, errs[4])
	assert.Equal(t, []any{nil, nil, nil, nil, "positive"}, column[string](t, out, "sentiment"))
}

func TestEnricherModelErrorStopsTheBatch(t *testing.T) {
	t.Parallel()
	mem := checkedAlloc(t)
	boom := errors.New("budget exhausted")
	enr, err := enrich.NewEnricher(sentimentSpec(t), &recorder{err: boom}, enrich.PostsSchema, mem)
	require.NoError(t, err)
	rec := input(t, mem, []*string{ptr("a")})
	defer rec.Release()
	_, _, err = enr.Enrich(t.Context(), rec, 1)
	require.ErrorIs(t, err, boom)
}

func TestEnricherSchemaErrors(t *testing.T) {
	t.Parallel()
	spec := sentimentSpec(t)
	model := lexicon(t, spec)
	tests := []struct {
		name string
		give *arrow.Schema
		want string
	}{
		{"missing carry column", arrow.NewSchema(enrich.PostsSchema.Fields()[:4], nil), `column "lang" is missing`},
		{"text not a string", arrow.NewSchema([]arrow.Field{
			{Name: "post_id", Type: arrow.PrimitiveTypes.Int64}, {Name: "text", Type: arrow.PrimitiveTypes.Int64},
		}, nil), `text column "text" is int64`},
		{"key is a float", arrow.NewSchema([]arrow.Field{
			{Name: "post_id", Type: arrow.PrimitiveTypes.Float64}, {Name: "text", Type: arrow.BinaryTypes.String},
		}, nil), `key column "post_id" is float64`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := enrich.NewEnricher(spec, model, tt.give, nil)
			var se *enrich.SchemaError
			require.ErrorAs(t, err, &se)
			assert.Contains(t, err.Error(), tt.want)
			assert.Contains(t, err.Error(), "job sentiment cannot read table social.posts")
		})
	}
}

// TestEnricherRefusesTwoTargetColumnsOfOneName: a spec that was not
// validated (or validated by an older release) whose key is named like a
// lineage column would fail at every commit ("multiple fields for name
// _status") and be retried for ever; it is a *SchemaError, permanent.
func TestEnricherRefusesTwoTargetColumnsOfOneName(t *testing.T) {
	t.Parallel()
	for _, key := range []string{enrich.ColStatus, enrich.ColSourceSnapshotID, "sentiment"} {
		spec := sentimentSpec(t)
		spec.Source.Key, spec.Source.Carry = key, nil
		in := arrow.NewSchema([]arrow.Field{
			{Name: key, Type: arrow.BinaryTypes.String}, {Name: "text", Type: arrow.BinaryTypes.String},
			{Name: "lang", Type: arrow.BinaryTypes.String},
		}, nil)
		_, err := enrich.NewEnricher(spec, &recorder{}, in, nil)
		var se *enrich.SchemaError
		require.ErrorAs(t, err, &se, "key %s", key)
		assert.Contains(t, err.Error(), "job sentiment cannot read table social.posts: the target would have two columns named \""+key+"\"")
		assert.Error(t, spec.Validate(), "validate catches it first")
	}
}

func TestEnricherIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	mem, enr := lexiconEnricher(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			rec := input(t, mem, []*string{ptr("good day"), ptr("bad day"), ptr("")})
			defer rec.Release()
			for range 20 {
				out, counts, err := enr.Enrich(context.Background(), rec, 7)
				assert.NoError(t, err)
				assert.Equal(t, int64(3), counts.Total())
				out.Release()
			}
		})
	}
	wg.Wait()
}

func TestLexiconLabelsFollowTheNeutralBand(t *testing.T) {
	t.Parallel()
	spec := sentimentSpec(t)
	band := 0.3
	spec.Model.Lexicon.NeutralBand = &band
	l, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	tests := []struct {
		give float64
		want string
	}{{0.3, "positive"}, {0.29, "neutral"}, {0, "neutral"}, {-0.29, "neutral"}, {-0.3, "negative"}, {1, "positive"}}
	for _, tt := range tests {
		assert.Equal(t, tt.want, l.Label(tt.give), "score %g", tt.give)
	}
}

func TestLexiconStopsOnCancelledContext(t *testing.T) {
	t.Parallel()
	l, err := enrich.NewLexicon(sentimentSpec(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	items := []enrich.Item{{ID: 0, Text: "fine"}}
	err = l.Annotate(ctx, items, make([]enrich.Answer, 1))
	require.ErrorIs(t, err, context.Canceled)
}

// checkedAlloc is an allocator that fails t if a buffer it gave is still
// held when the test ends.
func checkedAlloc(t *testing.T) *memory.CheckedAllocator {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return mem
}

// newEnricher is the enricher of spec and model over the posts' columns
// (enrich.PostsSchema); mem may be nil.
func newEnricher(t *testing.T, spec *enrich.Spec, model enrich.Model, mem memory.Allocator) *enrich.Enricher {
	t.Helper()
	enr, err := enrich.NewEnricher(spec, model, enrich.PostsSchema, mem)
	require.NoError(t, err)
	return enr
}

// lexiconEnricher is the enricher of the sentiment job with its lexicon
// model, over a checked allocator.
func lexiconEnricher(t *testing.T) (*memory.CheckedAllocator, *enrich.Enricher) {
	t.Helper()
	mem := checkedAlloc(t)
	spec := sentimentSpec(t)
	return mem, newEnricher(t, spec, lexicon(t, spec), mem)
}

// lexicon is spec's offline lexicon model.
func lexicon(t *testing.T, spec *enrich.Spec) enrich.Model {
	t.Helper()
	m, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	return m
}
