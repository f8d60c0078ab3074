// Package emf encodes CloudWatch Embedded Metric Format documents: one JSON
// object per log line that CloudWatch Logs turns into metrics, with no API
// call (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
// A Lambda function writes them to stdout.
package emf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Unit is a CloudWatch metric unit.
type Unit string

// The units the enricher uses.
const (
	Count        Unit = "Count"
	Milliseconds Unit = "Milliseconds"
	None         Unit = "None"
)

// Limits of the format.
const (
	// MaxMetrics is how many metrics one document may hold.
	MaxMetrics = 100
	// MaxValues is how many values one metric of a document may hold.
	MaxValues = 100
	// MaxDimensions is how many dimensions one dimension set may name.
	MaxDimensions = 30
)

// Metric is one metric of a document: one value, or several (for example
// one latency per commit), each counted as a sample of the metric.
type Metric struct {
	Name   string
	Unit   Unit
	Values []float64
}

// Document is one EMF document: every metric is published in Namespace
// once per dimension set of Dimensions (an empty set: no dimension), with
// the dimensions' values taken from Properties.
type Document struct {
	Namespace  string
	Dimensions [][]string
	Properties map[string]string
	Metrics    []Metric
}

// Marshal encodes d as one JSON object (no newline) stamped with ts. It
// refuses a document CloudWatch would not read as metrics: no namespace,
// no dimension set, a dimension without its string property, a member
// named twice, a metric without values, more than MaxMetrics metrics or
// MaxValues values, and values that are not finite.
func (d Document) Marshal(ts time.Time) ([]byte, error) {
	if err := d.check(); err != nil {
		return nil, fmt.Errorf("emf document: %w", err)
	}
	type metricDef struct {
		Name string `json:"Name"`
		Unit Unit   `json:"Unit"`
	}
	type directive struct {
		Namespace  string      `json:"Namespace"`
		Dimensions [][]string  `json:"Dimensions"`
		Metrics    []metricDef `json:"Metrics"`
	}
	type meta struct {
		Timestamp         int64       `json:"Timestamp"`
		CloudWatchMetrics []directive `json:"CloudWatchMetrics"`
	}
	dir := directive{Namespace: d.Namespace, Dimensions: d.Dimensions, Metrics: make([]metricDef, 0, len(d.Metrics))}
	doc := make(map[string]any, 1+len(d.Properties)+len(d.Metrics))
	for k, v := range d.Properties {
		doc[k] = v
	}
	for _, m := range d.Metrics {
		dir.Metrics = append(dir.Metrics, metricDef{Name: m.Name, Unit: m.Unit})
		if len(m.Values) == 1 {
			doc[m.Name] = m.Values[0]
		} else {
			doc[m.Name] = m.Values
		}
	}
	doc["_aws"] = meta{Timestamp: ts.UnixMilli(), CloudWatchMetrics: []directive{dir}}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("emf document: %w", err)
	}
	return b, nil
}

func (d Document) check() error {
	var errs []error
	if d.Namespace == "" {
		errs = append(errs, errors.New("no namespace"))
	}
	if len(d.Dimensions) == 0 {
		errs = append(errs, errors.New("no dimension set (use [[]] for none)"))
	}
	for _, set := range d.Dimensions {
		if len(set) > MaxDimensions {
			errs = append(errs, fmt.Errorf("dimension set %v names more than %d dimensions", set, MaxDimensions))
		}
		for _, dim := range set {
			if _, ok := d.Properties[dim]; !ok {
				errs = append(errs, fmt.Errorf("dimension %q has no property", dim))
			}
		}
	}
	if len(d.Metrics) == 0 || len(d.Metrics) > MaxMetrics {
		errs = append(errs, fmt.Errorf("%d metrics: a document holds 1 to %d", len(d.Metrics), MaxMetrics))
	}
	seen := map[string]bool{"_aws": true}
	for k := range d.Properties {
		if seen[k] {
			errs = append(errs, fmt.Errorf("property %q is reserved", k))
		}
		seen[k] = true
	}
	for _, m := range d.Metrics {
		if m.Name == "" {
			errs = append(errs, errors.New("a metric has no name"))
		}
		if seen[m.Name] {
			errs = append(errs, fmt.Errorf("metric %q: the name is taken", m.Name))
		}
		seen[m.Name] = true
		if m.Unit == "" {
			errs = append(errs, fmt.Errorf("metric %q has no unit", m.Name))
		}
		if len(m.Values) == 0 || len(m.Values) > MaxValues {
			errs = append(errs, fmt.Errorf("metric %q has %d values: 1 to %d", m.Name, len(m.Values), MaxValues))
		}
		for _, v := range m.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				errs = append(errs, fmt.Errorf("metric %q: %v is not a finite number", m.Name, v))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Write writes each document on a line of its own, stamped with ts, one
// Write call per document (a line no longer than the pipe's atomic write
// size cannot be cut by another writer's line). A document that does not
// encode is left out and its error returned; the others are written.
func Write(w io.Writer, ts time.Time, docs ...Document) error {
	var errs []error
	for _, d := range docs {
		b, err := d.Marshal(ts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			errs = append(errs, fmt.Errorf("emf: write: %w", err))
			break
		}
	}
	return errors.Join(errs...)
}
