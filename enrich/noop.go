package enrich

import (
	"cmp"
	"context"
	"fmt"
)

// ProviderNoop answers every row at once with a fixed valid value; it
// exists to measure the pipeline without a model.
const ProviderNoop = "noop"

func noopProvider() Provider {
	return Provider{
		Name: ProviderNoop,
		Defaults: func(m *ModelSettings) {
			m.Name = cmp.Or(m.Name, "fixed")
		},
		New: func(spec *Spec, _ ModelOptions) (Model, error) { return asModel(NewNoop(spec)) },
	}
}

// Noop is the benchmark model: it answers every row at once with one fixed
// valid value per output field (the first enum value, zero clamped into the
// field's range, false, an empty list), so that a run measures the pipeline
// around the model and nothing else.
type Noop struct {
	name   string
	values []Value
}

var _ Model = (*Noop)(nil)

// NewNoop builds the noop model for a validated spec.
func NewNoop(spec *Spec) (*Noop, error) {
	if spec.Model.Provider != ProviderNoop {
		return nil, fmt.Errorf("noop model: spec %s asks for provider %s", spec.Name, spec.Model.Provider)
	}
	n := &Noop{name: spec.Model.ID()}
	for _, f := range spec.Outputs {
		v := Value{Set: true}
		switch f.Type {
		case TypeString:
			if len(f.Enum) > 0 {
				v.Str = f.Enum[0]
			}
		case TypeDouble, TypeLong:
			x := 0.0
			if f.Min != nil && x < *f.Min {
				x = *f.Min
			}
			if f.Max != nil && x > *f.Max {
				x = *f.Max
			}
			v.Num, v.Int = x, int64(x)
		case TypeStringList:
			v.List = []string{}
		}
		if err := f.Check(v); err != nil {
			return nil, fmt.Errorf("noop model: no fixed value fits: %w", err)
		}
		n.values = append(n.values, v)
	}
	return n, nil
}

// Name implements Model.
func (n *Noop) Name() string { return n.name }

// Annotate implements Model.
func (n *Noop) Annotate(ctx context.Context, items []Item, out []Answer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range items {
		out[i] = Answer{Status: StatusOK, Values: n.values}
	}
	return nil
}
