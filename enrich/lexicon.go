package enrich

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jonreiter/govader"
)

// ProviderLexicon is the offline VADER lexicon model.
const ProviderLexicon = "lexicon"

// LexiconLanguage is the one language the lexicon reads: VADER's lexicon
// and rules are English. It is model.languages of a lexicon job.
const LexiconLanguage = "en"

// DefaultNeutralBand is model.lexicon.neutral_band when the spec gives
// none.
const DefaultNeutralBand = 0.05

// lexiconProvider needs no key and no network: it is the default provider.
func lexiconProvider() Provider {
	return Provider{
		Name: ProviderLexicon,
		Defaults: func(m *ModelSettings) {
			m.Name = cmp.Or(m.Name, "vader")
			if len(m.Languages) == 0 {
				m.Languages, m.languagesByDefault = []string{LexiconLanguage}, true
			}
			if m.Lexicon.NeutralBand == nil {
				b := DefaultNeutralBand
				m.Lexicon.NeutralBand = &b
			}
		},
		Validate: (*Spec).validateLexicon,
		New:      func(spec *Spec, _ ModelOptions) (Model, error) { return asModel(NewLexicon(spec)) },
	}
}

// validateLexicon checks that the outputs are what the lexicon fills: a
// label field and optionally a score field.
func (s *Spec) validateLexicon(bad func(field, format string, args ...any)) {
	lx := s.Model.Lexicon
	label, ok := s.Output(lx.LabelField)
	switch {
	case lx.LabelField == "":
		bad("model.lexicon.label_field", "is required for provider lexicon")
	case !ok:
		bad("model.lexicon.label_field", "%q is not an output field", lx.LabelField)
	case label.Type != TypeString:
		bad("model.lexicon.label_field", "%q must be a string field, it is %s", lx.LabelField, label.Type)
	default:
		for _, want := range []string{"negative", "neutral", "positive"} {
			if len(label.Enum) > 0 && !slices.Contains(label.Enum, want) {
				bad("model.lexicon.label_field", "the enum of %q must contain %q: the lexicon model answers negative, neutral or positive", lx.LabelField, want)
			}
		}
	}
	if lx.ScoreField != "" {
		score, ok := s.Output(lx.ScoreField)
		switch {
		case !ok:
			bad("model.lexicon.score_field", "%q is not an output field", lx.ScoreField)
		case score.Type != TypeDouble:
			bad("model.lexicon.score_field", "%q must be a double field, it is %s", lx.ScoreField, score.Type)
		case (score.Min != nil && *score.Min > -1) || (score.Max != nil && *score.Max < 1):
			bad("model.lexicon.score_field", "%q must allow the range [-1, 1] of the lexicon's compound score", lx.ScoreField)
		}
	}
	for _, f := range s.Outputs {
		if f.Name != lx.LabelField && f.Name != lx.ScoreField {
			bad("outputs", "provider lexicon can only fill %q and %q, not %q", lx.LabelField, lx.ScoreField, f.Name)
		}
	}
	for i, code := range s.Model.Languages {
		if code != LexiconLanguage {
			bad(fmt.Sprintf("model.languages[%d]", i), "%q: provider lexicon reads %s only (VADER's lexicon is English)", code, LexiconLanguage)
		}
	}
	if b := lx.NeutralBand; b != nil && (*b < 0 || *b >= 1) {
		bad("model.lexicon.neutral_band", "must be in [0, 1), got %g", *b)
	}
}

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
