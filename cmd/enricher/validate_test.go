package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/testbed"
)

// validateDir writes a config naming jobs/job.yaml, a copy of the shipped
// sentiment job edited by edit, and returns the config and the spec.
func validateDir(t *testing.T, config string, edit func(spec string) string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "jobs"), 0o755))
	data, err := os.ReadFile(filepath.Join("..", "..", "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	spec := filepath.Join(dir, "jobs", "job.yaml")
	require.NoError(t, os.WriteFile(spec, []byte(edit(string(data))), 0o644))
	cfg := filepath.Join(dir, "enricher.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o644))
	// The catalog file and warehouse folder validateConfig names, which
	// validate checks are there (an empty catalog file it refuses).
	testbed.SQLCatalog(t, dir)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "warehouse"), 0o755))
	return cfg, spec
}

const validateConfig = "catalog: {type: sql, uri: catalog.db, warehouse: warehouse}\njobs: [jobs/job.yaml]\n"

func replace(from, to string) func(string) string {
	return func(s string) string { return strings.Replace(s, from, to, 1) }
}

// TestValidateCatchesWhatWouldFailAtRunTime: every spec or config that
// passed validate and then failed (or silently did the wrong thing) at run
// time is refused by validate, naming the file, the field and the reason.
func TestValidateCatchesWhatWouldFailAtRunTime(t *testing.T) {
	t.Parallel()
	keep := func(s string) string { return s }
	tests := []struct {
		name   string
		config string
		edit   func(string) string
		field  string // "FILE: FIELD: REASON" with FILE the spec, or the config when config is set
		want   string
	}{
		{name: "key named like a lineage column", edit: replace("key: post_id", "key: _status"),
			field: "source.key", want: `"_status": names starting with _ are reserved for lineage columns`},
		{name: "key named like the snapshot column", edit: replace("key: post_id", "key: _source_snapshot_id"),
			field: "source.key", want: "reserved for lineage columns"},
		{name: "NaN neutral band", edit: replace("neutral_band: 0.05", "neutral_band: .nan"),
			field: "model.lexicon.neutral_band", want: ".nan is not a finite number"},
		{name: "infinite score bound", edit: replace("min: -1", "min: -.inf"),
			field: "outputs[1].min", want: "-.inf is not a finite number"},
		{name: "NaN temperature", edit: replace("rows_per_request: 20", "rows_per_request: 20\n  temperature: .nan"),
			field: "model.temperature", want: ".nan is not a finite number"},
		{name: "infinite price", edit: replace("rows_per_request: 20", "rows_per_request: 20\n  prices: {input_per_million: .inf}"),
			field: "model.prices.input_per_million", want: ".inf is not a finite number"},
		{name: "fraction of rows per request", edit: replace("rows_per_request: 20", "rows_per_request: 1.5"),
			field: "model.rows_per_request", want: "1.5 is not an integer"},
		{name: "fraction of attempts", edit: replace("rows_per_request: 20", "rows_per_request: 20\n  max_attempts: 0.9"),
			field: "model.max_attempts", want: "0.9 is not an integer"},
		{name: "two documents in a spec", edit: func(s string) string { return s + "---\nname: second\n" },
			want: "a second YAML document (after ---): a file holds one document"},
		{name: "fraction of workers", config: validateConfig + "pipeline: {workers: 1.5}\n", edit: keep,
			field: "pipeline.workers", want: "line 3: 1.5 is not an integer"},
		{name: "a trillion workers", config: validateConfig + "pipeline: {workers: 1000000000000}\n", edit: keep,
			field: "pipeline.workers", want: "must be from 0 to 1024, got 1000000000000"},
		{name: "fraction of batch rows", config: validateConfig + "pipeline: {batch_rows: 0.9}\n", edit: keep,
			field: "pipeline.batch_rows", want: "0.9 is not an integer"},
		{name: "two documents in the config", config: validateConfig + "---\njobs: [other.yaml]\n", edit: keep,
			want: "line 3: a second YAML document (after ---)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			config := tt.config
			if config == "" {
				config = validateConfig
			}
			cfg, spec := validateDir(t, config, tt.edit)
			file := spec
			if tt.config != "" {
				file = cfg
			}
			_, err := run(t, "validate", "--config", cfg)
			require.Error(t, err)
			prefix := file + ": line " // the whole file is wrong, at a line
			if tt.field != "" {
				prefix = file + ": " + tt.field + ": "
			}
			assert.Contains(t, err.Error(), prefix)
			assert.Contains(t, err.Error(), tt.want)
			var se *enrich.SpecError
			require.ErrorAs(t, err, &se)
		})
	}
}

func TestValidateRefusesWhatIsNotASmallRegularFile(t *testing.T) {
	t.Parallel()
	cfg, _ := validateDir(t, validateConfig, func(s string) string { return s })
	_, err := run(t, "validate", "--config", "/dev/zero")
	require.EqualError(t, err, "/dev/zero: is a device, not a regular file: a config or job spec must be a regular file")

	// A job spec that is a device, or too large.
	dir := filepath.Dir(cfg)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(validateConfig, "jobs/job.yaml", "/dev/zero", 1)), 0o644))
	_, err = run(t, "validate", "--config", cfg)
	require.EqualError(t, err, "/dev/zero: is a device, not a regular file: a config or job spec must be a regular file")

	big := filepath.Join(dir, "jobs", "job.yaml")
	f, err := os.OpenFile(big, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString("# " + strings.Repeat("x", enrich.MaxFileBytes) + "\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(cfg, []byte(validateConfig), 0o644))
	_, err = run(t, "validate", "--config", cfg)
	require.EqualError(t, err, big+": is larger than the limit of a config or job spec, 4 MiB (4194304 bytes)")

	require.NoError(t, os.Rename(big, cfg))
	_, err = run(t, "validate", "--config", cfg)
	require.EqualError(t, err, cfg+": is larger than the limit of a config or job spec, 4 MiB (4194304 bytes)")
}

func TestValidateSaysWhichRowsTheModelTakes(t *testing.T) {
	t.Parallel()
	cfg, _ := validateDir(t, validateConfig, func(s string) string { return s })
	out := mustRun(t, "validate", "--config", cfg)
	assert.Contains(t, out, "  rows the model takes: rows whose lang is en; other languages are written skipped, rows without a language taken\n")
}

// TestDemoSkipsTheLanguagesTheLexiconDoesNotRead: the demo's generated
// posts are in five languages; the lexicon labels the English ones and
// writes the others skipped with the reason, and the summary counts them
// by reason.
func TestDemoSkipsTheLanguagesTheLexiconDoesNotRead(t *testing.T) {
	t.Parallel()
	work := filepath.Join(t.TempDir(), "demo")
	out := mustRun(t, "demo", "--workdir", work, "--generate", "400", "--samples", "0")
	rows := exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment")
	require.Len(t, rows, 400)
	byReason := map[string]int{}
	for _, r := range rows {
		lang, _ := r["lang"].(string)
		switch {
		case r["_status"] == "skipped" && r["_error"] == nil:
			byReason["blank text"]++ // a blank text is skipped first, in any language
		case lang == "en" || lang == "":
			assert.Equal(t, "ok", r["_status"], "post %v (%s)", r["post_id"], lang)
			assert.NotNil(t, r["sentiment"])
		default:
			want := "language " + lang + " is not one the model reads (en)"
			assert.Equal(t, "skipped", r["_status"], "post %v (%s)", r["post_id"], lang)
			assert.Equal(t, want, r["_error"])
			assert.Nil(t, r["sentiment"], "a row the model did not read holds no label")
			byReason[want]++
		}
	}
	require.Len(t, byReason, 5, "the four other languages and blank texts: %v", byReason)
	skipped := 0
	for reason, n := range byReason {
		skipped += n
		assert.Regexp(t, `\n    skipped\s+`+itoa(n)+`\s+\(`+regexpQuote(reason)+`\)\n`, out)
	}
	assert.Contains(t, out, "skipped "+itoa(skipped)+",")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func regexpQuote(s string) string {
	r := strings.NewReplacer("(", `\(`, ")", `\)`, ".", `\.`)
	return r.Replace(s)
}

func TestValidatePrintsNoCatalogCredentials(t *testing.T) {
	t.Parallel()
	for give, want := range map[string]string{
		"https://me:pa55word@catalog.example.com/api": "https://[redacted]@catalog.example.com/api",
		"https://catalog.example.com/api?token=t0ken": "https://catalog.example.com/api?[redacted]",
		"https://catalog.example.com/api":             "https://catalog.example.com/api",
		"/data/catalog.db":                            "/data/catalog.db",
	} {
		assert.Equal(t, want, shownURI(give))
	}
	cfg, _ := validateDir(t, "catalog: {type: rest, uri: \"https://me:pa55word@catalog.example.com/api\", warehouse: s3://b/w}\njobs: [jobs/job.yaml]\n", func(s string) string { return s })
	out := mustRun(t, "validate", "--config", cfg)
	assert.NotContains(t, out, "pa55word")
	assert.Contains(t, out, "catalog rest (https://[redacted]@catalog.example.com/api)")
}

func TestValidateShowsTheBatchSettings(t *testing.T) {
	t.Parallel()
	cfg, _ := validateDir(t, validateConfig, replace("  provider: lexicon\n  name: vader\n",
		"  provider: openai\n  name: gpt-4o-mini\n  batch_api: auto\n  batch: {min_rows: 2000, poll: 5m}\n"))
	out := mustRun(t, "validate", "--config", cfg)
	assert.Contains(t, out, "  batch API: ranges of at least 2000 rows (smaller ones synchronously), at most 50000 rows a batch, checked every 5m, 3 attempt(s), retries sync (at most 1000 rows synchronously)\n")

	cfg, spec := validateDir(t, validateConfig, replace("  provider: lexicon\n  name: vader\n",
		"  provider: openai\n  name: gpt-4o-mini\n  batch_api: auto\n  batch: {min_rows: 2000, pol: 5m}\n"))
	_, err := run(t, "validate", "--config", cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), spec)
	assert.Contains(t, err.Error(), "pol")
}
