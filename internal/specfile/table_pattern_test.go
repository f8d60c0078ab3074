package specfile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/specfile"
)

// TestEventTablePatternIsTheSpecs: the snapshot event's JSON Schema and
// the job spec validation accept the same table names, so that an event
// can name every table a job may read.
//
// The test reads the schema file that consumer embeds as EventSchema
// rather than importing consumer, which would put the runtime into this
// small package's test.
func TestEventTablePatternIsTheSpecs(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "..", "consumer", "snapshot-event.schema.json"))
	require.NoError(t, err)
	var schema struct {
		Properties struct {
			Table struct {
				Pattern string `json:"pattern"`
			} `json:"table"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(data, &schema))
	require.NotEmpty(t, schema.Properties.Table.Pattern, "the schema's table.pattern")
	assert.Equal(t, specfile.TablePattern.String(), schema.Properties.Table.Pattern)
}
