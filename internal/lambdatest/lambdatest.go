// Package lambdatest is a fake of the AWS Lambda API's event source
// mapping calls (ListEventSourceMappings, UpdateEventSourceMapping) over
// HTTP, speaking the REST-JSON protocol the SDK does, for the tests of a
// halt that pauses the function's event source. Test code only.
package lambdatest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// Mapping is one event source mapping.
type Mapping struct {
	UUID, Function, SourceARN string
	// State is Lambda's: Enabled, Disabled, Disabling, ...
	State string
	// Busy answers an update with ResourceInUseException, as Lambda does
	// while another change of the mapping is in progress.
	Busy bool
}

// Server is the fake. Its zero value is not usable: see Start.
type Server struct {
	URL string

	mu       sync.Mutex
	mappings []*Mapping
	refuse   string // an AccessDeniedException for every call when set
	pageSize int
	updates  []string // "UUID enabled=BOOL", in order
	actions  []string // the IAM actions of the calls served, each once
}

// Start serves mappings until t ends.
func Start(t testing.TB, mappings ...Mapping) *Server {
	t.Helper()
	s := &Server{pageSize: 1} // one per page: every caller must follow NextMarker
	for _, m := range mappings {
		s.mappings = append(s.mappings, &m)
	}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Client is an SDK client of the fake, with test credentials.
func (s *Server) Client() *lambda.Client {
	return lambda.New(lambda.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
}

// Refuse answers every later call with AccessDeniedException (an empty
// action: none).
func (s *Server) Refuse(action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = action
}

// State is the state of the mapping uuid ("" when there is none).
func (s *Server) State(uuid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mappings {
		if m.UUID == uuid {
			return m.State
		}
	}
	return ""
}

// Actions are the IAM actions of the calls the fake served (each once, in
// the order first served), such as lambda:ListEventSourceMappings.
func (s *Server) Actions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.actions...)
}

func (s *Server) served(op string) {
	if a := "lambda:" + op; !slices.Contains(s.actions, a) {
		s.actions = append(s.actions, a)
	}
}

// Updates are the updates the fake took, "UUID enabled=BOOL", in order.
func (s *Server) Updates() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.updates...)
}

const prefix = "/2015-03-31/event-source-mappings"

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse != "" {
		fail(w, http.StatusForbidden, "AccessDeniedException",
			fmt.Sprintf("User: arn:aws:sts::000000000000:assumed-role/test is not authorized to perform: %s", s.refuse))
		return
	}
	switch {
	case r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == prefix:
		s.served("ListEventSourceMappings")
		s.list(w, r)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, prefix+"/"):
		s.served("UpdateEventSourceMapping")
		s.update(w, r, strings.TrimPrefix(r.URL.Path, prefix+"/"))
	default:
		fail(w, http.StatusNotFound, "ResourceNotFoundException", r.Method+" "+r.URL.Path+": not served by the fake")
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fn, src := q.Get("FunctionName"), q.Get("EventSourceArn")
	var match []*Mapping
	for _, m := range s.mappings {
		if (fn == "" || fn == m.Function || strings.HasSuffix(fn, ":function:"+m.Function)) && (src == "" || src == m.SourceARN) {
			match = append(match, m)
		}
	}
	from, _ := strconv.Atoi(q.Get("Marker"))
	to := min(from+s.pageSize, len(match))
	out := struct {
		EventSourceMappings []map[string]any
		NextMarker          *string `json:",omitempty"`
	}{EventSourceMappings: []map[string]any{}}
	for _, m := range match[min(from, len(match)):to] {
		out.EventSourceMappings = append(out.EventSourceMappings, view(m))
	}
	if to < len(match) {
		out.NextMarker = aws.String(strconv.Itoa(to))
	}
	reply(w, http.StatusOK, out)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, uuid string) {
	var in struct{ Enabled *bool }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fail(w, http.StatusBadRequest, "InvalidParameterValueException", err.Error())
		return
	}
	for _, m := range s.mappings {
		if m.UUID != uuid {
			continue
		}
		if m.Busy {
			fail(w, http.StatusBadRequest, "ResourceInUseException", "the event source mapping is being updated")
			return
		}
		if in.Enabled != nil {
			s.updates = append(s.updates, fmt.Sprintf("%s enabled=%t", uuid, *in.Enabled))
			m.State = "Disabled"
			if *in.Enabled {
				m.State = "Enabled"
			}
		}
		v := view(m)
		if in.Enabled != nil && !*in.Enabled {
			v["State"] = "Disabling" // what Lambda answers while it stops the pollers
		}
		reply(w, http.StatusAccepted, v)
		return
	}
	fail(w, http.StatusNotFound, "ResourceNotFoundException", "no event source mapping "+uuid)
}

func view(m *Mapping) map[string]any {
	return map[string]any{"UUID": m.UUID, "State": m.State, "EventSourceArn": m.SourceARN,
		"FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:" + m.Function}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Amzn-ErrorType", code)
	reply(w, status, map[string]string{"Type": "User", "message": msg})
}
