package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMissingCatalogOrWarehouseIsRefused: a typo in the catalog file or
// the warehouse folder, or an empty catalog file, must not give an empty
// new catalog (where every event would be dead-lettered as
// table_not_found): every command but demo and ingest refuses it, naming
// the path, and creates nothing.
func TestMissingCatalogOrWarehouseIsRefused(t *testing.T) {
	t.Parallel()
	work, _ := newDemo(t, "--generate", "10")
	good, err := os.ReadFile(filepath.Join(work, "enricher.yaml"))
	require.NoError(t, err)
	tests := []struct {
		name, from, to, want string
	}{
		{name: "catalog file", from: "uri: catalog.db", to: "uri: catalg.db", want: "catalog.uri: the sqlite file " + filepath.Join(work, "catalg.db")},
		{name: "warehouse folder", from: "warehouse: warehouse", to: "warehouse: warehous", want: "catalog.warehouse: the folder " + filepath.Join(work, "warehous")},
		{name: "empty catalog file", from: "uri: catalog.db", to: "uri: empty.db", want: "catalog.uri: the sqlite file " + filepath.Join(work, "empty.db") + " is empty, not a catalog"},
	}
	empty := filepath.Join(work, "empty.db") // made by a touch, or a copy that failed
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(work, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(string(good), tt.from, tt.to, 1)), 0o644))
			for _, args := range [][]string{
				{"status"},
				{"export", "--table", "social.posts_sentiment"},
				{"replay", "--job", "sentiment", "--only-status", "failed"},
				{"orphans"},
				{"maintain"},
				{"resync", "--job", "sentiment"},
				{"batches", "list"},
				{"validate"},
				{"publish", "--queue-url", "http://127.0.0.1:1/q", "--table", "social.posts"},
				{"run", "--queue-url", "http://127.0.0.1:1/q"},
			} {
				_, _, err := runBoth(t, append(args, "--config", cfg)...)
				require.Error(t, err, "%s must refuse the missing path", args[0])
				assert.Contains(t, err.Error(), tt.want, args[0])
				assert.Contains(t, err.Error(), "only `enricher demo` and `enricher ingest` create a catalog", args[0])
			}
			_, err := os.Stat(filepath.Join(work, "catalg.db"))
			assert.ErrorIs(t, err, os.ErrNotExist, "nothing was created")
			_, err = os.Stat(filepath.Join(work, "warehous"))
			assert.ErrorIs(t, err, os.ErrNotExist, "nothing was created")
			st, err := os.Stat(empty)
			require.NoError(t, err)
			assert.Zero(t, st.Size(), "nothing was written to the empty file")
		})
	}

	// ingest may start a new warehouse.
	posts := filepath.Join(t.TempDir(), "posts.txt")
	require.NoError(t, os.WriteFile(posts, []byte("hello\n"), 0o644))
	cfg := filepath.Join(work, "fresh.yaml")
	fresh := strings.NewReplacer("uri: catalog.db", "uri: fresh.db", "warehouse: warehouse", "warehouse: fresh-wh").Replace(string(good))
	require.NoError(t, os.WriteFile(cfg, []byte(fresh), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--posts", posts)
	mustRun(t, "status", "--config", cfg)
}

// TestTwoDemosOnOneFolder: a second demo on a folder another demo is
// using says so instead of failing on a half-reset catalog.
func TestTwoDemosOnOneFolder(t *testing.T) {
	t.Parallel()
	work := filepath.Join(t.TempDir(), "demo")
	unlock, err := lockDemoDir(work) // the first demo, still running
	require.NoError(t, err)
	_, _, err = runBoth(t, "demo", "--workdir", work, "--generate", "10", "--samples", "0")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is in use by another demo (process "+strconv.Itoa(os.Getpid())+")")
	unlock()
	mustRun(t, "demo", "--workdir", work, "--generate", "10", "--samples", "0")
	mustRun(t, "demo", "--workdir", work, "--generate", "10", "--samples", "0") // the lock file is no obstacle to a reset
}

// TestMaintenanceSettingsOfTheConfig: pipeline.maintenance and its knobs
// are checked like every other field.
func TestMaintenanceSettingsOfTheConfig(t *testing.T) {
	t.Parallel()
	work, _ := newDemo(t, "--generate", "10")
	good, err := os.ReadFile(filepath.Join(work, "enricher.yaml"))
	require.NoError(t, err)
	for _, tt := range []struct{ add, want string }{
		{"  maintenance: sometimes\n", `pipeline.maintenance: "sometimes": want auto or off`},
		{"  maintain_every: soon\n", `pipeline.maintain_every: "soon" is not a positive duration`},
		{"  maintain_min_files: -1\n", "pipeline.maintain_min_files: must be from 0 to 1000000, got -1"},
		{"  maintain_min_files: 3000000000000000000\n", "pipeline.maintain_min_files: must be from 0 to 1000000"}, // four times it overflowed: maintenance after every event
	} {
		cfg := filepath.Join(work, "bad.yaml")
		require.NoError(t, os.WriteFile(cfg, append(append([]byte(nil), good...), tt.add...), 0o644))
		_, _, err := runBoth(t, "validate", "--config", cfg)
		require.ErrorContains(t, err, tt.want)
	}
	cfg := filepath.Join(work, "off.yaml")
	require.NoError(t, os.WriteFile(cfg, append(append([]byte(nil), good...), "  maintenance: off\n  maintain_every: 2h\n"...), 0o644))
	mustRun(t, "validate", "--config", cfg)
}
