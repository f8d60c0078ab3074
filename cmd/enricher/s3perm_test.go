package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/iamactions"
)

// TestGrantedActionsCoverEveryCall runs the commands that work on a
// warehouse in AWS (run, which is what the Lambda handler runs per batch,
// with its automatic maintenance; maintain; orphans --delete; resync;
// replay; status) on a Glue catalog whose tables live on S3, as deployed:
// one recording server answers the Glue JSON API itself (a small stateful
// fake) and hands every S3 request on to the emulator's S3 API. Each
// request is mapped to the IAM action that authorises it, and the actions
// must be among those the CDK stack grants (internal/iamactions, which
// infra grants from); every granted action must be needed by some command
// (or be listed in iamactions.Unexercised with the reason). Every object
// request must stay under the warehouse/ prefix that the grant names.
func TestGrantedActionsCoverEveryCall(t *testing.T) {
	t.Parallel()
	endpoint, bucket := s3Bucket(t)
	_, queueURL, _ := runQueue(t)
	rec := newAWSRecorder(t, endpoint, bucket)

	dir := t.TempDir()
	copySentimentJob(t, dir)
	cfg := filepath.Join(dir, "enricher.yaml")
	// As infra writes it (no warehouse: tables go under the Glue
	// database's location), plus the test endpoints; maintenance after
	// every commit so that run's own expiry, compaction and orphan
	// cleanup are recorded too.
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`catalog:
  name: enricher
  type: glue
  properties:
    glue.endpoint: %[1]s
    glue.region: us-east-1
    glue.access-key-id: test
    glue.secret-access-key: test
    s3.endpoint: %[1]s
    s3.region: us-east-1
    s3.access-key-id: test
    s3.secret-access-key: test
jobs: [sentiment.yaml]
pipeline:
  chunk_rows: 25
  maintain_every: 1s
  maintain_min_files: 2
`, rec.URL())), 0o644))

	var lines []string
	for i := range 400 {
		lines = append(lines, "post number "+strconv.Itoa(i)+" is great")
	}
	posts := filepath.Join(dir, "posts.txt")
	rec.phase("ingest") // the ingestion team's, not the consumer's
	require.NoError(t, os.WriteFile(posts, []byte(strings.Join(lines[:250], "\n")), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--table", "social.posts", "--posts", posts)
	require.NoError(t, os.WriteFile(posts, []byte(strings.Join(lines[250:], "\n")), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--table", "social.posts", "--posts", posts, "--first-id", "251")
	mustRun(t, "publish", "--config", cfg, "--queue-url", queueURL, "--table", "social.posts")

	rec.phase("run")
	var out, errOut strings.Builder
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"run", "--config", cfg, "--queue-url", queueURL, "--drain", "--wait", "1s"})
	require.NoError(t, cmd.ExecuteContext(t.Context()), errOut.String())
	// Enough commits for run's own expiry to delete files.
	require.Equal(t, 16, strings.Count(errOut.String(), "chunk committed"), "400 rows in chunks of 25")
	require.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 400)

	rec.phase("maintain")
	mustRun(t, "maintain", "--config", cfg)

	// A file no snapshot references, for orphans --delete to delete.
	orphan := rec.tableLocation(t, "posts_sentiment") + "/data/orphan.parquet"
	rec.putDirect(t, orphan)
	rec.phase("orphans --delete")
	assert.Contains(t, mustRun(t, "orphans", "--config", cfg, "--older-than", "0s", "--delete", "--no-writers"), "orphan.parquet")

	rec.phase("resync")
	mustRun(t, "resync", "--config", cfg, "--job", "sentiment")
	rec.phase("replay")
	mustRun(t, "replay", "--config", cfg, "--job", "sentiment")
	rec.phase("status")
	mustRun(t, "status", "--config", cfg)

	granted := append(append(iamactions.WarehouseObjects(), iamactions.WarehouseBucket()...), iamactions.GlueCatalog()...)
	used := map[string]bool{}
	for _, phase := range []string{"run", "maintain", "orphans --delete", "resync", "replay", "status"} {
		calls := rec.calls(phase)
		t.Logf("%s: %s", phase, strings.Join(slices.Sorted(maps.Keys(calls)), " "))
		require.NotEmpty(t, calls, "%s made no S3 or Glue call: is the recorder in the way?", phase)
		for action, example := range calls {
			used[action] = true
			assert.Contains(t, granted, action, "%s calls %s (for example %s), which the stack does not grant (internal/iamactions)", phase, action, example)
		}
	}
	for _, a := range granted {
		if _, why := iamactions.Unexercised()[a]; !why {
			assert.True(t, used[a], "the stack grants %s but no command needed it: drop it, or say in iamactions.Unexercised why it stays", a)
		}
	}
	for _, a := range []string{"s3:DeleteObject", "s3:ListBucket", "glue:UpdateTable", "glue:CreateTable"} {
		assert.Contains(t, rec.calls("run"), a, "run (and so the Lambda handler) needs %s", a)
	}
	assert.Empty(t, rec.outside(), "requests outside the warehouse/ prefix the grant names")
}

// awsRecorder is one HTTP server in front of the emulator's S3 API that
// also answers the Glue API, recording each request's IAM action by phase.
type awsRecorder struct {
	srv    *httptest.Server
	s3     string // the emulator's endpoint
	bucket string
	glue   *fakeGlue

	mu      sync.Mutex
	current string
	byPhase map[string]map[string]string // phase -> action -> an example request
	bad     []string                     // requests outside warehouse/
}

func newAWSRecorder(t *testing.T, endpoint, bucket string) *awsRecorder {
	t.Helper()
	target, err := url.Parse(endpoint)
	require.NoError(t, err)
	r := &awsRecorder{s3: endpoint, bucket: bucket, byPhase: map[string]map[string]string{},
		glue: &fakeGlue{location: "s3://" + bucket + "/warehouse/social", tables: map[string]map[string]any{}}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if op, ok := strings.CutPrefix(req.Header.Get("X-Amz-Target"), "AWSGlue."); ok {
			r.record("glue:"+op, op, "")
			r.glue.serve(w, req, op)
			return
		}
		action, key := s3Action(req, r.bucket)
		r.record(action, req.Method+" "+req.URL.RequestURI(), key)
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *awsRecorder) URL() string { return r.srv.URL }

func (r *awsRecorder) phase(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = p
}

func (r *awsRecorder) record(action, example, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.byPhase[r.current]
	if m == nil {
		m = map[string]string{}
		r.byPhase[r.current] = m
	}
	if _, ok := m[action]; !ok {
		m[action] = example
	}
	if key != "" && key != "warehouse" && !strings.HasPrefix(key, "warehouse/") {
		r.bad = append(r.bad, r.current+": "+example)
	}
}

func (r *awsRecorder) calls(phase string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byPhase[phase])
}

func (r *awsRecorder) outside() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bad)
}

// tableLocation is the S3 key prefix of a table of the Glue database.
func (r *awsRecorder) tableLocation(t *testing.T, name string) string {
	t.Helper()
	r.glue.mu.Lock()
	defer r.glue.mu.Unlock()
	tbl, ok := r.glue.tables[name]
	require.True(t, ok, "table %s in the fake Glue catalog", name)
	loc, _ := tbl["StorageDescriptor"].(map[string]any)["Location"].(string)
	require.NotEmpty(t, loc, "location of %s", name)
	return strings.TrimPrefix(loc, "s3://"+r.bucket+"/")
}

// putDirect writes an object straight to the emulator, unrecorded.
func (r *awsRecorder) putDirect(t *testing.T, key string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, r.s3+"/"+r.bucket+"/"+key, strings.NewReader("not parquet"))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Less(t, resp.StatusCode, 300, "put %s: %s", key, resp.Status)
}

// s3Action maps a path-style S3 request to the IAM action that authorises
// it (docs.aws.amazon.com/service-authorization, "Amazon S3") and the
// object key or listing prefix it concerns. A request it does not know
// maps to "s3:UNMAPPED ...", which no grant holds.
func s3Action(r *http.Request, bucket string) (action, key string) {
	q := r.URL.Query()
	rest, _ := strings.CutPrefix(r.URL.Path, "/"+bucket)
	key = strings.TrimPrefix(rest, "/")
	if key == "" { // the bucket
		switch {
		case r.Method == http.MethodPost && q.Has("delete"):
			return "s3:DeleteObject", "" // DeleteObjects: keys in the body, checked by the emulator's own prefix rules below
		case (r.Method == http.MethodGet || r.Method == http.MethodHead) && q.Has("uploads"):
			return "s3:ListBucketMultipartUploads", q.Get("prefix")
		case (r.Method == http.MethodGet || r.Method == http.MethodHead) && q.Has("versions"):
			return "s3:ListBucketVersions", q.Get("prefix")
		case r.Method == http.MethodGet && q.Has("location"):
			return "s3:GetBucketLocation", ""
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			p := q.Get("prefix")
			if p == "" {
				p = "(whole bucket)"
			}
			return "s3:ListBucket", p
		}
		return fmt.Sprintf("s3:UNMAPPED %s bucket?%s", r.Method, r.URL.RawQuery), ""
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case q.Has("uploadId"):
			return "s3:ListMultipartUploadParts", key
		case q.Has("versionId"):
			return "s3:GetObjectVersion", key
		case q.Has("tagging"), q.Has("acl"), q.Has("attributes"):
			return fmt.Sprintf("s3:UNMAPPED %s object?%s", r.Method, r.URL.RawQuery), key
		}
		return "s3:GetObject", key
	case http.MethodPut:
		if r.Header.Get("X-Amz-Copy-Source") != "" && !q.Has("partNumber") {
			return "s3:PutObject", key // and s3:GetObject on the source
		}
		if q.Has("tagging") || q.Has("acl") {
			return fmt.Sprintf("s3:UNMAPPED PUT object?%s", r.URL.RawQuery), key
		}
		return "s3:PutObject", key // PutObject, UploadPart
	case http.MethodPost:
		if q.Has("uploads") || q.Has("uploadId") {
			return "s3:PutObject", key // CreateMultipartUpload, CompleteMultipartUpload
		}
	case http.MethodDelete:
		switch {
		case q.Has("uploadId"):
			return "s3:AbortMultipartUpload", key
		case q.Has("versionId"):
			return "s3:DeleteObjectVersion", key
		}
		return "s3:DeleteObject", key
	}
	return fmt.Sprintf("s3:UNMAPPED %s object?%s", r.Method, r.URL.RawQuery), key
}

func TestS3Action(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method, target string
		header         string
		want, key      string
	}{
		{"GET", "/b/warehouse/t/metadata/v1.json", "", "s3:GetObject", "warehouse/t/metadata/v1.json"},
		{"HEAD", "/b/warehouse/x", "", "s3:GetObject", "warehouse/x"},
		{"PUT", "/b/warehouse/x", "", "s3:PutObject", "warehouse/x"},
		{"PUT", "/b/warehouse/x?partNumber=2&uploadId=u", "", "s3:PutObject", "warehouse/x"},
		{"POST", "/b/warehouse/x?uploads", "", "s3:PutObject", "warehouse/x"},
		{"POST", "/b/warehouse/x?uploadId=u", "", "s3:PutObject", "warehouse/x"},
		{"DELETE", "/b/warehouse/x?uploadId=u", "", "s3:AbortMultipartUpload", "warehouse/x"},
		{"DELETE", "/b/warehouse/x", "", "s3:DeleteObject", "warehouse/x"},
		{"DELETE", "/b/warehouse/x?versionId=v", "", "s3:DeleteObjectVersion", "warehouse/x"},
		{"GET", "/b?list-type=2&prefix=warehouse/t/", "", "s3:ListBucket", "warehouse/t/"},
		{"GET", "/b?list-type=2", "", "s3:ListBucket", "(whole bucket)"},
		{"POST", "/b?delete", "", "s3:DeleteObject", ""},
		{"GET", "/b?uploads", "", "s3:ListBucketMultipartUploads", ""},
		{"PUT", "/b/warehouse/x", "X-Amz-Copy-Source", "s3:PutObject", "warehouse/x"},
		{"GET", "/b/warehouse/x?tagging", "", "s3:UNMAPPED GET object?tagging", "warehouse/x"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.header != "" {
			r.Header.Set(tt.header, "/b/warehouse/y")
		}
		action, key := s3Action(r, "b")
		assert.Equal(t, tt.want, action, "%s %s", tt.method, tt.target)
		assert.Equal(t, tt.key, key, "%s %s", tt.method, tt.target)
	}
}

// fakeGlue answers the Glue JSON API calls of iceberg-go's Glue catalog
// for one database, keeping tables in memory; UpdateTable checks the
// version as Glue's optimistic locking does. Any other call is refused,
// and recorded, so the test names it.
type fakeGlue struct {
	location string // of the database "social"

	mu      sync.Mutex
	tables  map[string]map[string]any // name -> Table
	version int
}

func (g *fakeGlue) serve(w http.ResponseWriter, r *http.Request, op string) {
	var in map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 10<<20)).Decode(&in); err != nil {
		glueError(w, "InvalidInputException", err.Error())
		return
	}
	str := func(k string) string { s, _ := in[k].(string); return s }
	g.mu.Lock()
	defer g.mu.Unlock()
	switch op {
	case "GetDatabase":
		if str("Name") != "social" {
			glueError(w, "EntityNotFoundException", "Database "+str("Name")+" not found.")
			return
		}
		glueReply(w, map[string]any{"Database": map[string]any{"Name": "social", "LocationUri": g.location}})
	case "CreateDatabase":
		glueError(w, "AlreadyExistsException", "Database already exists.")
	case "GetTable":
		tbl, ok := g.tables[str("Name")]
		if str("DatabaseName") != "social" || !ok {
			glueError(w, "EntityNotFoundException", "Table "+str("Name")+" not found.")
			return
		}
		glueReply(w, map[string]any{"Table": tbl})
	case "GetTables":
		list := []any{}
		for _, tbl := range g.tables {
			list = append(list, tbl)
		}
		glueReply(w, map[string]any{"TableList": list})
	case "CreateTable", "UpdateTable":
		input, _ := in["TableInput"].(map[string]any)
		name, _ := input["Name"].(string)
		old, exists := g.tables[name]
		switch {
		case op == "CreateTable" && exists:
			glueError(w, "AlreadyExistsException", "Table already exists.")
			return
		case op == "UpdateTable" && !exists:
			glueError(w, "EntityNotFoundException", "Table "+name+" not found.")
			return
		case op == "UpdateTable" && old["VersionId"] != str("VersionId"):
			glueError(w, "ConcurrentModificationException", "Version mismatch.")
			return
		}
		g.version++
		tbl := maps.Clone(input)
		tbl["DatabaseName"] = "social"
		tbl["VersionId"] = strconv.Itoa(g.version)
		g.tables[name] = tbl
		glueReply(w, map[string]any{})
	default:
		glueError(w, "AccessDeniedException", "the fake Glue catalog does not implement "+op)
	}
}

func glueReply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(v)
}

func glueError(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "Message": msg})
}
