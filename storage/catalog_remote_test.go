package storage_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
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

// notingServer is a test server that notes a line of each request
// before handle answers it.
type notingServer struct {
	*httptest.Server
	mu    sync.Mutex
	notes []string
}

func newNotingServer(t *testing.T, note func(*http.Request) string, handle http.HandlerFunc) *notingServer {
	s := &notingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.notes = append(s.notes, note(r))
		s.mu.Unlock()
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// noted is what the server noted so far.
func (s *notingServer) noted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.notes)
}

// requireNoPostsTable opens the catalog of cfg, closed when the test ends,
// and requires that it holds no table social.posts.
func requireNoPostsTable(t *testing.T, cfg storage.CatalogConfig) {
	t.Helper()
	cat, err := storage.OpenCatalog(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cat.Close() })
	_, err = cat.LoadTable(context.Background(), "social.posts")
	require.ErrorIs(t, err, storage.ErrTableNotFound)
}

// TestRESTCatalogSpeaksTheProtocol opens a rest catalog against a server
// that speaks the Iceberg REST protocol: the config call, then a table
// that does not exist.
func TestRESTCatalogSpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	srv := newNotingServer(t, func(r *http.Request) string {
		return r.Method + " " + r.URL.Path + "?" + r.URL.RawQuery
	}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/config":
			_ = json.NewEncoder(w).Encode(map[string]any{"defaults": map[string]string{}, "overrides": map[string]string{}})
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "Table does not exist: social.posts", "type": "NoSuchTableException", "code": 404}})
		}
	})
	requireNoPostsTable(t, storage.CatalogConfig{Type: "rest", URI: srv.URL, Warehouse: "arn:aws:s3tables:eu-west-1:123456789012:bucket/b"})
	paths := srv.noted()
	require.NotEmpty(t, paths)
	assert.Contains(t, paths[0], "GET /v1/config?warehouse=arn")
	assert.Contains(t, paths[len(paths)-1], "/namespaces/social/tables/posts")
}

// TestGlueCatalogSpeaksTheProtocol opens a glue catalog against a server
// that speaks the Glue JSON protocol and holds no tables.
func TestGlueCatalogSpeaksTheProtocol(t *testing.T) {
	t.Parallel()
	srv := newNotingServer(t, func(r *http.Request) string {
		return r.Header.Get("X-Amz-Target")
	}, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type": "EntityNotFoundException", "Message": "Entity Not Found"}`))
	})
	requireNoPostsTable(t, storage.CatalogConfig{Type: "glue", Properties: map[string]string{
		"glue.endpoint": srv.URL, "glue.region": "eu-west-1", "glue.access-key-id": "AKIDTEST", "glue.secret-access-key": "secret",
	}})
	assert.Contains(t, srv.noted(), "AWSGlue.GetTable")
}
