package enrich_test

import (
	"encoding/json"
	"fmt"
	"math"
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

// gpt4oMini is gpt-4o-mini's list price on OpenAI, in US dollars per million
// tokens (the Batch API: enrich.BatchDiscount of each).
var gpt4oMini = enrich.Prices{InputPerMillion: 0.15, CachedInputPerMillion: 0.075, OutputPerMillion: 0.60}

// BenchmarkTokensPerRow counts, with a real tokenizer (o200k_base, the
// encoding of the gpt-4o family, from tiktoken-go's offline loader), what
// the sentiment job costs per row at several rows_per_request on the
// TweetEval validation tweets: the prompt (system message shared by the
// batch, the JSON array of posts, per-message overhead), the part of it a
// provider would read from its prompt cache, and the answer (the columnar
// object a model returns). It prices them at gpt-4o-mini's list prices,
// synchronously and through the Batch API, per million posts, and reports
// the estimate the limiter charges against TPM (prompt estimate plus
// max_tokens). Run with -benchtime 1x: the figures are counts, not times.
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
			var prompt, cached, answer, charged, rows int
			for b.Loop() {
				prompt, cached, answer, charged, rows = 0, 0, 0, 0, 0
				for start := 0; start < len(texts); start += rpr {
					batch := texts[start:min(start+rpr, len(texts))]
					system, user, maxTokens, err := enrich.RequestMessages(spec, batch)
					if err != nil {
						b.Fatal(err)
					}
					// 3 tokens per message and 3 to prime the answer, as
					// OpenAI counts chat messages.
					p := count(system) + count(user) + 2*3 + 3
					prompt += p
					if start > 0 {
						cached += cachedTokens(p, 3+count(system))
					}
					answer += count(answerFor(b, spec, user))
					charged += enrich.EstimateTokens(system) + enrich.EstimateTokens(user) + 12 + maxTokens
					rows += len(batch)
				}
			}
			sync := enrich.Usage{RowsSent: int64(rows), PromptTokens: int64(prompt), CachedTokens: int64(cached), CompletionTokens: int64(answer), Prices: gpt4oMini}
			batch := enrich.Usage{RowsSent: int64(rows), BatchRowsSent: int64(rows), BatchPromptTokens: int64(prompt), BatchCachedTokens: int64(cached), BatchCompletionTokens: int64(answer), Prices: gpt4oMini}
			b.ReportMetric(float64(prompt)/float64(rows), "prompt_tokens/row")
			b.ReportMetric(float64(cached)/float64(rows), "cached_tokens/row")
			b.ReportMetric(float64(answer)/float64(rows), "answer_tokens/row")
			b.ReportMetric(float64(prompt+answer)/float64(rows), "tiktoken_tokens/row")
			b.ReportMetric(float64(charged)/float64(rows), "estimated_tokens/row")
			b.ReportMetric(sync.CostPerMillionRows(), "usd_per_million_sync")
			b.ReportMetric(batch.CostPerMillionRows(), "usd_per_million_batch")
		})
	}
}

// cachedTokens is what OpenAI's prompt cache serves of a prompt of n tokens
// whose first shared tokens (the system message) every request of the job
// repeats: nothing below 1024 tokens, else the shared prefix in steps of
// 128 tokens.
func cachedTokens(n, shared int) int {
	if n < 1024 || shared < 1024 {
		return 0
	}
	return min(n, shared/128*128)
}

// answerFor is the answer a model gives to the rows of a user message: the
// columnar object, values as the fake server picks them, numbers with at
// most two decimals as the prompt asks (and a score in [-1, 1] as an
// integer of hundredths), written as short as JSON allows.
func answerFor(b *testing.B, spec *enrich.Spec, user string) string {
	var rows []struct{ ID, Text string }
	if err := json.Unmarshal([]byte(user), &rows); err != nil {
		b.Fatal(err)
	}
	var out strings.Builder
	out.WriteString(`{"id":[`)
	for i, row := range rows {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(strconv.Quote(row.ID))
	}
	out.WriteByte(']')
	for _, f := range spec.Outputs {
		ft := "string"
		if f.Type == enrich.TypeDouble {
			ft = "number"
		}
		// A double in [-1, 1] travels as an integer of hundredths.
		hundredths := f.Type == enrich.TypeDouble && f.Min != nil && f.Max != nil && *f.Min >= -1 && *f.Max <= 1
		fmt.Fprintf(&out, ",%q:[", f.Name)
		for i, row := range rows {
			if i > 0 {
				out.WriteByte(',')
			}
			v := fakellm.Deterministic(row.Text, fakellm.Field{Name: f.Name, Type: ft, Enum: f.Enum})
			if x, ok := v.(float64); ok {
				v = json.Number(strconv.FormatFloat(math.Round(x*100)/100, 'f', -1, 64))
				if hundredths {
					v = int64(math.Round(x * 100))
				}
			}
			raw, err := json.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			out.Write(raw)
		}
		out.WriteByte(']')
	}
	out.WriteByte('}')
	return out.String()
}
