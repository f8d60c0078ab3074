package storage_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/storage"
)

func TestCatalogConfigValidation(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		cfg  storage.CatalogConfig
		want string
	}{
		"no type":            {storage.CatalogConfig{}, "catalog.type: is required (sql, glue or rest)"},
		"unknown type":       {storage.CatalogConfig{Type: "hive"}, `catalog.type: "hive" is not supported`},
		"sql without uri":    {storage.CatalogConfig{Type: "sql", Warehouse: "w"}, "catalog.uri: is required for a sql catalog"},
		"glue on a folder":   {storage.CatalogConfig{Type: "glue", Warehouse: "/data"}, "a glue catalog keeps tables on s3://"},
		"rest without a URL": {storage.CatalogConfig{Type: "rest", URI: "catalog.example.com"}, "a rest catalog needs its http(s) endpoint"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.ErrorContains(t, c.cfg.Validate(), c.want)
		})
	}
	for _, ok := range []storage.CatalogConfig{
		{Type: "glue"},
		{Type: "glue", Warehouse: "s3://bucket/warehouse"},
		{Type: "rest", URI: "https://s3tables.eu-west-1.amazonaws.com/iceberg", Warehouse: "arn:aws:s3tables:eu-west-1:123456789012:bucket/b"},
	} {
		require.NoError(t, ok.Validate())
		// Nothing of a remote catalog is a path relative to the config.
		assert.Equal(t, ok, ok.Resolve("/etc/enricher"))
	}
}

// TestRESTCatalogSpeaksTheProtocol opens a rest catalog against a server
// that speaks the Iceberg REST protocol: the config call, then a table
// that does not exist.
func TestRESTCatalogSpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/config":
			_ = json.NewEncoder(w).Encode(map[string]any{"defaults": map[string]string{}, "overrides": map[string]string{}})
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "Table does not exist: social.posts", "type": "NoSuchTableException", "code": 404}})
		}
	}))
	t.Cleanup(srv.Close)
	cat, err := storage.OpenCatalog(context.Background(), storage.CatalogConfig{Type: "rest", URI: srv.URL, Warehouse: "arn:aws:s3tables:eu-west-1:123456789012:bucket/b"})
	require.NoError(t, err)
	defer cat.Close()
	_, err = cat.LoadTable(context.Background(), "social.posts")
	require.ErrorIs(t, err, storage.ErrTableNotFound)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, paths)
	assert.Contains(t, paths[0], "GET /v1/config?warehouse=arn")
	assert.Contains(t, paths[len(paths)-1], "/namespaces/social/tables/posts")
}

// TestGlueCatalogSpeaksTheProtocol opens a glue catalog against a server
// that speaks the Glue JSON protocol and holds no tables.
func TestGlueCatalogSpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var targets []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		targets = append(targets, r.Header.Get("X-Amz-Target"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type": "EntityNotFoundException", "Message": "Entity Not Found"}`))
	}))
	t.Cleanup(srv.Close)
	cat, err := storage.OpenCatalog(context.Background(), storage.CatalogConfig{Type: "glue", Properties: map[string]string{
		"glue.endpoint": srv.URL, "glue.region": "eu-west-1", "glue.access-key-id": "AKIDTEST", "glue.secret-access-key": "secret",
	}})
	require.NoError(t, err)
	defer cat.Close()
	_, err = cat.LoadTable(context.Background(), "social.posts")
	require.ErrorIs(t, err, storage.ErrTableNotFound)
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, targets, "AWSGlue.GetTable")
}
