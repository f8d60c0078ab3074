package emf_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/emf"
	"github.com/socialdata/enricher/internal/emf/emftest"
)

func TestMarshalWritesAValidDocument(t *testing.T) {
	t.Parallel()
	ts := time.UnixMilli(1_795_636_065_413)
	d := emf.Document{
		Namespace:  "Enricher/test",
		Dimensions: [][]string{{"Job"}, {}},
		Properties: map[string]string{"Job": "sentiment"},
		Metrics: []emf.Metric{
			{Name: "RowsOk", Unit: emf.Count, Values: []float64{40}},
			{Name: "CostUSD", Unit: emf.None, Values: []float64{0.0125}},
			{Name: "CommitLatency", Unit: emf.Milliseconds, Values: []float64{12.5, 30}},
		},
	}
	b, err := d.Marshal(ts)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "\n", "one log line")
	require.True(t, emftest.IsEMF(b))
	doc, err := emftest.Validate(b)
	require.NoError(t, err, "%s", b)
	assert.Equal(t, "sentiment", doc["Job"])
	assert.Equal(t, []float64{40}, doc.Values("RowsOk"))
	assert.InDelta(t, 0.0125, doc.Value("CostUSD"), 1e-12)
	assert.Equal(t, []float64{12.5, 30}, doc.Values("CommitLatency"))
	assert.InDelta(t, float64(ts.UnixMilli()), doc["_aws"].(map[string]any)["Timestamp"], 0)
	dirs := doc.Directives()
	require.Len(t, dirs, 1)
	assert.Equal(t, "Enricher/test", dirs[0].Namespace)
	assert.Equal(t, [][]string{{"Job"}, {}}, dirs[0].Dimensions)
	assert.Equal(t, []struct{ Name, Unit string }{{"RowsOk", "Count"}, {"CostUSD", "None"}, {"CommitLatency", "Milliseconds"}}, dirs[0].Metrics)
}

func TestMarshalRefusesWhatCloudWatchWouldNotRead(t *testing.T) {
	t.Parallel()
	good := func() emf.Document {
		return emf.Document{Namespace: "N", Dimensions: [][]string{{}}, Metrics: []emf.Metric{{Name: "A", Unit: emf.Count, Values: []float64{1}}}}
	}
	many := make([]emf.Metric, emf.MaxMetrics+1)
	for i := range many {
		many[i] = emf.Metric{Name: "M" + strings.Repeat("x", i), Unit: emf.Count, Values: []float64{1}}
	}
	tests := []struct {
		name string
		edit func(*emf.Document)
		want string
	}{
		{"no namespace", func(d *emf.Document) { d.Namespace = "" }, "no namespace"},
		{"no dimension set", func(d *emf.Document) { d.Dimensions = nil }, "no dimension set"},
		{"dimension without property", func(d *emf.Document) { d.Dimensions = [][]string{{"Job"}} }, `dimension "Job" has no property`},
		{"no metric", func(d *emf.Document) { d.Metrics = nil }, "0 metrics"},
		{"too many metrics", func(d *emf.Document) { d.Metrics = many }, "101 metrics"},
		{"metric without values", func(d *emf.Document) { d.Metrics[0].Values = nil }, `metric "A" has 0 values`},
		{"too many values", func(d *emf.Document) { d.Metrics[0].Values = make([]float64, emf.MaxValues+1) }, `metric "A" has 101 values`},
		{"not finite", func(d *emf.Document) { d.Metrics[0].Values = []float64{math.Inf(1)} }, "not a finite number"},
		{"no unit", func(d *emf.Document) { d.Metrics[0].Unit = "" }, "no unit"},
		{"name taken by a property", func(d *emf.Document) { d.Properties = map[string]string{"A": "x"} }, `metric "A": the name is taken`},
		{"reserved property", func(d *emf.Document) { d.Properties = map[string]string{"_aws": "x"} }, `property "_aws" is reserved`},
	}
	_, err := good().Marshal(time.Now())
	require.NoError(t, err)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := good()
			tt.edit(&d)
			_, err := d.Marshal(time.Now())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestValidatorRejectsBrokenDocuments: the tests' validator is only worth
// what it catches.
func TestValidatorRejectsBrokenDocuments(t *testing.T) {
	t.Parallel()
	const dir = `"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["Job"]],"Metrics":[{"Name":"A","Unit":"Count"}]}]}`
	_, err := emftest.Validate([]byte(`{` + dir + `,"Job":"j","A":1}`))
	require.NoError(t, err)
	for name, doc := range map[string]string{
		"no _aws":              `{"A":1}`,
		"metric missing":       `{` + dir + `,"Job":"j"}`,
		"metric a string":      `{` + dir + `,"Job":"j","A":"1"}`,
		"dimension not string": `{` + dir + `,"Job":1,"A":1}`,
		"dimension missing":    `{` + dir + `,"A":1}`,
		"unknown unit":         `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"A","Unit":"Rows"}]}]},"A":1}`,
		"timestamp a string":   `{"_aws":{"Timestamp":"1","CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"A","Unit":"Count"}]}]},"A":1}`,
		"empty value array":    `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"A","Unit":"Count"}]}]},"A":[]}`,
	} {
		_, err := emftest.Validate([]byte(doc))
		assert.Error(t, err, name)
	}
}
