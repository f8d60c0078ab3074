package enrich

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Status is the outcome of enriching one row; it is written to _status.
type Status string

// Row statuses. Every source row is written with exactly one of them: rows
// are never dropped.
const (
	StatusOK            Status = "ok"
	StatusSkipped       Status = "skipped"
	StatusFailed        Status = "failed"
	StatusInvalidOutput Status = "invalid_output"
)

// Statuses lists every status in a stable order, for reports.
var Statuses = []Status{StatusOK, StatusSkipped, StatusFailed, StatusInvalidOutput}

// Item is one text sent to a model. ID is unique within one Annotate call.
type Item struct {
	ID   int
	Text string
}

// Value is one typed output value; which member is meaningful depends on
// the field's type. A Value with Set false is null.
type Value struct {
	Set  bool
	Str  string
	Num  float64
	Int  int64
	Bool bool
	List []string
}

// Answer is the model's outcome for one item: Values holds one value per
// spec output field, in spec order, when Status is ok.
type Answer struct {
	Values []Value
	Status Status
	Error  string
}

// Model is a backend that enriches texts. Annotate fills out[i] for items[i]
// (len(out) == len(items)); a per-row problem goes into that row's Answer,
// and the error is only for what stops the whole run (a cancelled context,
// an exhausted budget) or, for a call within a Chunk, the chunk (a
// *ThrottledError, ErrChunkAbandoned). Implementations are safe for
// concurrent use.
type Model interface {
	// Name is written to every row as _model, e.g. "lexicon/vader".
	Name() string
	Annotate(ctx context.Context, items []Item, out []Answer) error
}

// Check reports whether v is a valid value of f: its enum and its range.
func (f Field) Check(v Value) error {
	if !v.Set {
		return fmt.Errorf("%s: missing", f.Name)
	}
	switch f.Type {
	case TypeString:
		if len(f.Enum) > 0 && !slices.Contains(f.Enum, v.Str) {
			return fmt.Errorf("%s: %q is not one of %s", f.Name, v.Str, strings.Join(f.Enum, ", "))
		}
	case TypeStringList:
		for _, s := range v.List {
			if len(f.Enum) > 0 && !slices.Contains(f.Enum, s) {
				return fmt.Errorf("%s: %q is not one of %s", f.Name, s, strings.Join(f.Enum, ", "))
			}
		}
	case TypeDouble:
		if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
			return fmt.Errorf("%s: %g is not a finite number", f.Name, v.Num)
		}
		return f.checkRange(v.Num)
	case TypeLong:
		return f.checkRange(float64(v.Int))
	}
	return nil
}

func (f Field) checkRange(x float64) error {
	if f.Min != nil && x < *f.Min {
		return fmt.Errorf("%s: %g is below the minimum %g", f.Name, x, *f.Min)
	}
	if f.Max != nil && x > *f.Max {
		return fmt.Errorf("%s: %g is above the maximum %g", f.Name, x, *f.Max)
	}
	return nil
}

// Truncate applies the over-long text rule: a text longer than max
// characters (Unicode code points) is cut to its first max characters.
// It reports whether it cut.
func Truncate(text string, max int) (string, bool) {
	if len(text) <= max { // bytes >= runes, so this is the fast common case
		return text, false
	}
	// Walk only as far as the cut: a long text's tail is never read.
	n := 0
	for i := range text {
		if n == max {
			return text[:i], true
		}
		n++
	}
	return text, false
}

// Blank reports whether a text is empty once white space is removed: such
// rows are written with status skipped and never sent to a model.
func Blank(text string) bool {
	return strings.TrimSpace(text) == ""
}
