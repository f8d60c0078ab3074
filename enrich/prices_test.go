package enrich_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

func TestListPricesPriceASpecWithoutPrices(t *testing.T) {
	t.Parallel()
	p, ok := enrich.ListPrices("gpt-4o-mini-2024-07-18")
	require.True(t, ok)
	assert.Equal(t, 0.15, p.InputPerMillion, "gpt-4o-mini, not gpt-4o")
	assert.Equal(t, 0.60, p.OutputPerMillion)
	_, ok = enrich.ListPrices("llama3")
	assert.False(t, ok)

	s, err := batchSpec(t, "")
	require.NoError(t, err)
	assert.Equal(t, 0.075, s.Model.Prices.CachedInputPerMillion)
	assert.Contains(t, s.Model.Prices.Source, "list prices of gpt-4o-mini")

	own, err := batchSpec(t, "  prices: {input_per_million: 1, output_per_million: 2}")
	require.NoError(t, err)
	assert.Equal(t, enrich.Prices{InputPerMillion: 1, OutputPerMillion: 2}, own.Model.Prices, "the spec's own prices, none filled in")

	other, err := enrich.ParseSpec("job.yaml", []byte(strings.Replace(strings.Replace(batchSpecBase, "gpt-4o-mini", "mistral-7b", 1), "%MODEL%", "", 1)))
	require.NoError(t, err)
	assert.Equal(t, enrich.Prices{}, other.Model.Prices, "an unknown model is not priced")
}
