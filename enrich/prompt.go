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
// JSON string, never part of the instructions. The answer is columnar: the
// JSON object {"id": ["ab", "cd", ...], <one array per output field>}, where
// the i-th entry of every array belongs to the i-th id. Each id is written
// once and each field name once per answer, not once per row, and ids are
// one token each (rowid.go): about half the answer tokens of an array of
// row objects. A strict JSON-schema response format generated from the
// job's output fields enforces the shape; parseAnswer checks it again.

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
// from the output fields. Nothing in it depends on the rows of a request,
// so it is the same prefix in every request of a job (what a provider's
// prompt cache can reuse).
func systemMessage(s *Spec) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(s.Prompt.System))
	b.WriteString("\n\nAnswer with one JSON object of arrays, each with exactly one entry per input post:\n")
	b.WriteString("- id: the posts' ids, copied unchanged\n")
	numbers := false
	for _, f := range s.Outputs {
		fmt.Fprintf(&b, "- %s: %s", f.Name, describeType(f))
		if f.Description != "" {
			fmt.Fprintf(&b, ". %s", strings.TrimSpace(f.Description))
		}
		b.WriteByte('\n')
		numbers = numbers || (f.Type == TypeDouble && !hundredths(f))
	}
	b.WriteString("The i-th entry of every array is about the post with the i-th id.")
	if numbers {
		b.WriteString(" Write numbers with at most two decimals.")
	}
	return b.String()
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
		if hundredths(f) {
			return fmt.Sprintf("an integer from %g to %g: hundredths of a number from %g to %g (write -0.42 as -42)",
				100**f.Min, 100**f.Max, *f.Min, *f.Max)
		}
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

// responseSchema is the strict JSON schema of an answer: an array of ids
// and one array per output field whose items are the field's schema. Strict
// mode wants every property required and no others; ranges are not
// expressible there on every provider, so they are stated in the prompt and
// checked here, like the arrays' equal lengths. Properties keep the spec's
// order (id first): a strict answer writes its members in schema order.
func responseSchema(s *Spec) json.RawMessage {
	props := object{{"id", object{{"type", "array"}, {"items", object{{"type", "string"}}}}}}
	required := []string{"id"}
	for _, f := range s.Outputs {
		var item object
		switch f.Type {
		case TypeString:
			item = object{{"type", "string"}}
			if len(f.Enum) > 0 {
				item = append(item, member{"enum", f.Enum})
			}
		case TypeStringList:
			inner := object{{"type", "string"}}
			if len(f.Enum) > 0 {
				inner = append(inner, member{"enum", f.Enum})
			}
			item = object{{"type", "array"}, {"items", inner}}
		case TypeDouble:
			item = object{{"type", "number"}}
			if hundredths(f) {
				item = object{{"type", "integer"}}
			}
		case TypeLong:
			item = object{{"type", "integer"}}
		case TypeBoolean:
			item = object{{"type", "boolean"}}
		}
		p := object{{"type", "array"}, {"items", item}}
		if d := strings.TrimSpace(f.Description); d != "" || hundredths(f) {
			if hundredths(f) {
				d = strings.TrimSpace(d + " In hundredths: an integer from " +
					strconv.FormatFloat(100**f.Min, 'g', -1, 64) + " to " + strconv.FormatFloat(100**f.Max, 'g', -1, 64) + ".")
			}
			p = append(p, member{"description", d})
		}
		props = append(props, member{f.Name, p})
		required = append(required, f.Name)
	}
	schema := object{
		{"type", "object"},
		{"properties", props},
		{"required", required},
		{"additionalProperties", false},
	}
	raw, err := json.Marshal(schema)
	if err != nil {
		panic(fmt.Sprintf("response schema: %v", err)) // strings and booleans always marshal
	}
	return raw
}

// object is a JSON object that keeps the order of its members (json.Marshal
// sorts a map's keys).
type object []member

type member struct {
	key   string
	value any
}

// MarshalJSON implements json.Marshaler.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", m.key, err)
		}
		v, err := json.Marshal(m.value)
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", m.key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
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
// answerOverhead is the max_tokens of an answer beyond its rows and field
// names (braces, brackets, the id member).
const (
	messageOverhead = 4
	answerOverhead  = 16
)

// rowTokens estimates, as an upper bound, the answer tokens of one row in
// the columnar answer: its id (one token) and a separator, and per field
// a value and a separator: the longest enum value (one token per four
// bytes, which English words stay below), a number (a sign, up to three
// digits, a point and up to three decimals), a boolean. Measured with
// tiktoken, the sentiment job writes 8 tokens a row where this says 11.
func rowTokens(s *Spec) int {
	n := 3
	for _, f := range s.Outputs {
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
				n += 4*((longest+3)/4+1) + 2
			} else {
				n += (longest+3)/4 + 1
			}
		case TypeDouble:
			if hundredths(f) {
				n += 3
			} else {
				n += 5
			}
		case TypeLong:
			n += 4
		case TypeBoolean:
			n += 2
		}
	}
	return n
}

// answerTokens is the max_tokens of a request for n rows at perRow tokens a
// row: the rows plus what an answer writes once (its braces, and each
// field's name with its quotes, colon and brackets).
func answerTokens(s *Spec, perRow, n int) int {
	fixed := answerOverhead
	for _, f := range s.Outputs {
		fixed += EstimateTokens(f.Name) + 3
	}
	return n*perRow + fixed
}

// parseAnswer checks a model's answer to the rows with the given ids. It
// returns one Answer per id, in order: ok with typed values, or
// invalid_output with the reason (missing, answered twice, wrong type,
// out of range). The error is for an answer that cannot be read at all:
// not a JSON object, an array missing, arrays of different lengths (which
// entry belongs to which id is then unknown). Ids the model made up are
// counted in unknown and otherwise ignored.
func parseAnswer(content string, ids []string, fields []Field) (answers []Answer, unknown int, err error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(content), &doc); err != nil {
		return nil, 0, fmt.Errorf("answer is not the JSON object {\"id\": [...], ...}: %w", err)
	}
	if doc == nil {
		return nil, 0, fmt.Errorf("answer is null, not the JSON object {\"id\": [...], ...}")
	}
	column := func(name string) ([]json.RawMessage, error) {
		raw, ok := doc[name]
		if !ok {
			return nil, fmt.Errorf("answer has no %q array", name)
		}
		var col []json.RawMessage
		if err := json.Unmarshal(raw, &col); err != nil || col == nil {
			return nil, fmt.Errorf("answer's %q is %s, not an array", name, clip(raw))
		}
		return col, nil
	}
	idCol, err := column("id")
	if err != nil {
		return nil, 0, err
	}
	cols := make([][]json.RawMessage, len(fields))
	for k, f := range fields {
		if cols[k], err = column(f.Name); err != nil {
			return nil, 0, err
		}
		if len(cols[k]) != len(idCol) {
			return nil, 0, fmt.Errorf("answer's %q has %d entries for %d ids", f.Name, len(cols[k]), len(idCol))
		}
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
	row := make([]json.RawMessage, len(fields))
	for r, raw := range idCol {
		id, ok := readID(raw)
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
		for k := range fields {
			row[k] = cols[k][r]
		}
		answers[i] = readValues(row, fields)
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

// readValues reads one row's values, row[k] being the raw value of
// fields[k].
func readValues(row []json.RawMessage, fields []Field) Answer {
	values := make([]Value, len(fields))
	for k, f := range fields {
		raw := row[k]
		if len(raw) == 0 || string(raw) == "null" {
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
		if hundredths(f) {
			i, err := readInteger(raw)
			if err != nil {
				return v, fmt.Errorf("%w (hundredths)", err)
			}
			v.Num = float64(i) / 100
			break
		}
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
		i, err := readInteger(raw)
		if err != nil {
			return v, err
		}
		v.Int = i
	}
	return v, nil
}

// readInteger reads a JSON integer; 3.0 is an integer written as a float,
// 3.5 is not.
func readInteger(raw json.RawMessage) (int64, error) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil || !isNumber(raw) {
		return 0, fmt.Errorf("%s is not a number", clip(raw))
	}
	i, err := n.Int64()
	if err != nil {
		x, ferr := n.Float64()
		if ferr != nil || x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, fmt.Errorf("%s is not an integer", clip(raw))
		}
		i = int64(x)
	}
	return i, nil
}

// hundredths reports whether a double field travels as an integer number
// of hundredths: one whose range lies within [-1, 1], such as a polarity or
// a probability. "-42" is two tokens where "-0.42" is four, and the
// sentiment job's answer is half numbers; two decimals are what the
// prompt asks of other numbers too.
func hundredths(f Field) bool {
	return f.Type == TypeDouble && f.Min != nil && f.Max != nil && *f.Min >= -1 && *f.Max <= 1
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
	return systemMessage(spec), user, answerTokens(spec, perRow, len(texts)), nil
}
