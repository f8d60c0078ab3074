package enrich_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
)

// valTexts reads the TweetEval validation tweets (../shared/data beside the
// repository, or $ENRICHER_SHARED_DATA).
func valTexts(b *testing.B) []string {
	b.Helper()
	dir := os.Getenv("ENRICHER_SHARED_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "data")
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tweeteval-sentiment", "val_text.txt"))
	if err != nil {
		b.Skipf("SKIPPED: shared data not found (set ENRICHER_SHARED_DATA): %v", err)
	}
	return strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
}

// BenchmarkTokensPerRow counts, with a real tokenizer (o200k_base, the
// encoding of the gpt-4o family, from tiktoken-go's offline loader), what
// the sentiment job costs per row at several rows_per_request on the
// TweetEval validation tweets: the prompt (system message shared by the
// batch, the JSON array of posts, per-message overhead) and the answer
// (the results object a model returns). It also reports the estimate the
// limiter charges against TPM (prompt estimate plus max_tokens). Run with
// -benchtime 1x: the figures are counts, not times.
func BenchmarkTokensPerRow(b *testing.B) {
	texts := valTexts(b)
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding("o200k_base")
	if err != nil {
		b.Fatal(err)
	}
	count := func(s string) int { return len(enc.Encode(s, nil, nil)) }
	for _, rpr := range []int{1, 5, 20, 50} {
		b.Run("rpr="+strconv.Itoa(rpr), func(b *testing.B) {
			spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: enrich.ProviderOpenAI, RowsPerRequest: rpr})
			if err != nil {
				b.Fatal(err)
			}
			var prompt, answer, charged, rows int
			for b.Loop() {
				prompt, answer, charged, rows = 0, 0, 0, 0
				for start := 0; start < len(texts); start += rpr {
					batch := texts[start:min(start+rpr, len(texts))]
					system, user, maxTokens, err := enrich.RequestMessages(spec, batch)
					if err != nil {
						b.Fatal(err)
					}
					// 3 tokens per message and 3 to prime the answer, as
					// OpenAI counts chat messages.
					prompt += count(system) + count(user) + 2*3 + 3
					answer += count(answerFor(b, spec, user))
					charged += enrich.EstimateTokens(system) + enrich.EstimateTokens(user) + 12 + maxTokens
					rows += len(batch)
				}
			}
			b.ReportMetric(float64(prompt)/float64(rows), "prompt_tokens/row")
			b.ReportMetric(float64(answer)/float64(rows), "answer_tokens/row")
			b.ReportMetric(float64(prompt+answer)/float64(rows), "tiktoken_tokens/row")
			b.ReportMetric(float64(charged)/float64(rows), "estimated_tokens/row")
		})
	}
}

// answerFor is the answer a model gives to the rows of a user message: the
// results object with one entry per row, values as the fake server picks
// them.
func answerFor(b *testing.B, spec *enrich.Spec, user string) string {
	var rows []struct{ ID, Text string }
	if err := json.Unmarshal([]byte(user), &rows); err != nil {
		b.Fatal(err)
	}
	results := make([]map[string]any, len(rows))
	for i, row := range rows {
		text := row.Text
		r := map[string]any{"id": row.ID}
		for _, f := range spec.Outputs {
			ft := "string"
			if f.Type == enrich.TypeDouble {
				ft = "number"
			}
			v := fakellm.Deterministic(text, fakellm.Field{Name: f.Name, Type: ft, Enum: f.Enum})
			if x, ok := v.(float64); ok {
				v = json.Number(fmt.Sprintf("%.2f", x)) // models write short numbers
			}
			r[f.Name] = v
		}
		results[i] = r
	}
	out, _ := json.Marshal(map[string]any{"results": results})
	return string(out)
}
