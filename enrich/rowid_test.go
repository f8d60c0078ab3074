package enrich

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRowIDsAreSingleTokens recomputes rowIDs: the two-letter strings that
// tiktoken encodes as one token in both o200k_base and cl100k_base.
func TestRowIDsAreSingleTokens(t *testing.T) {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	var want []string
	counts := map[string]int{}
	for _, name := range []string{"o200k_base", "cl100k_base"} {
		enc, err := tiktoken.GetEncoding(name)
		require.NoError(t, err)
		for a := 'a'; a <= 'z'; a++ {
			for b := 'a'; b <= 'z'; b++ {
				id := string([]rune{a, b})
				if len(enc.Encode(id, nil, nil)) == 1 {
					counts[id]++
				}
			}
		}
	}
	for a := 'a'; a <= 'z'; a++ {
		for b := 'a'; b <= 'z'; b++ {
			if id := string([]rune{a, b}); counts[id] == 2 {
				want = append(want, id)
			}
		}
	}
	require.Equal(t, want, rowIDs, "regenerate singleTokenIDs from this test's list")
	assert.GreaterOrEqual(t, len(rowIDs), 500, "a request of 500 rows (the most rows_per_request allows) needs 500 distinct ids")
	assert.Equal(t, strings.Join(rowIDs, " "), singleTokenIDs)
}

func TestRowIDsAreUniqueShortAndStable(t *testing.T) {
	taken := map[string]bool{}
	seen := map[string]bool{}
	for i := range 500 {
		id := rowID(fmt.Sprintf("post %d", i), taken)
		assert.Len(t, id, 2)
		assert.False(t, seen[id], "id %s given twice", id)
		seen[id] = true
	}
	// The same text gets the same id in any request where it is free.
	a, b := rowID("hello world", map[string]bool{}), rowID("hello world", map[string]bool{})
	assert.Equal(t, a, b)
	// Past the list, ids get longer but stay unique.
	for range len(rowIDs) - 500 {
		rowID("more", taken)
	}
	long := rowID("one too many", taken)
	assert.Regexp(t, `^[a-z][0-9a-z]{3}$`, long)
}
