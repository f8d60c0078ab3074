package enrich

import (
	"context"
	"fmt"
	"math"

	"github.com/jonreiter/govader"
)

// Lexicon is the offline model: VADER's rule-based sentiment lexicon
// (github.com/jonreiter/govader). It needs no network and no key, and fills
// a label field (negative, neutral, positive) and optionally a score field
// (VADER's compound score in [-1, 1]).
type Lexicon struct {
	sia      *govader.SentimentIntensityAnalyzer
	name     string
	nOut     int
	labelIdx int
	scoreIdx int // -1 when the spec has no score field
	band     float64
}

var _ Model = (*Lexicon)(nil)

// NewLexicon builds the lexicon model for a validated spec whose provider is
// lexicon.
func NewLexicon(spec *Spec) (*Lexicon, error) {
	if spec.Model.Provider != ProviderLexicon {
		return nil, fmt.Errorf("lexicon model: spec %s asks for provider %s", spec.Name, spec.Model.Provider)
	}
	l := &Lexicon{
		sia:      govader.NewSentimentIntensityAnalyzer(),
		name:     spec.Model.ID(),
		nOut:     len(spec.Outputs),
		labelIdx: -1,
		scoreIdx: -1,
		band:     DefaultNeutralBand,
	}
	if b := spec.Model.Lexicon.NeutralBand; b != nil {
		l.band = *b
	}
	for i, f := range spec.Outputs {
		switch f.Name {
		case spec.Model.Lexicon.LabelField:
			l.labelIdx = i
		case spec.Model.Lexicon.ScoreField:
			l.scoreIdx = i
		}
	}
	if l.labelIdx < 0 {
		return nil, fmt.Errorf("lexicon model: label field %q is not an output of job %s", spec.Model.Lexicon.LabelField, spec.Name)
	}
	return l, nil
}

// Name implements Model.
func (l *Lexicon) Name() string { return l.name }

// Annotate implements Model. It is CPU-bound and checks ctx between rows so
// that a large batch stops promptly on shutdown.
func (l *Lexicon) Annotate(ctx context.Context, items []Item, out []Answer) error {
	for i, it := range items {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		score := l.sia.PolarityScores(it.Text).Compound
		vals := out[i].Values[:0]
		if cap(vals) < l.nOut {
			vals = make([]Value, l.nOut)
		}
		vals = vals[:l.nOut]
		vals[l.labelIdx] = Value{Set: true, Str: l.Label(score)}
		if l.scoreIdx >= 0 {
			vals[l.scoreIdx] = Value{Set: true, Num: math.Max(-1, math.Min(1, score))}
		}
		out[i] = Answer{Values: vals, Status: StatusOK}
	}
	return nil
}

// Label maps a compound score to a sentiment label using the neutral band.
func (l *Lexicon) Label(score float64) string {
	switch {
	case score >= l.band:
		return "positive"
	case score <= -l.band:
		return "negative"
	default:
		return "neutral"
	}
}
