package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
	mn "github.com/socialdata/enricher/internal/metricnames"
	"github.com/socialdata/enricher/internal/sqstest"
)

// logFilter is a CloudWatch Logs JSON metric filter pattern, parsed: the
// part of the syntax that metricnames.RunFilters uses (selectors $.a.b,
// = and != on strings with a leading or trailing * wildcard, = != < <= >
// >= on numbers, IS TRUE / IS FALSE / IS NULL, && and || with && binding
// closer, parentheses). Anything else is a parse error, so that a new
// pattern this evaluator cannot read fails the test instead of passing it.
type logFilter struct{ expr filterExpr }

type filterExpr func(line map[string]any) bool

func parseLogFilter(pattern string) (*logFilter, error) {
	p := strings.TrimSpace(pattern)
	if !strings.HasPrefix(p, "{") || !strings.HasSuffix(p, "}") {
		return nil, fmt.Errorf("%q: a JSON filter pattern is in braces", pattern)
	}
	toks, err := filterTokens(p[1 : len(p)-1])
	if err != nil {
		return nil, fmt.Errorf("%q: %w", pattern, err)
	}
	fp := &filterParser{toks: toks}
	e, err := fp.or()
	if err == nil && fp.pos != len(toks) {
		err = fmt.Errorf("unexpected %q", toks[fp.pos])
	}
	if err != nil {
		return nil, fmt.Errorf("%q: %w", pattern, err)
	}
	return &logFilter{expr: e}, nil
}

func filterTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ':
			i++
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 2
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case strings.HasPrefix(s[i:], "&&") || strings.HasPrefix(s[i:], "||") || strings.HasPrefix(s[i:], "!=") ||
			strings.HasPrefix(s[i:], ">=") || strings.HasPrefix(s[i:], "<="):
			toks = append(toks, s[i:i+2])
			i += 2
		case c == '=' || c == '<' || c == '>':
			toks = append(toks, string(c))
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(` ()"=<>!&|`, rune(s[j])) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q", s[i:])
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}

type filterParser struct {
	toks []string
	pos  int
}

func (p *filterParser) next() string {
	if p.pos >= len(p.toks) {
		return ""
	}
	p.pos++
	return p.toks[p.pos-1]
}

func (p *filterParser) peek() string {
	if p.pos >= len(p.toks) {
		return ""
	}
	return p.toks[p.pos]
}

func (p *filterParser) or() (filterExpr, error) {
	l, err := p.and()
	for err == nil && p.peek() == "||" {
		p.next()
		var r filterExpr
		if r, err = p.and(); err == nil {
			a, b := l, r
			l = func(m map[string]any) bool { return a(m) || b(m) }
		}
	}
	return l, err
}

func (p *filterParser) and() (filterExpr, error) {
	l, err := p.term()
	for err == nil && p.peek() == "&&" {
		p.next()
		var r filterExpr
		if r, err = p.term(); err == nil {
			a, b := l, r
			l = func(m map[string]any) bool { return a(m) && b(m) }
		}
	}
	return l, err
}

func (p *filterParser) term() (filterExpr, error) {
	if p.peek() == "(" {
		p.next()
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if t := p.next(); t != ")" {
			return nil, fmt.Errorf("expected ) at %q", t)
		}
		return e, nil
	}
	sel := p.next()
	if !strings.HasPrefix(sel, "$.") {
		return nil, fmt.Errorf("expected a $. selector at %q", sel)
	}
	op := p.next()
	if op == "IS" {
		switch v := p.next(); v {
		case "TRUE", "FALSE":
			return func(m map[string]any) bool { b, ok := selectField(m, sel).(bool); return ok && b == (v == "TRUE") }, nil
		case "NULL":
			return func(m map[string]any) bool { f, ok := selectPresent(m, sel); return ok && f == nil }, nil
		default:
			return nil, fmt.Errorf("IS %q", v)
		}
	}
	val := p.next()
	if strings.HasPrefix(val, `"`) {
		want := strings.Trim(val, `"`)
		if op != "=" && op != "!=" {
			return nil, fmt.Errorf("%s on a string", op)
		}
		match := func(s string) bool {
			switch {
			case strings.HasSuffix(want, "*"):
				return strings.HasPrefix(s, strings.TrimSuffix(want, "*"))
			case strings.HasPrefix(want, "*"):
				return strings.HasSuffix(s, strings.TrimPrefix(want, "*"))
			}
			return s == want
		}
		return func(m map[string]any) bool {
			s, ok := selectField(m, sel).(string)
			return ok && match(s) == (op == "=")
		}, nil
	}
	n, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return nil, fmt.Errorf("value %q is neither a string nor a number", val)
	}
	cmp := map[string]func(a float64) bool{
		"=": func(a float64) bool { return a == n }, "!=": func(a float64) bool { return a != n },
		">": func(a float64) bool { return a > n }, ">=": func(a float64) bool { return a >= n },
		"<": func(a float64) bool { return a < n }, "<=": func(a float64) bool { return a <= n },
	}[op]
	if cmp == nil {
		return nil, fmt.Errorf("operator %q", op)
	}
	return func(m map[string]any) bool { f, ok := selectField(m, sel).(float64); return ok && cmp(f) }, nil
}

func selectPresent(m map[string]any, sel string) (any, bool) {
	var cur any = m
	for _, k := range strings.Split(strings.TrimPrefix(sel, "$."), ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func selectField(m map[string]any, sel string) any { v, _ := selectPresent(m, sel); return v }

// metricOf sums what filter f publishes over the JSON lines of log.
func metricOf(t *testing.T, f mn.Filter, log string) float64 {
	t.Helper()
	lf, err := parseLogFilter(f.Pattern)
	require.NoError(t, err, f.Name)
	var sum float64
	for line := range strings.Lines(log) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || !lf.expr(m) {
			continue
		}
		if strings.HasPrefix(f.Value, "$.") {
			v, ok := selectField(m, f.Value).(float64)
			require.True(t, ok, "%s: the line has no number at %s: %s", f.Name, f.Value, line)
			sum += v
			continue
		}
		v, err := strconv.ParseFloat(f.Value, 64)
		require.NoError(t, err, f.Name)
		sum += v
	}
	return sum
}

func TestLogFilterEvaluator(t *testing.T) {
	t.Parallel()
	line := map[string]any{"msg": "target commit conflict, retrying", "rows": 4.0, "ok": true, "c": map[string]any{"failed": 2.0}}
	for pattern, want := range map[string]bool{
		`{ $.msg = "target commit conflict*" }`:                            true,
		`{ $.msg = "*retrying" }`:                                          true,
		`{ $.msg = "target commit conflict" }`:                             false,
		`{ $.msg != "x" && $.rows >= 4 }`:                                  true,
		`{ $.rows > 4 || $.c.failed = 2 }`:                                 true,
		`{ ($.msg = "x" || $.msg = "y") && $.c.failed > 0 }`:               false,
		`{ $.msg = "x" || $.msg = "y" && $.c.failed > 0 || $.ok IS TRUE }`: true,
		`{ $.ok IS FALSE }`:                                                false,
		`{ $.missing IS TRUE }`:                                            false,
		`{ $.c.failed < 1 }`:                                               false,
	} {
		f, err := parseLogFilter(pattern)
		require.NoError(t, err, pattern)
		assert.Equal(t, want, f.expr(line), pattern)
	}
	for _, bad := range []string{`$.msg = "x"`, `{ $.msg = }`, `{ $.msg ~ "x" }`, `{ msg = "x" }`, `{ ($.a = 1 }`, `{ $.a > "x" }`, `{ $.a IS MAYBE }`} {
		_, err := parseLogFilter(bad)
		assert.Error(t, err, bad)
	}
}

// The run service's metric filters (metricnames.RunFilters, which the CDK
// app installs and alarms on) evaluated on the JSON log lines of real
// runs: each metric comes to what happened, counted from the queue, the
// model server and the target table.
func TestRunLogLinesFeedTheMetricFilters(t *testing.T) {
	t.Parallel()
	api, url, dlq := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "2"})
	var calls, throttled atomic.Int64
	llm := (&fakellm.Server{Fault: func(r *fakellm.Request) fakellm.Fault {
		for _, row := range r.Rows {
			if strings.HasPrefix(row.Text, "post 7 says") {
				return fakellm.PromptFilter // until the row is alone: failed
			}
		}
		switch calls.Add(1) {
		case 2:
			throttled.Add(1)
			return fakellm.Throttle
		case 3:
			return fakellm.WrongType
		}
		return fakellm.None
	}}).StartTB(t)
	cfg, posts, _ := postsWarehouse(t, 100)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	_, err := api.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("{}")})
	require.NoError(t, err)

	chat := []string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--retry-backoff", "1s",
		"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "m", "--max-concurrency", "1", "--log-format", "json"}
	_, logA, err := runBoth(t, chat...)
	require.NoError(t, err, logA)

	// A second snapshot, on a budget too small for one request.
	mustRun(t, "ingest", "--config", cfg, "--posts", posts, "--first-id", "102")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	_, logB, err := runBoth(t, append(chat, "--max-tokens-total", "1")...)
	require.ErrorContains(t, err, "token budget exhausted", logB)
	require.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 101, "the demo's row and the first snapshot's")

	// A third snapshot, and the second event again, through the Batch API:
	// recorded ranges are commits, collections commit rows (with the row
	// that the content filter fails). The batches may need more than one
	// run's final collection.
	mustRun(t, "ingest", "--config", cfg, "--posts", posts, "--first-id", "202")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	var logC strings.Builder
	for i := 0; ; i++ {
		_, l, err := runBoth(t, append(chat, "--batch-api", "--batch-poll", "1s")...)
		require.NoError(t, err, l)
		logC.WriteString(l)
		if len(exportRows(t, cfg, "social.posts_sentiment")) == 301 {
			break
		}
		require.Less(t, i, 20, "the batches were never collected:\n%s", logC.String())
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, logC.String(), `"msg":"batch collected"`)

	rows := exportRows(t, cfg, "social.posts_sentiment")
	status := map[string]float64{}
	for _, r := range rows {
		status[r["_status"].(string)]++
	}
	require.Positive(t, status["failed"], "the content filter failed a row")
	require.Positive(t, status["invalid_output"], "a wrong type made a row invalid_output")

	logs := logA + logB + logC.String()
	got := map[string]float64{}
	for _, f := range mn.RunFilters {
		got[f.Name] = metricOf(t, f, logs)
	}
	assert.Equal(t, map[string]float64{
		// the first event, the poison message, the halted second event,
		// the second event again and the third
		mn.Records:       5,
		mn.FailedRecords: 0,
		mn.DeadLettered:  1,
		mn.Halts:         1,
		// every snapshot of the target but the demo's and the one per
		// batch that records its ID
		mn.Commits:           float64(len(targetSnapshots(t, cfg)) - 1 - llm.Stats().Batches),
		mn.RowsCommitted:     300,
		mn.CommitConflicts:   0,
		mn.RowsFailed:        status["failed"],
		mn.RowsInvalidOutput: status["invalid_output"],
		mn.ModelThrottled:    float64(throttled.Load()),
		mn.BudgetExhausted:   1,
	}, got)
	assert.Len(t, sqstest.ReceiveAll(t, api, dlq), 1)
}

// TestRunFiltersNameRealLogLines: each message a filter pattern names (or
// the prefix before its wildcard) is a string literal of the product
// code, and so is each key of each attribute path it reads, so a typo in a
// pattern or a renamed log line fails here, also for the filters that
// TestRunLogLinesFeedTheMetricFilters sees count 0.
func TestRunFiltersNameRealLogLines(t *testing.T) {
	t.Parallel()
	lits := map[string]bool{}
	root := filepath.Join("..", "..")
	files := 0
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".cache" || d.Name() == "node_modules" || d.Name() == "scripts" || d.Name() == "metricnames") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			if bl, ok := n.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				if s, err := strconv.Unquote(bl.Value); err == nil {
					lits[s] = true
				}
			}
			return true
		})
		return nil
	}))
	require.Greater(t, files, 50, "the product's Go files, from the module root")
	hasPrefix := func(p string) bool {
		for l := range lits {
			if strings.HasPrefix(l, p) {
				return true
			}
		}
		return false
	}
	for _, f := range mn.RunFilters {
		for _, m := range regexp.MustCompile(`\$\.msg = "([^"]*)"`).FindAllStringSubmatch(f.Pattern, -1) {
			if prefix, ok := strings.CutSuffix(m[1], "*"); ok {
				assert.True(t, hasPrefix(prefix), "%s: no log message starts with %q", f.Name, prefix)
			} else {
				assert.True(t, lits[m[1]], "%s: the pattern's message %q is logged nowhere", f.Name, m[1])
			}
		}
		for _, m := range regexp.MustCompile(`\$\.([A-Za-z0-9_.]+)`).FindAllStringSubmatch(f.Pattern+" "+f.Value, -1) {
			for _, key := range strings.Split(m[1], ".") {
				if key == "msg" {
					continue // slog's own key
				}
				assert.True(t, lits[key], "%s: the attribute key %q (of $.%s) is logged nowhere", f.Name, key, m[1])
			}
		}
	}
}

// targetSnapshots are the snapshots of the demo's target table.
func targetSnapshots(t *testing.T, cfgPath string) []table.Snapshot {
	t.Helper()
	tbl, done := loadTable(t, cfgPath, "social.posts_sentiment")
	defer done()
	return tbl.Metadata().Snapshots()
}
