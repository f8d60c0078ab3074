package enrich

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The wire contract with chat models. The user message is a JSON array of
// {"id": "...", "text": "..."} objects, so post text is always data inside a
// JSON string, never part of the instructions. The answer must be the JSON
// object {"results": [{"id": "...", <one member per output field>}]},
// enforced by a strict JSON-schema response format generated from the
// job's output fields and checked again here.

// promptRow is one row of the user message.
type promptRow struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// userMessage renders rows as the user message.
func userMessage(rows []promptRow) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // <, > and & cost tokens when escaped
	if err := enc.Encode(rows); err != nil {
		return "", fmt.Errorf("encode rows: %w", err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// systemMessage is the job's prompt followed by the answer format, derived
// from the output fields.
func systemMessage(s *Spec) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(s.Prompt.System))
	b.WriteString("\n\nAnswer with one JSON object {\"results\": [...]} holding exactly one entry per input post, with the post's id copied unchanged and these fields:\n")
	for _, f := range s.Outputs {
		fmt.Fprintf(&b, "- %s: %s", f.Name, describeType(f))
		if f.Description != "" {
			fmt.Fprintf(&b, ". %s", strings.TrimSpace(f.Description))
		}
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func describeType(f Field) string {
	var d string
	switch f.Type {
	case TypeString:
		d = "a string"
		if len(f.Enum) > 0 {
			d = "one of " + strings.Join(f.Enum, ", ")
		}
	case TypeStringList:
		d = "a list of strings"
		if len(f.Enum) > 0 {
			d = "a list of values from " + strings.Join(f.Enum, ", ")
		}
	case TypeDouble:
		d = "a number"
	case TypeLong:
		d = "an integer"
	case TypeBoolean:
		d = "true or false"
	}
	switch {
	case f.Min != nil && f.Max != nil:
		d += fmt.Sprintf(" from %g to %g", *f.Min, *f.Max)
	case f.Min != nil:
		d += fmt.Sprintf(" of at least %g", *f.Min)
	case f.Max != nil:
		d += fmt.Sprintf(" of at most %g", *f.Max)
	}
	return d
}

// responseSchema is the strict JSON schema of an answer. Strict mode wants
// every property required and no others; ranges are not expressible there
// on every provider, so they are stated in the prompt and checked here.
func responseSchema(s *Spec) json.RawMessage {
	props := map[string]any{"id": map[string]any{"type": "string"}}
	required := []string{"id"}
	for _, f := range s.Outputs {
		var p map[string]any
		switch f.Type {
		case TypeString:
			p = map[string]any{"type": "string"}
			if len(f.Enum) > 0 {
				p["enum"] = f.Enum
			}
		case TypeStringList:
			item := map[string]any{"type": "string"}
			if len(f.Enum) > 0 {
				item["enum"] = f.Enum
			}
			p = map[string]any{"type": "array", "items": item}
		case TypeDouble:
			p = map[string]any{"type": "number"}
		case TypeLong:
			p = map[string]any{"type": "integer"}
		case TypeBoolean:
			p = map[string]any{"type": "boolean"}
		}
		if f.Description != "" {
			p["description"] = f.Description
		}
		props[f.Name] = p
		required = append(required, f.Name)
	}
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"results": map[string]any{
				"type": "array",
				"items": map[string]any{
					"type":                 "object",
					"properties":           props,
					"required":             required,
					"additionalProperties": false,
				},
			},
		},
		"required":             []string{"results"},
		"additionalProperties": false,
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		panic(fmt.Sprintf("response schema: %v", err)) // maps of strings always marshal
	}
	return raw
}

// EstimateTokens is the token estimate used for rate limiting and budgets:
// one token per four bytes, rounded up, as providers estimate before they
// tokenise. It is close for English; it errs low for CJK text and emoji
// (about one token per three or four bytes), so a budget or TPM quota can
// be overshot a little there.
func EstimateTokens(s string) int {
	return (len(s) + 3) / 4
}

// messageOverhead is what each chat message costs beyond its text;
// answerOverhead is the max_tokens of an answer beyond its rows.
const (
	messageOverhead = 4
	answerOverhead  = 16
)

// rowTokens estimates the answer tokens of one row: its id and braces plus,
// per field, its name and a value (the longest enum value, a number).
func rowTokens(s *Spec) int {
	n := 8
	for _, f := range s.Outputs {
		n += EstimateTokens(f.Name) + 3
		switch f.Type {
		case TypeString, TypeStringList:
			longest := 16
			if len(f.Enum) > 0 {
				longest = 0
				for _, v := range f.Enum {
					longest = max(longest, len(v))
				}
			}
			if f.Type == TypeStringList {
				longest *= 4
			}
			n += (longest+3)/4 + 2
		case TypeDouble, TypeLong:
			n += 6
		case TypeBoolean:
			n += 2
		}
	}
	return n
}

// parseAnswer checks a model's answer to the rows with the given ids. It
// returns one Answer per id, in order: ok with typed values, or
// invalid_output with the reason (missing, answered twice, wrong type,
// out of range). The error is for an answer that cannot be read at all.
// Ids the model made up are counted in unknown and otherwise ignored.
func parseAnswer(content string, ids []string, fields []Field) (answers []Answer, unknown int, err error) {
	var doc struct {
		Results []map[string]json.RawMessage `json:"results"`
	}
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, 0, fmt.Errorf("answer is not the JSON object {\"results\": [...]}: %w", err)
	}
	if doc.Results == nil {
		return nil, 0, fmt.Errorf("answer has no \"results\" array")
	}
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	answers = make([]Answer, len(ids))
	for i := range answers {
		answers[i] = Answer{Status: StatusInvalidOutput, Error: "the model did not answer this row"}
	}
	seen := make([]bool, len(ids))
	for _, r := range doc.Results {
		id, ok := readID(r["id"])
		if !ok {
			unknown++
			continue
		}
		i, ok := index[id]
		if !ok {
			unknown++
			continue
		}
		if seen[i] {
			answers[i] = Answer{Status: StatusInvalidOutput, Error: "the model answered this row twice"}
			continue
		}
		seen[i] = true
		answers[i] = readValues(r, fields)
	}
	return answers, unknown, nil
}

// readID accepts a JSON string id, or an integer that models sometimes
// write for a numeric-looking id.
func readID(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if i, err := n.Int64(); err == nil {
			return strconv.FormatInt(i, 10), true
		}
	}
	return "", false
}

func readValues(r map[string]json.RawMessage, fields []Field) Answer {
	values := make([]Value, len(fields))
	for k, f := range fields {
		raw, ok := r[f.Name]
		if !ok || string(raw) == "null" {
			return Answer{Status: StatusInvalidOutput, Error: fmt.Sprintf("%s: missing", f.Name)}
		}
		v, err := readValue(raw, f)
		if err != nil {
			return Answer{Status: StatusInvalidOutput, Error: fmt.Sprintf("%s: %v", f.Name, err)}
		}
		if err := f.Check(v); err != nil {
			return Answer{Status: StatusInvalidOutput, Error: err.Error()}
		}
		values[k] = v
	}
	return Answer{Status: StatusOK, Values: values}
}

func readValue(raw json.RawMessage, f Field) (Value, error) {
	v := Value{Set: true}
	switch f.Type {
	case TypeString:
		if err := json.Unmarshal(raw, &v.Str); err != nil {
			return v, fmt.Errorf("%s is not a string", clip(raw))
		}
	case TypeStringList:
		if err := json.Unmarshal(raw, &v.List); err != nil {
			return v, fmt.Errorf("%s is not a list of strings", clip(raw))
		}
		if v.List == nil {
			v.List = []string{}
		}
	case TypeBoolean:
		if err := json.Unmarshal(raw, &v.Bool); err != nil {
			return v, fmt.Errorf("%s is not true or false", clip(raw))
		}
	case TypeDouble:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || !isNumber(raw) {
			return v, fmt.Errorf("%s is not a number", clip(raw))
		}
		x, err := n.Float64()
		if err != nil || math.IsInf(x, 0) {
			return v, fmt.Errorf("%s is not a finite number", clip(raw))
		}
		v.Num = x
	case TypeLong:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || !isNumber(raw) {
			return v, fmt.Errorf("%s is not a number", clip(raw))
		}
		i, err := n.Int64()
		if err != nil {
			// 3.0 is an integer written as a float; 3.5 is not.
			x, ferr := n.Float64()
			if ferr != nil || x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return v, fmt.Errorf("%s is not an integer", clip(raw))
			}
			i = int64(x)
		}
		v.Int = i
	}
	return v, nil
}

// isNumber tells a JSON number from a string holding one, which
// json.Number would accept.
func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}

// clip keeps error messages short when a model writes a novel.
func clip(raw json.RawMessage) string {
	const n = 40
	if len(raw) <= n {
		return string(raw)
	}
	return string(raw[:n]) + "..."
}

// RequestMessages returns what one chat request for texts carries: the
// system and user messages (with the ids Chat gives the rows) and the
// max_tokens it asks for. It is the prompt Chat sends, for measuring token
// counts with a real tokenizer.
func RequestMessages(spec *Spec, texts []string) (system, user string, maxTokens int, err error) {
	rows := make([]promptRow, len(texts))
	taken := make(map[string]bool, len(texts))
	for i, t := range texts {
		rows[i] = promptRow{ID: rowID(t, taken), Text: t}
	}
	if user, err = userMessage(rows); err != nil {
		return "", "", 0, err
	}
	perRow := spec.Model.MaxTokensPerRow
	if perRow == 0 {
		perRow = rowTokens(spec)
	}
	return systemMessage(spec), user, len(texts)*perRow + answerOverhead, nil
}
