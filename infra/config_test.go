package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/specfile"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	// Keys the CDK and its CLI put in the context are not settings.
	cfg, err := LoadConfig(map[string]any{
		"@aws-cdk/core:newStyleStackSynthesis": true,
		"aws:cdk:enable-path-metadata":         true,
		"acknowledged-issue-numbers":           []any{32775.0},
	}, t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, DefaultConfig(), cfg)
	assert.True(t, cfg.FIFO())
	assert.True(t, cfg.Lambda())
	assert.False(t, cfg.Fargate())
	assert.Equal(t, 6*300, cfg.VisibilityTimeout())
}

func TestLoadConfigContextAndFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "prod.json")
	require.NoError(t, os.WriteFile(file, []byte(`{
		"stage": "prod", "queueType": "standard", "maxConcurrency": 20,
		"jobs": ["jobs/a.yaml", "jobs/b.yaml"]
	}`), 0o644))

	// Context strings (-c key=value) and cdk.json numbers, over the file.
	cfg, err := LoadConfig(map[string]any{
		"config":               "prod.json",
		"maxConcurrency":       "50",
		"lambdaTimeoutSeconds": 600.0,
		"compute":              "both",
		"modelEndpoint":        "https://example.openai.azure.com/",
		"modelDeployment":      "gpt-4o-mini",
	}, dir)
	require.NoError(t, err)
	assert.Equal(t, "prod", cfg.Stage)
	assert.Equal(t, QueueStandard, cfg.QueueType)
	assert.Equal(t, 50, cfg.MaxConcurrency)
	assert.Equal(t, 600, cfg.LambdaTimeoutSeconds)
	assert.Equal(t, 3600, cfg.VisibilityTimeout())
	assert.Equal(t, []string{"jobs/a.yaml", "jobs/b.yaml"}, cfg.Jobs)
	assert.True(t, cfg.Lambda() && cfg.Fargate())

	cfg, err = LoadConfig(map[string]any{"jobs": "jobs/x.yaml, jobs/y.yaml"}, dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"jobs/x.yaml", "jobs/y.yaml"}, cfg.Jobs)
}

func TestExampleConfigFile(t *testing.T) {
	t.Parallel()
	root := repoRootT(t)
	cfg, err := LoadConfig(map[string]any{"config": "infra/config.example.json"}, root)
	require.NoError(t, err)
	assert.Equal(t, "prod", cfg.Stage)
	assert.Equal(t, 3600, cfg.VisibilityTimeout())
	_, err = cfg.ReadJobs(root)
	require.NoError(t, err)
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "typo.json"), []byte(`{"stag": "prod"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"queueType": "lifo"}`), 0o644))

	tests := []struct {
		name string
		give map[string]any
		want []string // every one must be in the error
	}{
		{"queue type", map[string]any{"queueType": "lifo"}, []string{`context: queueType: "lifo" is not fifo or standard`}},
		{"queue type from file", map[string]any{"config": "bad.json"}, []string{`bad.json: queueType: "lifo" is not fifo or standard`}},
		{"max concurrency below AWS minimum", map[string]any{"maxConcurrency": "1"}, []string{"context: maxConcurrency: must be 2 to 1000", "got 1"}},
		{"visibility below six times the function timeout", map[string]any{"lambdaTimeoutSeconds": "300", "visibilityTimeoutSeconds": "900"},
			[]string{"context: visibilityTimeoutSeconds: 900 is less than six times lambdaTimeoutSeconds (6 x 300 = 1800)"}},
		{"six times the timeout over the SQS maximum", map[string]any{"lambdaTimeoutSeconds": "900", "visibilityTimeoutSeconds": "50000"},
			[]string{"context: visibilityTimeoutSeconds: must be 0 (six times lambdaTimeoutSeconds) to 43200, got 50000"}},
		{"rest without endpoint", map[string]any{"catalog": "rest"}, []string{"restCatalogUri: is required with catalog=rest"}},
		{"rest endpoint not https", map[string]any{"catalog": "rest", "restCatalogUri": "http://catalog:8181"}, []string{`context: restCatalogUri: "http://catalog:8181" is not an https:// URL`}},
		{"unknown catalog", map[string]any{"catalog": "hive"}, []string{`context: catalog: "hive" is not glue or rest`}},
		{"batch size over FIFO limit", map[string]any{"batchSize": "100"}, []string{"context: batchSize: must be 1 to 10"}},
		{"retention not shorter than the DLQ's", map[string]any{"retentionDays": "14"}, []string{"context: retentionDays: must be 1 to 13 days"}},
		{"max receive count", map[string]any{"maxReceiveCount": "0"}, []string{"context: maxReceiveCount: must be 1 to 1000, got 0"}},
		{"stage", map[string]any{"stage": "Prod!"}, []string{`context: stage: "Prod!" must be lowercase`}},
		{"compute", map[string]any{"compute": "ec2"}, []string{`context: compute: "ec2" is not lambda, fargate or both`}},
		{"not a number", map[string]any{"maxConcurrency": "ten"}, []string{`context: maxConcurrency: want a whole number, got "ten"`}},
		{"unknown key", map[string]any{"stag": "prod"}, []string{"context: stag: unknown setting; known: batchSize, catalog"}},
		{"unknown key in file", map[string]any{"config": "typo.json"}, []string{`unknown field "stag"`}},
		{"missing file", map[string]any{"config": "nope.json"}, []string{"read config file", "nope.json"}},
		{"model endpoint without deployment", map[string]any{"modelEndpoint": "https://x.openai.azure.com"}, []string{"modelDeployment: is required with modelEndpoint"}},
		{"secret ARN", map[string]any{"modelSecretArn": "my-key"}, []string{`context: modelSecretArn: "my-key" is not a Secrets Manager secret ARN`}},
		{"fargate memory", map[string]any{"compute": "fargate", "fargateCpu": "256", "fargateMemoryMB": "4096"}, []string{"context: fargateMemoryMB: must be 512 to 2048 with fargateCpu 256"}},
		{"fargate tasks", map[string]any{"compute": "both", "fargateMinTasks": "3", "fargateMaxTasks": "2"}, []string{"context: fargateMaxTasks: must be at least 1 and at least fargateMinTasks (3)"}},
		{"job outside the repository", map[string]any{"jobs": "../x.yaml"}, []string{`context: jobs: "../x.yaml" must be a path inside the repository`}},
		{"every problem at once", map[string]any{"queueType": "lifo", "maxConcurrency": "1", "catalog": "rest"},
			[]string{"context: queueType", "context: maxConcurrency", "restCatalogUri"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(tt.give, dir)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestConfigIgnoresLambdaLimitsWithoutLambda(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(map[string]any{"compute": "fargate", "maxConcurrency": "1", "visibilityTimeoutSeconds": "600"}, t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, 600, cfg.VisibilityTimeout())
}

func TestReadJobs(t *testing.T) {
	t.Parallel()
	root := repoRootT(t)
	cfg := DefaultConfig()
	jobs, err := cfg.ReadJobs(root)
	require.NoError(t, err)
	assert.Equal(t, []JobTables{{File: "jobs/sentiment.yaml", Source: "social.posts", Target: "social.posts_sentiment"}}, jobs)

	cfg.GlueDatabase = "analytics"
	_, err = cfg.ReadJobs(root)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `jobs/sentiment.yaml: source.table: social.posts is in namespace "social", not in the Glue database "analytics" (glueDatabase)`)

	cfg.Catalog = CatalogREST // any namespace on a REST catalog
	_, err = cfg.ReadJobs(root)
	require.NoError(t, err)

	cfg.Jobs = []string{"jobs/missing.yaml"}
	_, err = cfg.ReadJobs(root)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "jobs: read job spec")
}

// TestReadJobsReadsAsTheConsumerDoes: the synth reads the job specs with
// the consumer's strict decoder and table rule, so that what it ships is
// what the consumer reads, and says so as the consumer does: file, field,
// reason.
func TestReadJobsReadsAsTheConsumerDoes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "jobs"), 0o755))
	spec := func(source, target string) string {
		return "name: j\nsource: {table: " + source + ", key: id, text: body}\ntarget: {table: " + target + "}\nmodel: {provider: lexicon}\n"
	}
	tests := []struct {
		name, give  string
		field, want string // "" = read
	}{
		{name: "other fields are the consumer's", give: spec("social.posts", "social.out") + "outputs: [{name: label, type: string}]\n"},
		{name: "a second document", give: spec("social.posts", "social.out") + "---\n" + spec("social.a", "social.b"),
			want: "line 5: a second YAML document (after ---): a file holds one document (one config, or one job spec), the rest would be ignored"},
		{name: "empty", give: "", want: "file is empty"},
		{name: "duplicate key", give: spec("social.posts", "social.out") + "target: {table: social.other}\n", want: `line 5: mapping key "target" already defined at line 3`},
		{name: "not a table name", give: spec("so cial.posts", "social.out"), field: "source.table", want: `"so cial.posts" must be NAMESPACE.TABLE`},
		{name: "no target", give: "source: {table: social.posts}\n", field: "target.table", want: "is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := "jobs/" + strings.ReplaceAll(tt.name, " ", "_") + ".yaml"
			require.NoError(t, os.WriteFile(filepath.Join(root, file), []byte(tt.give), 0o644))
			cfg := DefaultConfig()
			cfg.Jobs = []string{file}
			_, err := cfg.ReadJobs(root)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			var fe *specfile.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, file, fe.File)
			assert.Equal(t, tt.field, fe.Field)
			assert.Equal(t, tt.want, fe.Reason)
		})
	}
}

// TestSettingErrorsNameSourceAndKey: a bad setting is the error type of
// every file the program reads (specfile.FieldError), naming where it came
// from as the file and its key as the field.
func TestSettingErrorsNameSourceAndKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"queueType": "lifo"}`), 0o644))
	for _, tt := range []struct {
		give                map[string]any
		file, field, reason string
	}{
		{map[string]any{"queueType": "lifo"}, "context", "queueType", `"lifo" is not fifo or standard`},
		{map[string]any{"stag": "prod"}, "context", "stag", "unknown setting; known: "},
		{map[string]any{"config": "bad.json"}, filepath.Join(dir, "bad.json"), "queueType", `"lifo" is not fifo or standard`},
		{map[string]any{"catalog": "rest"}, "", "restCatalogUri", "is required with catalog=rest"},
	} {
		_, err := LoadConfig(tt.give, dir)
		var fe *specfile.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, tt.file, fe.File)
		assert.Equal(t, tt.field, fe.Field)
		assert.True(t, strings.HasPrefix(fe.Reason, tt.reason), fe.Reason)
	}
}

func TestRuntimeConfig(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	got, err := RuntimeConfig(cfg)
	require.NoError(t, err)
	assert.Equal(t, `# enricher runtime config for stage dev, written by infra at synth time: do not edit.
catalog:
    name: enricher
    type: glue
jobs:
    - jobs/sentiment.yaml
`, string(got))

	cfg.Catalog, cfg.RESTCatalogURI, cfg.RESTWarehouse = CatalogREST, "https://catalog.example.com/iceberg", "lake"
	got, err = RuntimeConfig(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(got), "type: rest\n    uri: https://catalog.example.com/iceberg\n    warehouse: lake\n")
}

func TestPrepareAsset(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "asset")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644))

	asset, err := PrepareAsset(DefaultConfig(), repoRootT(t), dir, fakeBuild)
	require.NoError(t, err)
	assert.Equal(t, []string{"bootstrap", "enricher.yaml", "jobs/sentiment.yaml"}, asset.Files)
	assert.NoFileExists(t, filepath.Join(dir, "stale"))
	spec, err := os.ReadFile(filepath.Join(dir, "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	orig, err := os.ReadFile(filepath.Join(repoRootT(t), "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	assert.Equal(t, orig, spec)

	_, err = PrepareAsset(DefaultConfig(), repoRootT(t), dir, func(out string) error {
		return os.WriteFile(out, nil, 0o644)
	})
	require.Error(t, err)
	assert.True(t, strings.HasSuffix(err.Error(), "is not executable"), err.Error())
}

// fakeBuild stands in for scripts/build-lambda.sh: the tests check the
// stack, not the binary.
func fakeBuild(out string) error {
	return os.WriteFile(out, []byte("#!/bin/sh\necho fake consumer\n"), 0o755)
}

func repoRootT(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	require.NoError(t, err)
	return root
}
