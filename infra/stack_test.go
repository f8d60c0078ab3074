package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/iamactions"
)

func TestMain(m *testing.M) {
	// The jsii runtime's banner about the Node version (the CDK's support
	// window) is noise in test output; the node process it starts inherits
	// these.
	for _, k := range []string{"END_OF_LIFE", "DEPRECATED", "UNTESTED"} {
		key := "JSII_SILENCE_WARNING_" + k + "_NODE_VERSION"
		if os.Getenv(key) == "" {
			os.Setenv(key, nodeMajor())
		}
	}
	dir, err := os.MkdirTemp("", "infra-test-")
	if err != nil {
		panic(err)
	}
	synthDir = dir
	code := m.Run()
	jsii.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// nodeMajor is the major version of node on PATH, which the END_OF_LIFE
// silencer wants; "1" does for the others.
func nodeMajor() string {
	out, err := exec.Command("node", "-p", "process.versions.node.split('.')[0]").Output()
	if err != nil {
		return "1"
	}
	return strings.TrimSpace(string(out))
}

// synthesized is one stack, synthesised once and shared by the tests that
// read it.
type synthesized struct {
	stack    *Stack
	template assertions.Template
	json     map[string]any // the template
}

// synthDir holds the shared stacks' outputs and assets, which outlive the
// test that happens to synthesise them.
var synthDir string

func synth(t *testing.T, context map[string]any) *synthesized {
	t.Helper()
	dir, err := os.MkdirTemp(synthDir, "stack-")
	require.NoError(t, err)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(filepath.Join(dir, "cdk.out")), Context: &context})
	cfg, err := AppConfig(app, repoRootT(t))
	require.NoError(t, err)
	asset, err := PrepareAsset(cfg, repoRootT(t), filepath.Join(dir, "asset"), fakeBuild)
	require.NoError(t, err)
	s := NewStack(app, cfg, asset)
	tmpl := assertions.Template_FromStack(s.Stack, nil)
	annotations := assertions.Annotations_FromStack(s.Stack)
	check(t, "no synth errors (cdk-nag findings unsuppressed)", func() { annotations.HasNoError(jsii.String("*"), assertions.Match_AnyValue()) })
	return &synthesized{stack: s, template: tmpl, json: *tmpl.ToJSON()}
}

var (
	// defaultStack: FIFO, Lambda, Glue, a created secret.
	defaultStack = onceStack(map[string]any{})
	// altStack: standard queue, Lambda and Fargate, REST catalog, an
	// imported secret.
	altStack = onceStack(map[string]any{
		"stage":           "alt",
		"queueType":       "standard",
		"maxReceiveCount": "3",
		"compute":         "both",
		"maxConcurrency":  "7",
		"batchSize":       "4",
		"fargateMinTasks": "1",
		"fargateMaxTasks": "6",
		"catalog":         "rest",
		"restCatalogUri":  "https://catalog.example.com/iceberg",
		"modelSecretArn":  "arn:aws:secretsmanager:eu-west-1:123456789012:secret:enricher/model-key-AbCdEf",
		"modelEndpoint":   "https://example.openai.azure.com/",
		"modelDeployment": "gpt-4o-mini",
		"fargateNetwork":  "private",
	})
	// fargateStack: the run service alone, on a Glue catalog, in public
	// subnets, an OpenAI-compatible model.
	fargateStack = onceStack(map[string]any{
		"stage":           "run",
		"compute":         "fargate",
		"modelEndpoint":   "https://llm.example.com/v1",
		"modelProvider":   "openai",
		"modelDeployment": "llama-3.1-8b",
	})
	// allStacks are the deployment shapes the tests synthesise.
	allStacks = []func(*testing.T) *synthesized{defaultStack, altStack, fargateStack}
)

// onceStack synthesises on first use, once: the tests that read stacks
// do not run in parallel (the jsii runtime's start is not safe for it),
// and one synthesis per stack keeps them fast.
func onceStack(context map[string]any) func(*testing.T) *synthesized {
	var (
		mu sync.Mutex
		s  *synthesized
	)
	return func(t *testing.T) *synthesized {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if s == nil {
			s = synth(t, context)
		}
		return s
	}
}

// check runs an assertions call, which panics on a mismatch, as a test
// failure.
func check(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: %v", what, r)
		}
	}()
	f()
}

type obj = map[string]any

func like(m obj) assertions.Matcher { return assertions.Match_ObjectLike(&m) }
func arrayWith(v ...any) assertions.Matcher {
	return assertions.Match_ArrayWith(&v)
}

// resources returns the template's resources of a type by logical id.
func (s *synthesized) resources(typ string) map[string]obj {
	out := map[string]obj{}
	for id, r := range s.json["Resources"].(obj) {
		if r.(obj)["Type"] == typ {
			out[id] = r.(obj)
		}
	}
	return out
}

func (s *synthesized) props(t *testing.T, typ string) obj {
	t.Helper()
	rs := s.resources(typ)
	require.Len(t, rs, 1, typ)
	for _, r := range rs {
		return r["Properties"].(obj)
	}
	return nil
}

// logicalID of a construct in the template.
func (s *synthesized) logicalID(c awscdk.CfnElement) string {
	return *s.stack.Stack.GetLogicalId(c)
}

func (s *synthesized) queueIDs(t *testing.T) (source, dlq string) {
	t.Helper()
	return s.logicalID(s.stack.Queue.Node().DefaultChild().(awscdk.CfnElement)),
		s.logicalID(s.stack.DeadLetters.Node().DefaultChild().(awscdk.CfnElement))
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	f, ok := v.(float64)
	require.True(t, ok, "want a number, got %#v", v)
	return f
}

func TestQueues(t *testing.T) {
	for _, tt := range []struct {
		name        string
		stack       func(*testing.T) *synthesized
		fifo        bool
		maxReceives float64
	}{
		{"fifo", defaultStack, true, 5},
		{"standard", altStack, false, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.stack(t)
			src, dlq := s.queueIDs(t)
			queues := s.resources("AWS::SQS::Queue")
			require.Len(t, queues, 2)
			sp, dp := queues[src]["Properties"].(obj), queues[dlq]["Properties"].(obj)

			for _, p := range []obj{sp, dp} {
				assert.Equal(t, true, p["SqsManagedSseEnabled"], "server-side encryption")
				if tt.fifo {
					assert.Equal(t, true, p["FifoQueue"])
				} else {
					assert.NotContains(t, p, "FifoQueue")
				}
			}
			assert.Equal(t, obj{
				"deadLetterTargetArn": obj{"Fn::GetAtt": []any{dlq, "Arn"}},
				"maxReceiveCount":     tt.maxReceives,
			}, sp["RedrivePolicy"])
			assert.Greater(t, num(t, dp["MessageRetentionPeriod"]), num(t, sp["MessageRetentionPeriod"]),
				"the DLQ keeps messages longer than the source queue")
			if tt.fifo {
				assert.Equal(t, "messageGroup", sp["DeduplicationScope"])
				assert.Equal(t, false, sp["ContentBasedDeduplication"], "producers set the deduplication id")
			}

			// TLS only on both queues.
			check(t, "queue policies deny insecure transport", func() {
				s.template.ResourcePropertiesCountIs(jsii.String("AWS::SQS::QueuePolicy"), like(obj{
					"PolicyDocument": like(obj{"Statement": arrayWith(like(obj{
						"Effect":    "Deny",
						"Condition": obj{"Bool": obj{"aws:SecureTransport": "false"}},
					}))}),
				}), jsii.Number(2))
			})
		})
	}
}

func TestVisibilityTimeoutIsSixTimesFunctionTimeout(t *testing.T) {
	for _, stack := range []func(*testing.T) *synthesized{defaultStack, altStack} {
		s := stack(t)
		src, _ := s.queueIDs(t)
		vis := num(t, s.resources("AWS::SQS::Queue")[src]["Properties"].(obj)["VisibilityTimeout"])
		fn := s.props(t, "AWS::Lambda::Function")
		timeout := num(t, fn["Timeout"])
		assert.Equal(t, float64(s.stack.Config.LambdaTimeoutSeconds), timeout)
		assert.GreaterOrEqual(t, vis, 6*timeout, "queue visibility timeout vs function timeout")
	}
}

func TestConsumerFunction(t *testing.T) {
	s := defaultStack(t)
	_, dlq := s.queueIDs(t)
	check(t, "function", func() {
		s.template.HasResourceProperties(jsii.String("AWS::Lambda::Function"), like(obj{
			"Runtime":       "provided.al2023",
			"Architectures": []any{"arm64"},
			"Handler":       "bootstrap",
			"MemorySize":    1024,
			"Environment": obj{"Variables": like(obj{
				"ENRICHER_CONFIG":         "/var/task/enricher.yaml",
				"ENRICHER_DLQ_URL":        obj{"Ref": dlq},
				"ENRICHER_API_KEY_SECRET": obj{"Ref": s.logicalID(s.stack.Secret.Node().DefaultChild().(awscdk.CfnElement))},
				"ENRICHER_STAGE":          "dev",
			})},
		}))
	})
	fn := s.props(t, "AWS::Lambda::Function")
	assert.NotContains(t, fn["Environment"].(obj)["Variables"], "ENRICHER_MODEL_BASE_URL", "no model endpoint configured")

	check(t, "event source", func() {
		s.template.HasResourceProperties(jsii.String("AWS::Lambda::EventSourceMapping"), like(obj{
			"FunctionResponseTypes": []any{"ReportBatchItemFailures"},
			"BatchSize":             10,
			"ScalingConfig":         obj{"MaximumConcurrency": 5},
			"EventSourceArn":        obj{"Fn::GetAtt": []any{s.logicalID(s.stack.Queue.Node().DefaultChild().(awscdk.CfnElement)), "Arn"}},
		}))
	})
	// FIFO event sources take no batching window.
	esm := s.props(t, "AWS::Lambda::EventSourceMapping")
	assert.NotContains(t, esm, "MaximumBatchingWindowInSeconds")
}

func TestConsumerFunctionAlt(t *testing.T) {
	s := altStack(t)
	check(t, "event source", func() {
		s.template.HasResourceProperties(jsii.String("AWS::Lambda::EventSourceMapping"), like(obj{
			"FunctionResponseTypes": []any{"ReportBatchItemFailures"},
			"BatchSize":             4,
			"ScalingConfig":         obj{"MaximumConcurrency": 7},
		}))
	})
	check(t, "model settings", func() {
		s.template.HasResourceProperties(jsii.String("AWS::Lambda::Function"), like(obj{
			"Environment": obj{"Variables": like(obj{
				"ENRICHER_MODEL_BASE_URL":   "https://example.openai.azure.com/",
				"ENRICHER_MODEL_DEPLOYMENT": "gpt-4o-mini",
				"ENRICHER_API_KEY_SECRET":   "arn:aws:secretsmanager:eu-west-1:123456789012:secret:enricher/model-key-AbCdEf",
			})},
		}))
	})
}

func TestWarehouse(t *testing.T) {
	s := defaultStack(t)
	check(t, "bucket", func() {
		s.template.HasResourceProperties(jsii.String("AWS::S3::Bucket"), like(obj{
			"BucketEncryption": obj{"ServerSideEncryptionConfiguration": []any{
				obj{"ServerSideEncryptionByDefault": obj{"SSEAlgorithm": "AES256"}},
			}},
			"PublicAccessBlockConfiguration": obj{
				"BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true,
			},
			"VersioningConfiguration": obj{"Status": "Enabled"},
		}))
	})
	check(t, "bucket is kept", func() {
		s.template.HasResource(jsii.String("AWS::S3::Bucket"), like(obj{"DeletionPolicy": "Retain"}))
	})
	check(t, "TLS enforced", func() {
		s.template.HasResourceProperties(jsii.String("AWS::S3::BucketPolicy"), like(obj{
			"PolicyDocument": like(obj{"Statement": arrayWith(like(obj{
				"Effect":    "Deny",
				"Action":    "s3:*",
				"Condition": obj{"Bool": obj{"aws:SecureTransport": "false"}},
			}))}),
		}))
	})
	db := s.props(t, "AWS::Glue::Database")["DatabaseInput"].(obj)
	assert.Equal(t, "social", db["Name"])
	loc, _ := json.Marshal(db["LocationUri"])
	assert.Contains(t, string(loc), "/warehouse/social", "tables go under the bucket's warehouse prefix")
}

func TestRESTCatalogHasNoWarehouse(t *testing.T) {
	s := altStack(t)
	check(t, "no bucket", func() { s.template.ResourceCountIs(jsii.String("AWS::S3::Bucket"), jsii.Number(0)) })
	check(t, "no glue database", func() { s.template.ResourceCountIs(jsii.String("AWS::Glue::Database"), jsii.Number(0)) })
	check(t, "imported secret", func() { s.template.ResourceCountIs(jsii.String("AWS::SecretsManager::Secret"), jsii.Number(0)) })
}

// policies lists the IAM policy resources with the statements of each.
type policy struct {
	id         string
	roles      []string // logical ids of the roles it is attached to
	statements []obj
}

func (s *synthesized) policies(t *testing.T) []policy {
	t.Helper()
	var out []policy
	for id, r := range s.resources("AWS::IAM::Policy") {
		p := r["Properties"].(obj)
		var roles []string
		for _, ref := range p["Roles"].([]any) {
			roles = append(roles, ref.(obj)["Ref"].(string))
		}
		out = append(out, policy{id: id, roles: roles, statements: statements(p["PolicyDocument"])})
	}
	return out
}

func statements(doc any) []obj {
	var out []obj
	switch st := doc.(obj)["Statement"].(type) {
	case []any:
		for _, s := range st {
			out = append(out, s.(obj))
		}
	case obj:
		out = append(out, st)
	}
	return out
}

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			} else {
				b, _ := json.Marshal(x)
				out = append(out, string(b))
			}
		}
		return out
	case nil:
		return nil
	default:
		b, _ := json.Marshal(v)
		return []string{string(b)}
	}
}

func (s *synthesized) consumerRoles(t *testing.T) []string {
	t.Helper()
	var roles []string
	if s.stack.Function != nil {
		roles = append(roles, s.logicalID(s.stack.Function.Role().Node().DefaultChild().(awscdk.CfnElement)))
	}
	if s.stack.Service != nil {
		roles = append(roles, s.logicalID(s.stack.Service.TaskDefinition().TaskRole().Node().DefaultChild().(awscdk.CfnElement)))
	}
	require.NotEmpty(t, roles)
	return roles
}

func TestSecretReadableOnlyByConsumers(t *testing.T) {
	for _, stack := range allStacks {
		s := stack(t)
		consumers := s.consumerRoles(t)
		readers := map[string]bool{}
		for _, p := range s.policies(t) {
			for _, st := range p.statements {
				if slices.Contains(strs(st["Action"]), "secretsmanager:GetSecretValue") && st["Effect"] == "Allow" {
					for _, r := range p.roles {
						readers[r] = true
					}
				}
			}
		}
		got := make([]string, 0, len(readers))
		for r := range readers {
			got = append(got, r)
		}
		assert.ElementsMatch(t, consumers, got, "roles that may read the model key (%s)", s.stack.Config.Stage)
		for _, mp := range s.resources("AWS::IAM::ManagedPolicy") {
			doc, _ := json.Marshal(mp["Properties"].(obj)["PolicyDocument"])
			assert.NotContains(t, string(doc), "secretsmanager", "managed policies grant no secret")
		}
	}

	// A created secret denies its value to everyone else.
	s := defaultStack(t)
	role := s.consumerRoles(t)[0]
	check(t, "secret resource policy", func() {
		s.template.HasResourceProperties(jsii.String("AWS::SecretsManager::ResourcePolicy"), like(obj{
			"ResourcePolicy": like(obj{"Statement": arrayWith(like(obj{
				"Effect":    "Deny",
				"Action":    "secretsmanager:GetSecretValue",
				"Principal": obj{"AWS": "*"},
				"Condition": obj{"StringNotEquals": obj{"aws:PrincipalArn": []any{obj{"Fn::GetAtt": []any{role, "Arn"}}}}},
			}))}),
		}))
	})
}

// TestConsumerPermissions: each consumer role gets exactly the S3 and Glue
// actions of internal/iamactions (which cmd/enricher's
// TestGrantedActionsCoverEveryCall checks against the requests the
// commands make), on the warehouse prefix and the one Glue database only.
func TestConsumerPermissions(t *testing.T) {
	for _, role := range append(defaultStack(t).consumerRoles(t), fargateStack(t).consumerRoles(t)...) {
		s := defaultStack(t)
		if !strings.HasPrefix(role, "ConsumerRole") {
			s = fargateStack(t)
		}
		byID := map[string]obj{}
		var actions, resources []string
		for _, p := range s.policies(t) {
			if !slices.Contains(p.roles, role) {
				continue
			}
			for _, st := range p.statements {
				if sid, ok := st["Sid"].(string); ok {
					byID[sid] = st
				}
				actions = append(actions, strs(st["Action"])...)
				if st["Sid"] != "FindOwnEventSource" { // checked below
					resources = append(resources, strs(st["Resource"])...)
				}
			}
		}
		if strings.HasPrefix(role, "ConsumerRole") { // the function pauses its event source on a halt
			list, update := iamactions.PauseEventSource()
			assert.Equal(t, []string{list}, strs(byID["FindOwnEventSource"]["Action"]))
			assert.Equal(t, []string{"*"}, strs(byID["FindOwnEventSource"]["Resource"]), "listing takes no resource")
			assert.Equal(t, []string{update}, strs(byID["PauseOwnEventSource"]["Action"]))
			mapping, _ := json.Marshal(byID["PauseOwnEventSource"]["Resource"])
			assert.Contains(t, string(mapping), ":event-source-mapping:", "the update only on the function's own mapping")
		} else {
			assert.NotContains(t, byID, "PauseOwnEventSource", "the run service has no event source mapping")
		}
		assert.ElementsMatch(t, iamactions.WarehouseObjects(), strs(byID["WarehouseFiles"]["Action"]), "object actions")
		assert.ElementsMatch(t, iamactions.WarehouseBucket(), strs(byID["WarehouseList"]["Action"]), "bucket actions")
		assert.ElementsMatch(t, iamactions.GlueCatalog(), strs(byID["GlueCatalog"]["Action"]), "glue actions")
		assert.Contains(t, actions, "s3:DeleteObject", "expiry, compaction, orphan cleanup and a lost commit's files")
		for _, want := range []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "secretsmanager:GetSecretValue"} {
			assert.Contains(t, actions, want)
		}
		for _, a := range actions {
			assert.False(t, strings.HasPrefix(a, "glue:Delete") || a == "s3:DeleteBucket" || strings.Contains(a, "*"), "consumer action %s", a)
		}
		assert.Equal(t, obj{"StringLike": obj{"s3:prefix": []any{"warehouse", "warehouse/*"}}}, byID["WarehouseList"]["Condition"], "listing only the warehouse prefix")
		objects, _ := json.Marshal(byID["WarehouseFiles"]["Resource"])
		assert.Contains(t, string(objects), `/warehouse/*`, "objects only under the warehouse prefix")
		all := strings.Join(resources, "\n")
		assert.Contains(t, all, `:table/social/*`)
		assert.Contains(t, all, `:database/social`)
		for _, r := range resources {
			assert.NotEqual(t, "*", r, "consumer statements name their resources")
		}
	}
}

func TestOperatorPolicy(t *testing.T) {
	s := defaultStack(t)
	src, dlq := s.queueIDs(t)
	mp := s.resources("AWS::IAM::ManagedPolicy")
	require.Len(t, mp, 1)
	var resources []string
	for _, m := range mp {
		for _, st := range statements(m["Properties"].(obj)["PolicyDocument"]) {
			assert.Equal(t, "Allow", st["Effect"])
			for _, a := range strs(st["Action"]) {
				assert.True(t, strings.HasPrefix(a, "sqs:") && !strings.Contains(a, "*"), "operator action %s", a)
				assert.NotContains(t, []string{"sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:SetQueueAttributes"}, a)
			}
			resources = append(resources, strs(st["Resource"])...)
		}
	}
	assert.ElementsMatch(t, []string{
		fmt.Sprintf(`{"Fn::GetAtt":[%q,"Arn"]}`, dlq),
		fmt.Sprintf(`{"Fn::GetAtt":[%q,"Arn"]}`, src),
	}, resources)
	check(t, "operator role", func() {
		s.template.HasResourceProperties(jsii.String("AWS::IAM::Role"), like(obj{
			"ManagedPolicyArns": []any{obj{"Ref": s.logicalID(s.stack.Operator.Node().DefaultChild().(awscdk.CfnElement))}},
		}))
	})
}

// wildcardGrants returns the Allow statements of a policy document that
// grant a wildcard action ("*" or "service:*") on the wildcard resource.
func wildcardGrants(doc any) []string {
	var bad []string
	for _, st := range statements(doc) {
		if st["Effect"] != "Allow" {
			continue
		}
		if _, ok := st["NotAction"]; ok {
			bad = append(bad, "NotAction in an Allow statement")
			continue
		}
		anyResource := slices.Contains(strs(st["Resource"]), "*") || st["NotResource"] != nil
		for _, a := range strs(st["Action"]) {
			if a == "*" || (anyResource && strings.HasSuffix(a, ":*")) {
				b, _ := json.Marshal(st)
				bad = append(bad, string(b))
				break
			}
		}
	}
	return bad
}

// policyDocuments finds every policy document in a template: identity
// policies, managed policies, inline role policies, and the resource
// policies of queues, buckets, topics and secrets.
func policyDocuments(v any, where string, out map[string]any) {
	switch v := v.(type) {
	case obj:
		if _, ok := v["Statement"]; ok {
			out[where] = v
			return
		}
		for k, x := range v {
			policyDocuments(x, where+"."+k, out)
		}
	case []any:
		for i, x := range v {
			policyDocuments(x, fmt.Sprintf("%s[%d]", where, i), out)
		}
	}
}

func TestWildcardGrantsDetector(t *testing.T) {
	t.Parallel()
	tests := []struct {
		give string
		want int
	}{
		{`{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}`, 1},
		{`{"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "*"], "Resource": "arn:aws:s3:::b/*"}]}`, 1},
		{`{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "*"]}]}`, 1},
		{`{"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}`, 1},
		{`{"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}`, 0},
		{`{"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}`, 0},
		{`{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]}`, 0},
	}
	for _, tt := range tests {
		var doc any
		require.NoError(t, json.Unmarshal([]byte(tt.give), &doc))
		assert.Len(t, wildcardGrants(doc), tt.want, tt.give)
	}

	docs := map[string]any{}
	var tmpl any
	require.NoError(t, json.Unmarshal([]byte(`{"Resources": {"A": {"Properties": {"Policies": [{"PolicyDocument": {"Statement": []}}]}},
		"B": {"Properties": {"PolicyDocument": {"Statement": []}}}}}`), &tmpl))
	policyDocuments(tmpl, "", docs)
	assert.Len(t, docs, 2)
}

func TestNoWildcardActionOnWildcardResource(t *testing.T) {
	for _, stack := range allStacks {
		s := stack(t)
		docs := map[string]any{}
		policyDocuments(s.json["Resources"], "Resources", docs)
		// Identity, managed, resource policies of queues, bucket, topic, secret.
		assert.GreaterOrEqual(t, len(docs), 5, "policy documents found")
		for where, doc := range docs {
			if strings.HasSuffix(where, ".KeyPolicy") {
				// In a key policy "*" is the key itself; the kms:* grant
				// is the account's, which hands the key to IAM policies.
				for _, st := range statements(doc) {
					if slices.Contains(strs(st["Action"]), "kms:*") {
						b, _ := json.Marshal(st["Principal"])
						assert.Contains(t, string(b), ":root", "%s: kms:* only to the account", where)
					}
				}
				continue
			}
			assert.Empty(t, wildcardGrants(doc), "%s: %s", s.stack.Config.Stage, where)
		}
	}
}

func TestFargateService(t *testing.T) {
	for _, tt := range []struct {
		name  string
		stack func(*testing.T) *synthesized
		flags []any
		min   float64
		max   float64
	}{
		{"both, azure", altStack, []any{"--provider", "azure", "--base-url", "https://example.openai.azure.com/", "--deployment", "gpt-4o-mini"}, 1, 6},
		{"fargate, openai", fargateStack, []any{"--provider", "openai", "--base-url", "https://llm.example.com/v1", "--deployment", "llama-3.1-8b"}, 0, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.stack(t)
			td := s.props(t, "AWS::ECS::TaskDefinition")
			assert.Equal(t, []any{"FARGATE"}, td["RequiresCompatibilities"])
			assert.Equal(t, obj{"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}, td["RuntimePlatform"])
			c := td["ContainerDefinitions"].([]any)[0].(obj)
			// The image's entry point is the binary: no shell, no download.
			assert.NotContains(t, c, "EntryPoint")
			assert.Equal(t, append([]any{"run", "--log-format", "json", "--on-halt", "wait"}, tt.flags...), c["Command"])
			image, _ := json.Marshal(c["Image"])
			assert.Contains(t, string(image), "container-assets", "the image built from source, pushed by cdk deploy")
			assert.Regexp(t, `container-assets-\$\{AWS::AccountId\}-\$\{AWS::Region\}:[0-9a-f]{64}"`, string(image), "tagged with the asset hash")
			require.NotNil(t, s.stack.Asset.Image, "a run image was built")
			assert.FileExists(t, s.stack.Asset.Image.Tarball)
			env := map[string]any{}
			for _, e := range c["Environment"].([]any) {
				env[e.(obj)["Name"].(string)] = e.(obj)["Value"]
			}
			assert.Equal(t, "/etc/enricher/enricher.yaml", env["ENRICHER_CONFIG"])
			assert.Equal(t, tt.flags[1], env["ENRICHER_MODEL_PROVIDER"])
			check(t, "scales between the configured bounds", func() {
				s.template.HasResourceProperties(jsii.String("AWS::ApplicationAutoScaling::ScalableTarget"), like(obj{
					"MinCapacity": tt.min, "MaxCapacity": tt.max, "ScalableDimension": "ecs:service:DesiredCount",
				}))
			})
			// Step scaling on the queue backlog: one policy and alarm each way.
			check(t, "step scaling", func() {
				s.template.ResourcePropertiesCountIs(jsii.String("AWS::ApplicationAutoScaling::ScalingPolicy"), like(obj{
					"PolicyType": "StepScaling",
				}), jsii.Number(2))
			})
			alarms, _ := json.Marshal(s.resources("AWS::CloudWatch::Alarm"))
			assert.Contains(t, string(alarms), "visible + inflight")
			assert.Contains(t, string(alarms), "ApproximateNumberOfMessagesNotVisible")

			// Nothing is downloaded at start: no file asset, and no role
			// reads the CDK assets bucket.
			for _, p := range s.policies(t) {
				doc, _ := json.Marshal(p.statements)
				assert.NotContains(t, string(doc), "cdk-hnb659fds-assets", "%s: no grant on the CDK file assets bucket", p.id)
				for _, st := range p.statements {
					if slices.Contains(strs(st["Resource"]), "*") {
						list, _ := iamactions.PauseEventSource()
						assert.Contains(t, [][]string{{"ecr:GetAuthorizationToken"}, {list}}, strs(st["Action"]),
							"%s: the only grants on * are those ECR and Lambda allow no resource for", p.id)
					}
				}
			}
		})
	}
}
