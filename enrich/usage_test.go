package enrich_test

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/socialdata/enricher/enrich"
)

func TestUsageCostPricesCachedAndBatchTokens(t *testing.T) {
	t.Parallel()
	p := enrich.Prices{InputPerMillion: 0.15, CachedInputPerMillion: 0.075, OutputPerMillion: 0.60}
	u := enrich.Usage{
		RowsSent: 3000, BatchRowsSent: 2000,
		PromptTokens: 1_000_000, CachedTokens: 400_000, CompletionTokens: 100_000,
		BatchPromptTokens: 2_000_000, BatchCachedTokens: 1_000_000, BatchCompletionTokens: 200_000,
		Prices: p,
	}
	sync := 0.6*0.15 + 0.4*0.075 + 0.1*0.60    // cached tokens are part of the prompt, not added to it
	batch := (1*0.15 + 1*0.075 + 0.2*0.60) / 2 // the Batch API halves every rate
	assert.InDelta(t, sync+batch, u.Cost(), 1e-12)
	assert.InDelta(t, (sync+batch)/3000*1e6, u.CostPerMillionRows(), 1e-9)
	assert.Equal(t, int64(3_300_000), u.Tokens())
	assert.InDelta(t, 1100.0, u.TokensPerRow(), 1e-9)

	// No cached price: cached tokens cost what other prompt tokens cost.
	u.Prices.CachedInputPerMillion = 0
	assert.InDelta(t, 0.15+0.1*0.60+(2*0.15+0.2*0.60)/2, u.Cost(), 1e-12)
	assert.Zero(t, enrich.Usage{Prices: p}.CostPerMillionRows(), "no rows, no division by zero")
}

// Sub subtracts every count, so a field added to Usage cannot be left out
// of the per-batch figures (the Lambda handler's EMF documents).
func TestUsageSubTakesEveryCount(t *testing.T) {
	t.Parallel()
	var now, before enrich.Usage
	nv, bv := reflect.ValueOf(&now).Elem(), reflect.ValueOf(&before).Elem()
	counts := 0
	for i := range nv.NumField() {
		if nv.Field(i).Kind() == reflect.Int64 {
			nv.Field(i).SetInt(int64(10 * (i + 1)))
			bv.Field(i).SetInt(int64(i + 1))
			counts++
		}
	}
	now.Prices = enrich.Prices{InputPerMillion: 1}
	d := now.Sub(before)
	dv := reflect.ValueOf(d)
	for i := range dv.NumField() {
		if dv.Field(i).Kind() == reflect.Int64 {
			assert.Equal(t, int64(9*(i+1)), dv.Field(i).Int(), dv.Type().Field(i).Name)
		}
	}
	assert.Equal(t, 14, counts)
	assert.Equal(t, now.Prices, d.Prices)
}
