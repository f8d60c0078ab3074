package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/storage"
)

var (
	sentimentField = fakellm.Field{Name: "sentiment", Type: "string", Enum: []string{"negative", "neutral", "positive"}}
	// The score, in [-1, 1], travels as an integer of hundredths.
	scoreField = fakellm.Field{Name: "score", Type: "integer"}
)

// runBoth runs the enricher in-process and returns stdout and stderr.
func runBoth(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// useKey gives the test's process key in the variable env, and no Secrets
// Manager secret to take one from.
func useKey(t *testing.T, env, key string) {
	t.Setenv(env, key)
	t.Setenv(envAPIKeySecret, "")
}

// demoAgainst runs demo in a new folder on the posts file with llm as the
// model: provider openai speaks to llm's /v1 with --model name, azure to
// llm with --deployment name. more are further flags. It returns the
// folder and the demo's stdout and stderr.
func demoAgainst(t *testing.T, llm *fakellm.Server, provider, name, posts string, more ...string) (work, out, stderr string, err error) {
	t.Helper()
	work = filepath.Join(t.TempDir(), "demo")
	args := []string{"demo", "--workdir", work, "--posts", posts, "--provider", provider}
	switch provider {
	case "openai":
		args = append(args, "--base-url", llm.URL()+"/v1", "--model", name)
	case "azure":
		args = append(args, "--base-url", llm.URL(), "--deployment", name)
	default:
		t.Fatalf("demoAgainst: provider %q", provider)
	}
	out, stderr, err = runBoth(t, append(args, more...)...)
	return work, out, stderr, err
}

// postsWarehouse makes a demo warehouse whose target holds the demo's one
// generated post (post_id 1, noop model) and ingests the n posts of
// postsFile as post_ids 2 to n+1 (not yet published). It returns the
// config, the posts file and its lines.
func postsWarehouse(t *testing.T, n int) (cfg, posts string, lines []string) {
	t.Helper()
	posts, lines = postsFile(t, n)
	work, _ := newDemo(t, "--generate", "1", "--provider", "noop")
	cfg = filepath.Join(work, "enricher.yaml")
	mustRun(t, "ingest", "--config", cfg, "--posts", posts, "--first-id", "2")
	return cfg, posts, lines
}

// postsFile writes n posts, some of them blank and some repeated, and
// returns the file and its lines (post_id i is lines[i-1]).
func postsFile(t *testing.T, n int) (string, []string) {
	t.Helper()
	lines := make([]string, n)
	for i := range lines {
		switch {
		case i%50 == 17:
			lines[i] = "   "
		case i%10 == 3 && i > 10:
			lines[i] = lines[i-10] // a retweet
		default:
			lines[i] = fmt.Sprintf("post %d says the match was %s", i+1, []string{"awful", "fine", "brilliant", "a draw"}[i%4])
		}
	}
	path := filepath.Join(t.TempDir(), "posts.txt")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return path, lines
}

// requireRowsFromTheirOwnText checks one target row per post and, for each,
// the values the fake derives from that post's own text: a row that got
// another row's answer fails.
func requireRowsFromTheirOwnText(t *testing.T, rows []map[string]any, lines []string, model string) {
	t.Helper()
	require.Len(t, rows, len(lines))
	seen := map[int64]bool{}
	for _, r := range rows {
		id, err := r["post_id"].(json.Number).Int64()
		require.NoError(t, err)
		require.False(t, seen[id], "post %d written twice", id)
		seen[id] = true
		text := lines[id-1]
		if strings.TrimSpace(text) == "" {
			assert.Equal(t, "skipped", r["_status"], "post %d", id)
			continue
		}
		require.Equal(t, "ok", r["_status"], "post %d: %v", id, r["_error"])
		assert.Equal(t, model, r["_model"])
		assert.Equal(t, fakellm.Deterministic(text, sentimentField), r["sentiment"], "post %d", id)
		score, err := r["score"].(json.Number).Float64()
		require.NoError(t, err)
		assert.InDelta(t, float64(fakellm.Deterministic(text, scoreField).(int64))/100, score, 1e-9, "post %d", id)
	}
}

func TestDemoWithChatModelUnderFaultsKeepsEveryAnswerOnItsRow(t *testing.T) {
	const key = "sk-demo-key-that-must-stay-secret"
	useKey(t, "OPENAI_API_KEY", key)
	faults := []fakellm.Fault{fakellm.DropRow, fakellm.ServerError, fakellm.WrongType, fakellm.Throttle,
		fakellm.DuplicateRow, fakellm.MalformedJSON, fakellm.CutOff, fakellm.Refusal, fakellm.ExtraRow}
	llm := (&fakellm.Server{
		Key: key, RPM: 3000, Latency: 5 * time.Millisecond, RetryAfter: 20 * time.Millisecond,
		Fault: func(r *fakellm.Request) fakellm.Fault {
			if r.N%4 == 0 {
				return faults[(r.N/4)%len(faults)]
			}
			return fakellm.None
		},
	}).StartTB(t)
	posts, lines := postsFile(t, 600)
	work, out, stderr, err := demoAgainst(t, llm, "openai", "fake-1", posts, "--rounds", "3", "--samples", "2",
		"--rows-per-request", "20", "--log-level", "debug")
	require.NoError(t, err, stderr)
	assert.Contains(t, out, "model requests")
	assert.Contains(t, out, "openai/fake-1 model")
	assert.NotContains(t, out+stderr, key)

	rows := exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment")
	requireRowsFromTheirOwnText(t, rows, lines, "openai/fake-1")
	assert.Positive(t, llm.Stats().Injected)
	// Retweets were asked once: the rows sent are the distinct texts, the
	// copies were answered from them.
	distinct, nonBlank := map[string]bool{}, 0
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			distinct[l] = true
			nonBlank++
		}
	}
	assert.Contains(t, out, fmt.Sprintf("%d rows sent, %d answered from identical texts", len(distinct), nonBlank-len(distinct)))
}

func TestDemoStopsAtTheTokenBudget(t *testing.T) {
	t.Parallel()
	llm := (&fakellm.Server{}).StartTB(t)
	posts, _ := postsFile(t, 300)
	out, _, err := runBoth(t, "demo", "--workdir", filepath.Join(t.TempDir(), "demo"), "--posts", posts, "--rounds", "1",
		"--provider", "openai", "--base-url", llm.URL()+"/v1", "--max-tokens-total", "4000", "--max-concurrency", "1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "token budget exhausted")
	assert.Contains(t, out, "model usage: requests=")
}

func TestReplayReplacesRowsInPlace(t *testing.T) {
	t.Parallel()
	posts, lines := postsFile(t, 400)
	_, cfg := newDemo(t, "--posts", posts, "--rounds", "4")
	before := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, before, 400)
	wmBefore := watermark(t, cfg)

	llm := (&fakellm.Server{}).StartTB(t)
	out := mustRun(t, "replay", "--config", cfg, "--job", "sentiment", "--provider", "openai", "--base-url", llm.URL()+"/v1", "--model", "new-model")
	assert.Contains(t, out, "target rows replaced")

	after := exportRows(t, cfg, "social.posts_sentiment")
	requireRowsFromTheirOwnText(t, after, lines, "openai/new-model")
	assert.Equal(t, wmBefore, watermark(t, cfg), "a replay carries the watermark forward")

	// A range that the job has not reached is refused.
	_, err := run(t, "replay", "--config", cfg, "--to-snapshot", "42", "--provider", "noop")
	require.ErrorContains(t, err, "has no snapshot 42")
}

func TestReplayOnlyFailedRowsLeavesTheOthersAlone(t *testing.T) {
	t.Parallel()
	var filterOn atomic.Bool
	filterOn.Store(true)
	llm := (&fakellm.Server{Fault: func(r *fakellm.Request) fakellm.Fault {
		for _, row := range r.Rows {
			if filterOn.Load() && strings.Contains(row.Text, "brilliant") {
				return fakellm.ContentFilter
			}
		}
		return fakellm.None
	}}).StartTB(t)
	posts, lines := postsFile(t, 200)
	chat := []string{"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "m"}
	work, _, stderr, err := demoAgainst(t, llm, "openai", "m", posts, "--rounds", "2", "--samples", "0")
	require.NoError(t, err, stderr)
	cfg := filepath.Join(work, "enricher.yaml")
	before := map[string]map[string]any{}
	failed := 0
	for _, r := range exportRows(t, cfg, "social.posts_sentiment") {
		before[string(r["post_id"].(json.Number))] = r
		if r["_status"] == "failed" {
			failed++
			assert.Contains(t, r["_error"], "content filter")
		}
	}
	require.Positive(t, failed)

	filterOn.Store(false)
	asked := len(llm.Requests())
	out := mustRun(t, append([]string{"replay", "--config", cfg, "--only-status", "failed,invalid_output"}, chat...)...)
	assert.Contains(t, out, fmt.Sprintf("ok %d", failed))
	assert.Regexp(t, fmt.Sprintf(`target rows replaced\s+%d\s`, failed), out, "copy-on-write keeps the other rows of a rewritten file: they are not replaced")

	after := exportRows(t, cfg, "social.posts_sentiment")
	requireRowsFromTheirOwnText(t, after, lines, "openai/m")
	for _, r := range after {
		old := before[string(r["post_id"].(json.Number))]
		if old["_status"] == "ok" {
			assert.Equal(t, old["_enriched_at"], r["_enriched_at"], "post %v was replayed but had not failed", r["post_id"])
		}
	}
	sent := 0
	for _, r := range llm.Requests()[asked:] {
		sent += len(r.Rows)
	}
	assert.LessOrEqual(t, sent, failed, "only the failed rows go to the model again")

	_, err = run(t, "replay", "--config", cfg, "--only-status", "broken")
	require.ErrorContains(t, err, `--only-status "broken": want one of ok, skipped, failed, invalid_output`)
}

func watermark(t *testing.T, cfg string) storage.Watermark {
	t.Helper()
	c, err := loadConfig(cfg)
	require.NoError(t, err)
	cat, err := storage.OpenCatalog(context.Background(), c.Catalog)
	require.NoError(t, err)
	defer cat.Close()
	tgt, err := cat.LoadTable(context.Background(), "social.posts_sentiment")
	require.NoError(t, err)
	wm, err := storage.ReadWatermark(tgt, "sentiment", "social.posts")
	require.NoError(t, err)
	wm.TargetSnapshotID, wm.CommittedAt = 0, time.Time{}
	return wm
}

// fakeSecrets speaks the Secrets Manager JSON protocol for GetSecretValue.
func fakeSecrets(t *testing.T, secrets map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		if r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"__type": "UnknownOperationException", "message": "%s"}`, r.Header.Get("X-Amz-Target"))
			return
		}
		var in struct{ SecretId string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		v, ok := secrets[in.SecretId]
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the specified secret."}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"ARN": "arn:aws:secretsmanager:eu-west-1:000000000000:secret:" + in.SecretId, "Name": in.SecretId, "SecretString": v,
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAPIKeyFromSecretsManager(t *testing.T) {
	t.Parallel()
	srv := fakeSecrets(t, map[string]string{
		"plain":  "  sk-plain  \n",
		"json":   `{"api_key": "sk-json", "endpoint": "https://x"}`,
		"single": `{"whatever": "sk-single"}`,
		"nokey":  `{"user": "u-1234", "password": "p-5678"}`,
		"both":   `{"AZURE_OPENAI_API_KEY": "sk-azure", "OPENAI_API_KEY": "sk-openai"}`,
		"empty":  ``,
	})
	api := secretsmanager.New(secretsmanager.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
	})
	ctx := context.Background()
	for name, want := range map[string]string{"plain": "sk-plain", "json": "sk-json", "single": "sk-single"} {
		key, err := fetchAPIKey(ctx, api, name, "openai")
		require.NoError(t, err, name)
		assert.Equal(t, want, key.Reveal(), name)
	}
	for provider, want := range map[string]string{"openai": "sk-openai", "azure": "sk-azure"} {
		key, err := fetchAPIKey(ctx, api, "both", provider)
		require.NoError(t, err)
		assert.Equal(t, want, key.Reveal(), "a secret holding both keys gives each provider its own")
	}
	_, err := fetchAPIKey(ctx, api, "nokey", "openai")
	require.ErrorContains(t, err, "has password, user")
	assert.NotContains(t, err.Error(), "p-5678", "errors name members, never values")
	_, err = fetchAPIKey(ctx, api, "empty", "openai")
	require.ErrorContains(t, err, "secret empty is empty")
	_, err = fetchAPIKey(ctx, api, "missing", "openai")
	require.ErrorContains(t, err, "ResourceNotFoundException")
}

func TestDemoTakesTheKeyFromSecretsManager(t *testing.T) {
	const key = "sk-from-secrets-manager"
	secrets := fakeSecrets(t, map[string]string{"enricher/azure": `{"AZURE_OPENAI_API_KEY": "` + key + `"}`})
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets.URL)
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AZURE_OPENAI_API_KEY", "")
	llm := (&fakellm.Server{Key: key}).StartTB(t)
	posts, lines := postsFile(t, 60)
	work, out, stderr, err := demoAgainst(t, llm, "azure", "gpt-4o-mini", posts, "--rounds", "1", "--samples", "0",
		"--api-key-secret", "enricher/azure", "--log-level", "debug")
	require.NoError(t, err, stderr)
	assert.NotContains(t, out+stderr, key)
	requireRowsFromTheirOwnText(t, exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment"), lines, "azure/gpt-4o-mini")
	for _, r := range llm.Requests() {
		require.True(t, r.Azure)
		require.Equal(t, "gpt-4o-mini", r.Deployment)
	}

	// Without a key, azure refuses to start and says where keys come from.
	_, _, err = runBoth(t, "demo", "--workdir", work, "--posts", posts, "--provider", "azure", "--base-url", llm.URL(), "--deployment", "d")
	require.ErrorContains(t, err, "provider azure needs an API key: set AZURE_OPENAI_API_KEY")
}

// TestRunWithChatModelStopsAtTheBudgetAndLosesNothing: run takes the model
// flags; out of token budget it stops with the message released, and the
// next run finishes the snapshot with every row once, from its own text.
func TestRunWithChatModelStopsAtTheBudgetAndLosesNothing(t *testing.T) {
	t.Parallel()
	// A long poll the first run abandons as it stops may still take the
	// message (the emulator does, SQS may): a short visibility timeout
	// brings it back soon, and receives to spare keep it out of the DLQ.
	_, url, _ := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "2"})
	llm := (&fakellm.Server{}).StartTB(t)
	cfg, _, lines := postsWarehouse(t, 300)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	chat := []string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--retry-backoff", "1s",
		"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "m", "--max-concurrency", "1"}
	_, stderr, err := runBoth(t, append(chat, "--max-tokens-total", "5000")...)
	require.Error(t, err, stderr)
	assert.Contains(t, err.Error(), "token budget exhausted")
	assert.Contains(t, err.Error(), "the message in flight was released")
	assert.Contains(t, stderr, "model usage")

	_, stderr, err = runBoth(t, chat...)
	require.NoError(t, err, stderr)
	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, 301)
	var mine []map[string]any
	for _, r := range rows {
		if r["_model"] != "noop/fixed" {
			mine = append(mine, r)
		}
	}
	// post_id 1 is the demo's generated post; posts file line i is post i+1.
	for _, r := range mine {
		id, _ := r["post_id"].(json.Number).Int64()
		r["post_id"] = json.Number(fmt.Sprint(id - 1))
	}
	requireRowsFromTheirOwnText(t, mine, lines, "openai/m")
}

func TestLambdaModelSettingsFromTheEnvironment(t *testing.T) {
	t.Setenv(envModelProvider, "azure")
	t.Setenv(envModelBaseURL, "https://res.openai.azure.com")
	t.Setenv(envModelDeployment, "gpt-4o-mini")
	t.Setenv(envModelName, "")
	t.Setenv(envModelAPIVersion, "")
	mf := modelFlagsFromEnv()
	require.NoError(t, mf.validate())
	work, _ := newDemo(t, "--generate", "1")
	c, err := loadConfig(filepath.Join(work, "enricher.yaml"))
	require.NoError(t, err)
	specs, err := c.loadSpecs(mf.overrides())
	require.NoError(t, err)
	m := specs[0].Model
	assert.Equal(t, "azure", m.Provider)
	assert.Equal(t, "https://res.openai.azure.com", m.BaseURL)
	assert.Equal(t, "gpt-4o-mini", m.Deployment)
	assert.Equal(t, "gpt-4o-mini", m.Name)

	// The CDK app passes its modelDeployment as ENRICHER_MODEL_DEPLOYMENT
	// whatever the provider: one without deployments takes it as the
	// model name.
	t.Setenv(envModelProvider, "openai")
	t.Setenv(envModelBaseURL, "https://llm.example.com/v1")
	t.Setenv(envModelDeployment, "llama-3.1-8b")
	mf = modelFlagsFromEnv()
	require.NoError(t, mf.validate())
	specs, err = c.loadSpecs(mf.overrides())
	require.NoError(t, err)
	assert.Equal(t, "openai/llama-3.1-8b", specs[0].Model.ID())

	t.Setenv(envModelProvider, "gpt")
	require.ErrorContains(t, modelFlagsFromEnv().validate(), `--provider "gpt"`)

	// An endpoint for a provider that asks none is refused, not dropped.
	t.Setenv(envModelProvider, "lexicon")
	require.ErrorContains(t, modelFlagsFromEnv().validate(),
		"--base-url is for the chat providers ("+strings.Join(enrich.ChatProviders, ", ")+"), not --provider lexicon")
	t.Setenv(envModelBaseURL, "")
	require.ErrorContains(t, modelFlagsFromEnv().validate(), "--deployment is for the chat providers")
	t.Setenv(envModelDeployment, "")
	require.NoError(t, modelFlagsFromEnv().validate())
}

// TestEveryProviderBuildsWithItsKey: the command line builds every
// provider of the registry, each with the key from its own variable; one
// whose key is required does not start without it and says where keys
// come from, the others start with a warning.
func TestEveryProviderBuildsWithItsKey(t *testing.T) {
	t.Setenv(envAPIKeySecret, "")
	ctx := context.Background()
	var logs bytes.Buffer
	ms := &models{log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, p := range enrich.ModelProviders() {
		if p.Key.Env != "" {
			t.Setenv(p.Key.Env, "sk-"+p.Name)
		}
		spec, err := enrich.LoadSpecWith(filepath.Join("..", "..", "jobs", "sentiment.yaml"), enrich.Overrides{
			Provider: p.Name, BaseURL: "https://llm.example.com/v1", Deployment: "d",
		})
		require.NoError(t, err, p.Name)
		m, err := ms.build(ctx, spec)
		require.NoError(t, err, p.Name)
		assert.Equal(t, spec.Model.ID(), m.Name())
		closeModel(m)
		if p.Key.Env == "" {
			continue
		}

		t.Setenv(p.Key.Env, "")
		m, err = ms.build(ctx, spec)
		if p.Key.Required {
			require.ErrorContains(t, err, "provider "+p.Name+" needs an API key: set "+p.Key.Env+" or name a Secrets Manager secret")
			assert.Nil(t, m)
			continue
		}
		require.NoError(t, err, p.Name)
		closeModel(m)
		assert.Contains(t, logs.String(), "no API key for provider "+p.Name)
		assert.Contains(t, logs.String(), "set "+p.Key.Env+" or --api-key-secret")
	}

	// The help names every provider and every key variable, every chat
	// provider where the Batch API is, every provider with deployments
	// where --deployment is.
	out, _, err := runBoth(t, "run", "--help")
	require.NoError(t, err)
	for _, p := range enrich.ModelProviders() {
		assert.Regexp(t, `--provider string +model backend for every job: [^\n]*\b`+p.Name+`\b`, out)
		if p.Chat {
			assert.Regexp(t, `--batch-api +send rows through the provider's Batch API \([^)\n]*\b`+p.Name+`\b`, out)
		}
		if p.Deployments {
			assert.Regexp(t, `--deployment string +what answers at the chat server: for [^\n]*\b`+p.Name+`\b[^\n]* the deployment name`, out)
		}
		if p.Key.Env != "" {
			assert.Regexp(t, `--api-key-secret string +[^\n]*without it the key comes from [^\n]*\$`+p.Key.Env+`\b`, out)
		}
	}
}
