package enrich

import "strings"

// listPrices are OpenAI's published list prices of the models a job spec
// most often names, in US dollars per million tokens (standard tier:
// input, cached input, output), as of 2026-12. They price a run whose spec
// gives no model.prices, so that its cost is shown; a spec's own prices
// (a contract, Azure's regional prices, another model) replace them. The
// Batch API costs BatchDiscount of each.
var listPrices = []struct {
	prefix string
	prices Prices
}{
	// Longest prefixes first: gpt-4o-mini before gpt-4o.
	{"gpt-4o-mini", Prices{InputPerMillion: 0.15, CachedInputPerMillion: 0.075, OutputPerMillion: 0.60}},
	{"gpt-4o", Prices{InputPerMillion: 2.50, CachedInputPerMillion: 1.25, OutputPerMillion: 10.00}},
	{"gpt-4.1-nano", Prices{InputPerMillion: 0.10, CachedInputPerMillion: 0.025, OutputPerMillion: 0.40}},
	{"gpt-4.1-mini", Prices{InputPerMillion: 0.40, CachedInputPerMillion: 0.10, OutputPerMillion: 1.60}},
	{"gpt-4.1", Prices{InputPerMillion: 2.00, CachedInputPerMillion: 0.50, OutputPerMillion: 8.00}},
}

// ListPrices returns the list prices of a model name (gpt-4o-mini,
// gpt-4o-mini-2024-07-18, ...), with Source naming them; ok is false for
// a model the table does not know.
func ListPrices(model string) (p Prices, ok bool) {
	name := strings.ToLower(model)
	for _, lp := range listPrices {
		if strings.HasPrefix(name, lp.prefix) {
			p = lp.prices
			p.Source = "list prices of " + lp.prefix + " (2026-12)"
			return p, true
		}
	}
	return Prices{}, false
}
