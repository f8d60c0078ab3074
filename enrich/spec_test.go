package enrich_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

func TestShippedSentimentSpecIsValid(t *testing.T) {
	t.Parallel()
	spec, err := enrich.LoadSpec(filepath.Join("..", "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	assert.Equal(t, "sentiment", spec.Name)
	assert.Equal(t, "social.posts", spec.Source.Table)
	assert.Equal(t, "social.posts_sentiment", spec.Target.Table)
	assert.Equal(t, []string{"post_id", "text", "author", "created_at", "lang"}, spec.Columns())
	label, ok := spec.Output("sentiment")
	require.True(t, ok)
	assert.Equal(t, []string{"negative", "neutral", "positive"}, label.Enum)
	score, ok := spec.Output("score")
	require.True(t, ok)
	assert.Equal(t, -1.0, *score.Min)
	assert.Equal(t, 1.0, *score.Max)
}

const validSpec = `
name: sentiment
version: "1"
source: {table: social.posts, key: post_id, text: text, carry: [author]}
target: {table: social.posts_sentiment}
model: {provider: lexicon, lexicon: {label_field: sentiment, score_field: score}}
outputs:
  - {name: sentiment, type: string, enum: [negative, neutral, positive]}
  - {name: score, type: double, min: -1, max: 1}
`

// TestIntegersToTheirLimitsAreRead: the range check of integer fields is
// exact at the edges and reads every YAML integer form.
func TestIntegersToTheirLimitsAreRead(t *testing.T) {
	t.Parallel()
	for give, want := range map[string]int64{
		"9223372036854775807": 9223372036854775807,
		"0x7FFFFFFFFFFFFFFF":  9223372036854775807,
		"1_000":               1000,
		"+5":                  5,
		"0o17":                15,
		"-0":                  0,
		"1e3":                 1000,
	} {
		spec, err := enrich.ParseSpec("s.yaml", []byte(strings.Replace(validSpec, "provider: lexicon,", "provider: lexicon, max_tokens_total: "+give+",", 1)))
		require.NoError(t, err, give)
		assert.Equal(t, want, spec.Model.MaxTokensTotal, give)
	}
}

func TestSpecDefaults(t *testing.T) {
	t.Parallel()
	spec, err := enrich.ParseSpec("s.yaml", []byte(validSpec))
	require.NoError(t, err)
	assert.Equal(t, enrich.DefaultMaxTextChars, spec.Model.MaxTextChars)
	assert.Equal(t, enrich.DefaultRowsPerRequest, spec.Model.RowsPerRequest)
	assert.Equal(t, "vader", spec.Model.Name)
	assert.Equal(t, enrich.DefaultNeutralBand, *spec.Model.Lexicon.NeutralBand)
}

func TestSpecValidationNamesFileFieldAndReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		give  string // replaces the first occurrence of from in validSpec
		from  string
		field string
		want  string
	}{
		{name: "missing name", from: "name: sentiment\n", give: "", field: "name", want: "is required"},
		{name: "bad name", from: "name: sentiment", give: "name: Senti-ment", field: "name", want: "lower case"},
		{name: "missing version", from: `version: "1"`, give: "", field: "version", want: "is required"},
		{name: "table without namespace", from: "table: social.posts,", give: "table: posts,", field: "source.table", want: "NAMESPACE.TABLE"},
		{name: "same source and target", from: "table: social.posts_sentiment", give: "table: social.posts", field: "target.table", want: "must differ"},
		{name: "missing key", from: "key: post_id, ", give: "", field: "source.key", want: "is required"},
		{name: "carry repeats key", from: "carry: [author]", give: "carry: [post_id]", field: "source.carry[0]", want: "already source.key"},
		{name: "carry reserved name", from: "carry: [author]", give: "carry: [_status]", field: "source.carry[0]", want: "reserved"},
		{name: "key reserved name", from: "key: post_id", give: "key: _status", field: "source.key", want: `"_status": names starting with _ are reserved for lineage columns`},
		{name: "key like a lineage column", from: "key: post_id", give: "key: _source_snapshot_id", field: "source.key", want: "reserved"},
		{name: "NaN neutral band", from: "score_field: score}", give: "score_field: score, neutral_band: .nan}", field: "model.lexicon.neutral_band", want: "line 6: .nan is not a finite number"},
		{name: "infinite minimum", from: "min: -1, max: 1", give: "min: -.inf, max: 1", field: "outputs[1].min", want: "line 9: -.inf is not a finite number"},
		{name: "NaN maximum", from: "min: -1, max: 1", give: "min: -1, max: .NaN", field: "outputs[1].max", want: ".NaN is not a finite number"},
		{name: "fraction of rows", from: "provider: lexicon,", give: "provider: lexicon, rows_per_request: 1.5,", field: "model.rows_per_request", want: "line 6: 1.5 is not an integer"},
		{name: "fraction of chars", from: "provider: lexicon,", give: "provider: lexicon, max_text_chars: 0.9,", field: "model.max_text_chars", want: "0.9 is not an integer"},
		{name: "second document", from: "version:", give: "---\nname: other\n---\nversion:", field: "", want: "line 3: a second YAML document (after ---): a file holds one document"},
		{name: "unknown provider", from: "provider: lexicon", give: "provider: llama", field: "model.provider", want: `"llama" is not one of`},
		{name: "bad output type", from: "type: double", give: "type: float", field: "outputs[1].type", want: `"float" is not one of`},
		{name: "min above max", from: "min: -1, max: 1", give: "min: 1, max: -1", field: "outputs[1].max", want: "must be at least min"},
		{name: "enum on a number", from: "type: double,", give: "type: double, enum: [a],", field: "outputs[1].enum", want: "only string"},
		{name: "duplicate enum", from: "[negative, neutral, positive]", give: "[negative, neutral, neutral]", field: "outputs[0].enum[2]", want: "listed twice"},
		{name: "lexicon label not an output", from: "label_field: sentiment", give: "label_field: mood", field: "model.lexicon.label_field", want: "not an output"},
		{name: "lexicon score too narrow", from: "min: -1, max: 1", give: "min: 0, max: 1", field: "model.lexicon.score_field", want: "[-1, 1]"},
		{name: "rows per request", from: "provider: lexicon,", give: "provider: lexicon, rows_per_request: 9999,", field: "model.rows_per_request", want: "from 1 to 500"},
		{name: "unknown field", from: "version:", give: "versoin: x\nversion:", field: "", want: "line 3: unknown field versoin"},
		{name: "NaN into an integer", from: "provider: lexicon,", give: "provider: lexicon, rpm: .nan,", field: "model.rpm", want: "line 6: .nan is not an integer"},
		{name: "infinity into an integer", from: "provider: lexicon,", give: "provider: lexicon, rpm: .inf,", field: "model.rpm", want: ".inf is not an integer"},
		{name: "float past int64", from: "provider: lexicon,", give: "provider: lexicon, rpm: 9.223372036854775808e18,", field: "model.rpm", want: "9.223372036854775808e18 is out of range"},
		{name: "integer past int64", from: "provider: lexicon,", give: "provider: lexicon, tpm: 99999999999999999999,", field: "model.tpm", want: "99999999999999999999 is out of range"},
		{name: "a quoted number", from: "provider: lexicon,", give: "provider: lexicon, rows_per_request: '20',", field: "model.rows_per_request", want: `"20" is not a number`},
		{name: "a float past float64", from: "min: -1, max: 1", give: "min: -1e400, max: 1", field: "outputs[1].min", want: `"-1e400" is not a number`},
		{name: "one past int64", from: "provider: lexicon,", give: "provider: lexicon, tpm: 9223372036854775808,", field: "model.tpm", want: "9223372036854775808 is out of range"},
		{name: "tokens per row", from: "provider: lexicon,", give: "provider: openai, name: gpt-4o-mini, max_tokens_per_row: 461168601842738791,", field: "model.max_tokens_per_row", want: "must be from 0 to 32768"},
		{name: "an answer no model writes", from: "provider: lexicon,", give: "provider: openai, name: gpt-4o-mini, max_tokens_per_row: 10000, rows_per_request: 20,", field: "model.max_tokens_per_row", want: "an answer of 200000 tokens"},
		{name: "a price that sums to infinity", from: "provider: lexicon,", give: "provider: openai, name: gpt-4o-mini, prices: {output_per_million: 1e306},", field: "model.prices.output_per_million", want: "must be from 0 to 10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Contains(t, validSpec, tt.from)
			data := strings.Replace(validSpec, tt.from, tt.give, 1)
			_, err := enrich.ParseSpec("jobs/x.yaml", []byte(data))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "jobs/x.yaml: ")
			assert.Contains(t, err.Error(), tt.want)
			if tt.field != "" {
				var se *enrich.SpecError
				found := false
				for _, e := range unjoin(err) {
					if errors.As(e, &se) && se.Field == tt.field && strings.Contains(se.Reason, tt.want) {
						found = true
					}
				}
				assert.True(t, found, "no error for field %s with %q in: %v", tt.field, tt.want, err)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// chatJob is a small chat job but for its model, which a test appends
// (its first line is blank, so that the model starts at line 8).
const chatJob = `
name: j
version: "1"
source: {table: a.b, key: k, text: t}
target: {table: a.c}
prompt: {system: p}
outputs: [{name: label, type: string}]
`

// TestSpecNumbersAreFiniteAndIntegersWhole: yaml.v3 reads .nan and .inf
// into any float and cuts 1.5 to 1 in an int; the spec loader refuses both,
// naming the field and the line, wherever a number is read.
func TestSpecNumbersAreFiniteAndIntegersWhole(t *testing.T) {
	t.Parallel()
	const chat = chatJob + `model:
  provider: openai
`
	tests := []struct{ give, field, want string }{
		{"  temperature: .nan\n", "model.temperature", "line 10: .nan is not a finite number"},
		{"  temperature: -.Inf\n", "model.temperature", "-.Inf is not a finite number"},
		{"  prices: {input_per_million: .inf}\n", "model.prices.input_per_million", ".inf is not a finite number"},
		{"  prices: {output_per_million: .nan}\n", "model.prices.output_per_million", ".nan is not a finite number"},
		{"  prices: {cached_input_per_million: .inf}\n", "model.prices.cached_input_per_million", ".inf is not a finite number"},
		{"  max_attempts: 0.9\n", "model.max_attempts", "0.9 is not an integer"},
		{"  rpm: 1.5\n", "model.rpm", "1.5 is not an integer"},
		{"  max_tokens_total: 1e3\n", "", ""},                                 // a whole number, however written
		{"  <<: {rpm: 2.5}\n", "model.rpm", "line 10: 2.5 is not an integer"}, // a merge key
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			t.Parallel()
			spec, err := enrich.ParseSpec("j.yaml", []byte(chat+tt.give))
			if tt.want == "" {
				require.NoError(t, err)
				assert.Equal(t, int64(1000), spec.Model.MaxTokensTotal)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if tt.field != "" {
				var se *enrich.SpecError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, "j.yaml", se.File)
				assert.Equal(t, tt.field, se.Field)
			}
		})
	}

	// A spec built or edited in code is checked by Validate as well.
	spec, err := enrich.ParseSpec("s.yaml", []byte(validSpec))
	require.NoError(t, err)
	nan := math.NaN()
	spec.Model.Lexicon.NeutralBand = &nan
	spec.Model.Temperature = math.Inf(1)
	err = spec.Validate()
	require.ErrorContains(t, err, "s.yaml: model.lexicon.neutral_band: NaN is not a finite number")
	require.ErrorContains(t, err, "s.yaml: model.temperature: +Inf is not a finite number")
}

func TestLoadSpecRefusesWhatIsNotASmallRegularFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(enrich.MaxFileBytes+1))
	require.NoError(t, f.Close())
	tests := map[string]struct{ path, want string }{
		"device": {"/dev/zero", "/dev/zero: is a device, not a regular file: a config or job spec must be a regular file"},
		"folder": {dir, dir + ": is a folder, not a file: a config or job spec must be a regular file"},
		"large":  {big, big + ": is larger than the limit of a config or job spec, 4 MiB (4194304 bytes)"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := enrich.LoadSpec(tt.path)
			var se *enrich.SpecError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tt.path, se.File)
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestLoadSpecErrors(t *testing.T) {
	t.Parallel()
	_, err := enrich.LoadSpec(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)

	empty := filepath.Join(t.TempDir(), "empty.yaml")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = enrich.LoadSpec(empty)
	require.ErrorContains(t, err, "empty.yaml: file is empty")
}

func TestFieldCheck(t *testing.T) {
	t.Parallel()
	lo, hi := -1.0, 1.0
	tests := []struct {
		name  string
		field enrich.Field
		give  enrich.Value
		want  string // "" = valid
	}{
		{"enum ok", enrich.Field{Name: "s", Type: enrich.TypeString, Enum: []string{"a", "b"}}, enrich.Value{Set: true, Str: "b"}, ""},
		{"enum bad", enrich.Field{Name: "s", Type: enrich.TypeString, Enum: []string{"a", "b"}}, enrich.Value{Set: true, Str: "c"}, `"c" is not one of a, b`},
		{"missing", enrich.Field{Name: "s", Type: enrich.TypeString}, enrich.Value{}, "missing"},
		{"range ok", enrich.Field{Name: "x", Type: enrich.TypeDouble, Min: &lo, Max: &hi}, enrich.Value{Set: true, Num: 0.5}, ""},
		{"below min", enrich.Field{Name: "x", Type: enrich.TypeDouble, Min: &lo, Max: &hi}, enrich.Value{Set: true, Num: -1.5}, "below the minimum"},
		{"above max long", enrich.Field{Name: "n", Type: enrich.TypeLong, Max: &hi}, enrich.Value{Set: true, Int: 2}, "above the maximum"},
		{"list enum", enrich.Field{Name: "l", Type: enrich.TypeStringList, Enum: []string{"a"}}, enrich.Value{Set: true, List: []string{"a", "z"}}, `"z" is not one of a`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.field.Check(tt.give)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tt.want)
		})
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give    string
		max     int
		want    string
		wantCut bool
	}{
		{"hello", 5, "hello", false},
		{"hello!", 5, "hello", true},
		{"héllo wörld", 5, "héllo", true},
		{"😀😀😀", 2, "😀😀", true},
		{"😀😀", 2, "😀😀", false}, // 8 bytes, 2 characters
		{"", 3, "", false},
	}
	for _, tt := range tests {
		got, cut := enrich.Truncate(tt.give, tt.max)
		assert.Equal(t, tt.want, got, "Truncate(%q, %d)", tt.give, tt.max)
		assert.Equal(t, tt.wantCut, cut, "Truncate(%q, %d) cut", tt.give, tt.max)
	}
}

func TestBlank(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", " ", "\t\n ", "\u00a0"} {
		assert.True(t, enrich.Blank(s), "%q", s)
	}
	for _, s := range []string{"a", " . "} {
		assert.False(t, enrich.Blank(s), "%q", s)
	}
}
