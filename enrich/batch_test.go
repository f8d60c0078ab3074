package enrich_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

func batchChat(t *testing.T, baseURL string) *enrich.Chat {
	t.Helper()
	spec, err := batchSpec(t, "  base_url: "+baseURL+"\n  batch_api: true")
	require.NoError(t, err)
	chat, err := enrich.NewChat(spec, enrich.ChatOptions{Logger: slog.New(slog.DiscardHandler), RetryBase: 1})
	require.NoError(t, err)
	t.Cleanup(chat.Close)
	return chat
}

// The lines of a batch are a pure function of the texts and the rows per
// request, and a custom_id names its line's texts: lines made again from
// the same texts match, from other texts they do not.
func TestPackBatchIsDeterministicAndNamesItsTexts(t *testing.T) {
	t.Parallel()
	chat := batchChat(t, "http://127.0.0.1:1/v1")
	texts := []string{"a", "b", "c", "d", "e"}
	lines := chat.PackBatch(texts, 2)
	require.Len(t, lines, 3)
	assert.Equal(t, []string{"e"}, lines[2].Texts)
	assert.Equal(t, lines, chat.PackBatch(slicesClone(texts), 2))
	other := chat.PackBatch([]string{"a", "b", "x", "d", "e"}, 2)
	assert.Equal(t, lines[0].CustomID, other[0].CustomID)
	assert.NotEqual(t, lines[1].CustomID, other[1].CustomID, "another text, another custom_id")
	assert.True(t, strings.HasPrefix(lines[1].CustomID, "r000001-"))
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// An uploaded file is used only once processed (Azure processes files
// after the upload); a file the provider could not process refuses the
// batch.
func TestUploadWaitsUntilTheFileIsProcessed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		final   string
		refused bool
	}{{"processed", false}, {"error", true}} {
		t.Run(tt.final, func(t *testing.T) {
			t.Parallel()
			var reads atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				switch {
				case r.Method == http.MethodPost && r.URL.Path == "/v1/files":
					_ = json.NewEncoder(w).Encode(map[string]any{"id": "file-1", "object": "file", "status": "pending", "purpose": "batch"})
				case r.Method == http.MethodGet && r.URL.Path == "/v1/files/file-1":
					status := "running"
					if reads.Add(1) > 1 {
						status = tt.final
					}
					_ = json.NewEncoder(w).Encode(map[string]any{"id": "file-1", "object": "file", "status": status, "status_details": "line 3 is not JSON"})
				default:
					http.NotFound(w, r)
				}
			}))
			t.Cleanup(srv.Close)
			chat := batchChat(t, srv.URL+"/v1")
			id, err := chat.UploadBatch(t.Context(), "f", chat.PackBatch([]string{"a", "b"}, 1))
			if tt.refused {
				require.ErrorIs(t, err, enrich.ErrBatchRefused)
				assert.Contains(t, err.Error(), "line 3 is not JSON")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "file-1", id)
			assert.Equal(t, int64(2), reads.Load())
			assert.Equal(t, int64(2), chat.Usage().BatchRowsSent)
		})
	}
}
