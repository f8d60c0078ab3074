package enrich_test

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

// langPost is a post of a given language (nil: a null lang).
type langPost struct {
	text string
	lang *string
}

// langInput builds a batch of posts with the sentiment job's columns.
func langInput(t *testing.T, mem memory.Allocator, posts []langPost) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, enrich.PostsSchema)
	defer b.Release()
	for i, p := range posts {
		b.Field(0).(*array.Int64Builder).Append(int64(i + 1))
		b.Field(1).(*array.StringBuilder).Append(p.text)
		b.Field(2).(*array.StringBuilder).Append("a")
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(1_700_000_000_000_000))
		if p.lang == nil {
			b.Field(4).AppendNull()
		} else {
			b.Field(4).(*array.StringBuilder).Append(*p.lang)
		}
	}
	return b.NewRecordBatch()
}

var languagePosts = []langPost{
	{"what a wonderful day", ptr("en")},
	{"o serviço foi péssimo #win", ptr("pt")},
	{"no language given, but a fine day", nil},
	{"a region tag is its language", ptr("EN-us")},
	{"ce film est magnifique", ptr("fr")},
	{"a blank language", ptr("  ")},
	{"que dia maravilhoso", ptr("pt_BR")},
	{"garbage in the column", ptr("português do Brasil, claro")},
	{"", ptr("de")}, // blank text: skipped as blank, whatever the language
}

// TestLexiconTakesOnlyTheLanguagesItReads: the shipped sentiment job
// gives the lexicon only English rows; the others are written skipped
// with the reason and never reach the model; rows without a language are
// taken.
func TestLexiconTakesOnlyTheLanguagesItReads(t *testing.T) {
	t.Parallel()
	mem := checkedAlloc(t)
	spec := sentimentSpec(t)
	require.Equal(t, []string{"en"}, spec.Model.Languages)
	require.Equal(t, "lang", spec.Source.Language.Column)
	model := &recorder{answer: fixed("positive", 0.9)}
	enr := newEnricher(t, spec, model, mem)
	rec := langInput(t, mem, languagePosts)
	defer rec.Release()
	out, counts, err := enr.Enrich(t.Context(), rec, 1)
	require.NoError(t, err)
	defer out.Release()

	assert.Equal(t, []string{"what a wonderful day", "no language given, but a fine day", "a region tag is its language", "a blank language"}, model.texts,
		"only English rows and rows without a language reach the model")
	assert.Equal(t, []any{"ok", "skipped", "ok", "ok", "skipped", "ok", "skipped", "skipped", "skipped"}, column[string](t, out, enrich.ColStatus))
	assert.Equal(t, []any{nil, "language pt is not one the model reads (en)", nil, nil, "language fr is not one the model reads (en)", nil,
		"language pt is not one the model reads (en)", `language "português do Brasil," is not one the model reads (en)`, nil}, column[string](t, out, enrich.ColError))
	assert.Equal(t, []any{"positive", nil, "positive", "positive", nil, "positive", nil, nil, nil}, column[string](t, out, "sentiment"),
		"a row the model did not read holds no label")
	assert.Equal(t, enrich.Counts{enrich.StatusOK: 4, enrich.StatusSkipped: 5}, counts)
}

func TestRowsWithoutALanguageCanBeSkipped(t *testing.T) {
	t.Parallel()
	spec := sentimentSpec(t)
	spec.Source.Language.Unknown = enrich.UnknownLanguageSkip
	require.NoError(t, spec.Validate())
	model := &recorder{answer: fixed("neutral", 0)}
	enr := newEnricher(t, spec, model, nil)
	rec := langInput(t, memory.DefaultAllocator, languagePosts[:6])
	defer rec.Release()
	out, _, err := enr.Enrich(t.Context(), rec, 1)
	require.NoError(t, err)
	defer out.Release()
	assert.Equal(t, []string{"what a wonderful day", "a region tag is its language"}, model.texts)
	errs := column[string](t, out, enrich.ColError)
	assert.Equal(t, "the row has no language (lang is null or blank) and source.language.unknown is skip", errs[2])
	assert.Equal(t, errs[2], errs[5])
}

// TestChatProvidersTakeEveryLanguageByDefault: the shipped job on a chat
// provider (--provider) sends every row, whatever its language.
func TestChatProvidersTakeEveryLanguageByDefault(t *testing.T) {
	t.Parallel()
	for _, p := range []string{enrich.ProviderOpenAI, enrich.ProviderAzure, enrich.ProviderNoop} {
		spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: p, BaseURL: "https://r.openai.azure.com", Deployment: "d"})
		require.NoError(t, err)
		assert.Empty(t, spec.Model.Languages, p)
		model := &recorder{answer: fixed("neutral", 0)}
		enr := newEnricher(t, spec, model, nil)
		rec := langInput(t, memory.DefaultAllocator, languagePosts)
		out, counts, err := enr.Enrich(t.Context(), rec, 1)
		require.NoError(t, err)
		assert.Len(t, model.texts, len(languagePosts)-1, "%s: every row but the blank one", p)
		assert.Equal(t, enrich.Counts{enrich.StatusOK: 8, enrich.StatusSkipped: 1}, counts)
		out.Release()
		rec.Release()
	}

	// A chat job may name the languages it wants.
	spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: enrich.ProviderOpenAI})
	require.NoError(t, err)
	spec.Model.Languages = []string{"en", "pt"}
	require.NoError(t, spec.Validate())
	model := &recorder{answer: fixed("neutral", 0)}
	enr := newEnricher(t, spec, model, nil)
	rec := langInput(t, memory.DefaultAllocator, languagePosts)
	defer rec.Release()
	out, _, err := enr.Enrich(t.Context(), rec, 1)
	require.NoError(t, err)
	defer out.Release()
	assert.Equal(t, "language fr is not one the model reads (en, pt)", column[string](t, out, enrich.ColError)[4])
	assert.Len(t, model.texts, 6)
}

func TestLanguageRuleValidation(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, from, give, field, want string }{
		{"lexicon reads English only", "provider: lexicon,", "provider: lexicon, languages: [en, pt],", "model.languages[1]", `"pt": provider lexicon reads en only`},
		{"not a code", "provider: lexicon,", "provider: lexicon, languages: [English],", "model.languages[0]", `"English" is not a language code such as en or pt`},
		{"listed twice", "provider: lexicon,", "provider: lexicon, languages: [en, en],", "model.languages[1]", `"en" is listed twice`},
		{"no column", "carry: [author]}", "carry: [author], language: {unknown: skip}}", "source.language.column", "is required when source.language is given"},
		{"unknown policy", "carry: [author]}", "carry: [author], language: {column: lang, unknown: guess}}", "source.language.unknown", `"guess" is not one of take, skip`},
		{"the text column", "carry: [author]}", "carry: [author], language: {column: text}}", "source.language.column", `"text" is source.text`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Contains(t, validSpec, tt.from)
			_, err := enrich.ParseSpec("x.yaml", []byte(strings.Replace(validSpec, tt.from, tt.give, 1)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "x.yaml: "+tt.field+": "+tt.want)
		})
	}

	// A list of languages with no column to apply it to is a mistake,
	// except the lexicon's own default.
	_, err := enrich.ParseSpec("c.yaml", []byte(chatJob+"model: {provider: openai, languages: [en]}\n"))
	require.ErrorContains(t, err, "c.yaml: model.languages: needs source.language.column")
	spec, err := enrich.ParseSpec("s.yaml", []byte(validSpec))
	require.NoError(t, err)
	assert.Equal(t, []string{"en"}, spec.Model.Languages)
	assert.Equal(t, "every row: the model reads en, but the spec names no source.language column to tell", spec.LanguageRule())
	assert.Equal(t, "rows whose lang is en; other languages are written skipped, rows without a language taken", sentimentSpec(t).LanguageRule())
}

func TestLanguageColumnSchemaErrors(t *testing.T) {
	t.Parallel()
	spec, err := enrich.ParseSpec("s.yaml", []byte(strings.Replace(validSpec, "carry: [author]}", "carry: [author], language: {column: language}}", 1)))
	require.NoError(t, err)
	assert.Equal(t, []string{"post_id", "text", "author", "language"}, spec.Columns(), "the language column is read")
	model := lexicon(t, spec)
	base := []arrow.Field{
		{Name: "post_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "text", Type: arrow.BinaryTypes.String},
		{Name: "author", Type: arrow.BinaryTypes.String},
	}
	_, err = enrich.NewEnricher(spec, model, arrow.NewSchema(base, nil), nil)
	var se *enrich.SchemaError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, err.Error(), `column "language" is missing`)

	_, err = enrich.NewEnricher(spec, model, arrow.NewSchema(append(base, arrow.Field{Name: "language", Type: arrow.PrimitiveTypes.Int32}), nil), nil)
	require.ErrorAs(t, err, &se)
	assert.Contains(t, err.Error(), `language column "language" is int32; it must be a string`)

	enr, err := enrich.NewEnricher(spec, model, arrow.NewSchema(append(base, arrow.Field{Name: "language", Type: arrow.BinaryTypes.String}), nil), nil)
	require.NoError(t, err)
	for _, f := range enr.Schema().Fields() {
		assert.NotEqual(t, "language", f.Name, "a language column that is not carried is read, not written")
	}
}
