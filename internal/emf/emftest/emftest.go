// Package emftest checks CloudWatch Embedded Metric Format documents in
// tests: the JSON Schema of the format (emf.schema.json) and what the
// schema cannot say, that every member the directives name is there with
// the right type. Test code only.
package emftest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed emf.schema.json
var schemaJSON []byte

var schema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("emf.schema.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("emf.schema.json", doc); err != nil {
		return nil, fmt.Errorf("emf.schema.json: %w", err)
	}
	s, err := c.Compile("emf.schema.json")
	if err != nil {
		return nil, fmt.Errorf("emf.schema.json: %w", err)
	}
	return s, nil
})

// Doc is a decoded EMF document: its members, numbers as float64.
type Doc map[string]any

// Directive is one entry of _aws.CloudWatchMetrics.
type Directive struct {
	Namespace  string
	Dimensions [][]string
	Metrics    []struct{ Name, Unit string }
}

// Directives are the document's directives.
func (d Doc) Directives() []Directive {
	raw, _ := json.Marshal(d["_aws"].(map[string]any)["CloudWatchMetrics"])
	var out []Directive
	_ = json.Unmarshal(raw, &out)
	return out
}

// Values returns a metric's values: one, or the members of an array.
func (d Doc) Values(name string) []float64 {
	switch v := d[name].(type) {
	case float64:
		return []float64{v}
	case []any:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i], _ = x.(float64)
		}
		return out
	}
	return nil
}

// Value returns a metric's single value (NaN-free: 0 when absent).
func (d Doc) Value(name string) float64 {
	if v := d.Values(name); len(v) == 1 {
		return v[0]
	}
	return 0
}

// IsEMF reports whether line is a JSON object with an _aws member: a
// document CloudWatch tries to read as EMF (and rejects if invalid).
func IsEMF(line []byte) bool {
	var probe struct {
		AWS json.RawMessage `json:"_aws"`
	}
	return json.Unmarshal(line, &probe) == nil && probe.AWS != nil
}

// Validate checks one EMF document and decodes it.
func Validate(line []byte) (Doc, error) {
	s, err := schema()
	if err != nil {
		return nil, err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(inst); err != nil {
		return nil, fmt.Errorf("EMF schema: %w", err)
	}
	var doc Doc
	if err := json.Unmarshal(line, &doc); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var errs []error
	for _, dir := range doc.Directives() {
		for _, set := range dir.Dimensions {
			for _, dim := range set {
				if _, ok := doc[dim].(string); !ok {
					errs = append(errs, fmt.Errorf("dimension %q: the member is %T, not a string", dim, doc[dim]))
				}
			}
		}
		names := map[string]bool{}
		for _, m := range dir.Metrics {
			if names[m.Name] {
				errs = append(errs, fmt.Errorf("metric %q named twice", m.Name))
			}
			names[m.Name] = true
			switch v := doc[m.Name].(type) {
			case float64:
			case []any:
				if len(v) == 0 || len(v) > 100 {
					errs = append(errs, fmt.Errorf("metric %q: %d values, 1 to 100 allowed", m.Name, len(v)))
				}
				for _, x := range v {
					if _, ok := x.(float64); !ok {
						errs = append(errs, fmt.Errorf("metric %q: value %v is not a number", m.Name, x))
					}
				}
			default:
				errs = append(errs, fmt.Errorf("metric %q: the member is %T, not a number or an array of numbers", m.Name, v))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return doc, nil
}
