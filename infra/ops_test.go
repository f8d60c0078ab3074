package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	mn "github.com/socialdata/enricher/internal/metricnames"
)

// TestNagPassesEveryShape: cdk-nag's AwsSolutions pack is applied to every
// deployment shape, finds no unsuppressed error (synth checks that for
// each stack), and each suppression names an AwsSolutions rule with a
// reason; IAM wildcard suppressions name what they apply to.
func TestNagPassesEveryShape(t *testing.T) {
	for _, stack := range allStacks {
		s := stack(t)
		check(t, s.stack.Config.Stage+": no cdk-nag error", func() {
			assertions.Annotations_FromStack(s.stack.Stack).HasNoError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*")))
		})
		n := 0
		for id, r := range s.json["Resources"].(obj) {
			meta, _ := r.(obj)["Metadata"].(obj)
			nag, _ := meta["cdk_nag"].(obj)
			rules, _ := nag["rules_to_suppress"].([]any)
			for _, rule := range rules {
				n++
				rule := rule.(obj)
				assert.Regexp(t, `^(AwsSolutions-[A-Z]+[0-9]+|CdkNagValidationFailure)$`, rule["id"], "%s: suppression of a rule of the pack", id)
				assert.GreaterOrEqual(t, len(rule["reason"].(string)), 30, "%s: %s has a reason", id, rule["id"])
				if rule["id"] == "AwsSolutions-IAM5" {
					assert.NotEmpty(t, rule["applies_to"], "%s: an IAM5 suppression names the wildcards it covers", id)
				}
			}
		}
		assert.Positive(t, n, "%s: suppressions found in the template metadata", s.stack.Config.Stage)
	}
}

// TestNagFailsOnANewFinding: a resource that breaks a rule, added to the
// stack, is an error annotation (which fails cdk synth and go run ./infra).
func TestNagFailsOnANewFinding(t *testing.T) {
	dir, err := os.MkdirTemp(synthDir, "nag-")
	require.NoError(t, err)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(filepath.Join(dir, "cdk.out"))})
	cfg := DefaultConfig()
	asset, err := PrepareAsset(cfg, repoRootT(t), filepath.Join(dir, "asset"), fakeBuild)
	require.NoError(t, err)
	s := NewStack(app, cfg, asset)
	awssqs.NewQueue(s.Stack, jsii.String("Careless"), &awssqs.QueueProps{Encryption: awssqs.QueueEncryption_UNENCRYPTED})
	errs := assertions.Annotations_FromStack(s.Stack).FindError(jsii.String("/Enricher-dev/Careless/Resource"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-SQS.*")))
	assert.NotEmpty(t, *errs, "an unencrypted queue without a DLQ or TLS policy is an error")

	assembly := app.Synth(nil)
	err = synthErrors(*assembly.Directory())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/Enricher-dev/Careless/Resource: AwsSolutions-SQS")
}

func TestSynthErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(s string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(s), 0o644))
	}
	write(`{"artifacts": {"S": {"metadata": {"/S/A": [{"type": "aws:cdk:warning", "data": "w"}, {"type": "aws:cdk:error", "data": "AwsSolutions-X1: bad"}]}}}}`)
	err := synthErrors(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 errors")
	assert.Contains(t, err.Error(), "/S/A: AwsSolutions-X1: bad")
	write(`{"artifacts": {"S": {"metadata": {"/S/A": [{"type": "aws:cdk:warning", "data": "w"}]}}}}`)
	require.NoError(t, synthErrors(dir))
	// The CDK writes a stack's metadata to a file of its own.
	write(`{"artifacts": {"S": {"additionalMetadataFile": "S.metadata.json"}}}`)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "S.metadata.json"), []byte(`{"/S/B": [{"type": "aws:cdk:error", "data": "AwsSolutions-Y2: worse"}]}`), 0o644))
	err = synthErrors(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/S/B: AwsSolutions-Y2: worse")
}

func (s *synthesized) alarm(t *testing.T, id string) obj {
	t.Helper()
	for lid, r := range s.resources("AWS::CloudWatch::Alarm") {
		if strings.HasPrefix(lid, id) && len(lid) == len(id)+8 {
			return r["Properties"].(obj)
		}
	}
	t.Fatalf("%s: no alarm %s", s.stack.Config.Stage, id)
	return nil
}

// TestAlarms: each alarm watches what it says, notifies the encrypted
// topic when it fires and clears, and the function's metrics come from its
// EMF documents in the stack's namespace.
func TestAlarms(t *testing.T) {
	topicOf := func(s *synthesized) any {
		return obj{"Ref": s.logicalID(s.stack.Alarms.Node().DefaultChild().(awscdk.CfnElement))}
	}
	for _, tt := range []struct {
		stack  func(*testing.T) *synthesized
		alarms []string
	}{
		{defaultStack, []string{"DeadLettersAlarm", "OldestMessageAlarm", "HaltsAlarm", "CommitConflictsAlarm", "ConsumerErrorsAlarm",
			"ConsumerThrottlesAlarm", "RowsFailedAlarm", "ModelThrottledAlarm", "BudgetExhaustedAlarm"}},
		{fargateStack, []string{"DeadLettersAlarm", "OldestMessageAlarm", "HaltsAlarm", "CommitConflictsAlarm",
			"RowsFailedAlarm", "ModelThrottledAlarm", "BudgetExhaustedAlarm"}},
	} {
		s := tt.stack(t)
		ns := "Enricher/" + s.stack.Config.Stage
		for _, id := range tt.alarms {
			a := s.alarm(t, id)
			assert.Equal(t, []any{topicOf(s)}, a["AlarmActions"], "%s notifies the topic", id)
			assert.Equal(t, []any{topicOf(s)}, a["OKActions"], "%s notifies the topic when it clears", id)
			assert.Contains(t, a["AlarmDescription"], "Runbook: "+id, "%s points to its runbook entry", id)
			assert.Equal(t, "GreaterThanThreshold", a["ComparisonOperator"])
		}
		var ours []string
		for lid, r := range s.resources("AWS::CloudWatch::Alarm") {
			if b, _ := json.Marshal(r["Properties"].(obj)["AlarmActions"]); strings.Contains(string(b), `"Ref":"Alarms`) {
				ours = append(ours, lid[:len(lid)-8])
			}
		}
		assert.ElementsMatch(t, tt.alarms, ours, "%s: the alarms that notify", s.stack.Config.Stage)

		for id, want := range map[string]obj{
			"DeadLettersAlarm": {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible", "Threshold": 0.0},
			"HaltsAlarm":       {"Namespace": ns, "MetricName": "Halts", "Statistic": "Sum", "Threshold": 0.0},
			"CommitConflictsAlarm": {"Namespace": ns, "MetricName": "CommitConflicts", "Statistic": "Sum", "Period": 900.0,
				"Threshold": float64(commitConflictsAlarm)},
		} {
			a := s.alarm(t, id)
			for k, v := range want {
				assert.Equal(t, v, a[k], "%s %s", id, k)
			}
			if a["Namespace"] == ns {
				assert.NotContains(t, a, "Dimensions", "%s: alarms read the metrics without dimensions", id)
			}
		}
	}

	s := defaultStack(t)
	fn := s.logicalID(s.stack.Function.Node().DefaultChild().(awscdk.CfnElement))
	for id, want := range map[string]obj{
		"ConsumerErrorsAlarm":    {"Namespace": "AWS/Lambda", "MetricName": "Errors", "Threshold": 0.0},
		"ConsumerThrottlesAlarm": {"Namespace": "AWS/Lambda", "MetricName": "Throttles", "Threshold": 0.0},
		"ModelThrottledAlarm":    {"Namespace": "Enricher/dev", "MetricName": "ModelThrottled", "EvaluationPeriods": 3.0, "DatapointsToAlarm": 3.0},
		"BudgetExhaustedAlarm":   {"Namespace": "Enricher/dev", "MetricName": "BudgetExhausted", "Threshold": 0.0},
	} {
		a := s.alarm(t, id)
		for k, v := range want {
			assert.Equal(t, v, a[k], "%s %s", id, k)
		}
		if want["Namespace"] == "AWS/Lambda" {
			assert.Equal(t, []any{obj{"Name": "FunctionName", "Value": obj{"Ref": fn}}}, a["Dimensions"])
		}
	}
	rows, _ := json.Marshal(s.alarm(t, "RowsFailedAlarm")["Metrics"])
	for _, m := range []string{`"MetricName":"RowsFailed","Namespace":"Enricher/dev"`, `"MetricName":"RowsInvalidOutput","Namespace":"Enricher/dev"`, "FILL(failed, 0) + FILL(invalid, 0)"} {
		assert.Contains(t, string(rows), m)
	}

	// The function writes its EMF documents into the namespace the alarms
	// read; the log-line metric filters are gone (they would count twice).
	env := s.props(t, "AWS::Lambda::Function")["Environment"].(obj)["Variables"].(obj)
	assert.Equal(t, "Enricher/dev", env["ENRICHER_METRICS_NAMESPACE"])
	check(t, "no metric filter on the function's logs", func() {
		s.template.ResourceCountIs(jsii.String("AWS::Logs::MetricFilter"), jsii.Number(0))
	})
	// The run service's log lines become metrics of the same names.
	f := fargateStack(t)
	filters := map[string]string{}
	for _, r := range f.resources("AWS::Logs::MetricFilter") {
		p := r["Properties"].(obj)
		tr := p["MetricTransformations"].([]any)[0].(obj)
		assert.Equal(t, "Enricher/run", tr["MetricNamespace"])
		assert.Equal(t, mn.FilterUnit, tr["Unit"], "the EMF documents' unit: an alarm on a metric of two units behaves unpredictably")
		filters[tr["MetricName"].(string)] = p["FilterPattern"].(string)
	}
	assert.Equal(t, `{ $.msg = "message released: halting" }`, filters["Halts"])
	assert.Equal(t, `{ $.msg = "target commit conflict*" }`, filters["CommitConflicts"])
	assert.Equal(t, `{ $.msg = "message dead-lettered" }`, filters["DeadLettered"])
	assert.Contains(t, filters, "Commits")
	assert.Contains(t, filters, "RowsCommitted")
	for _, m := range []string{"RowsFailed", "RowsInvalidOutput", "ModelThrottled", "BudgetExhausted"} {
		assert.Contains(t, filters, m, "the run service's %s feeds the alarm on it", m)
	}
}

// TestAlarmTopicIsEncrypted: the topic is encrypted with a rotating key
// that CloudWatch may use, for this account's alarms, and no one else
// beyond the account.
func TestAlarmTopicIsEncrypted(t *testing.T) {
	for _, stack := range allStacks {
		s := stack(t)
		key := s.logicalID(s.stack.AlarmsKey.Node().DefaultChild().(awscdk.CfnElement))
		topic := s.props(t, "AWS::SNS::Topic")
		assert.Equal(t, obj{"Fn::GetAtt": []any{key, "Arn"}}, topic["KmsMasterKeyId"])
		kp := s.props(t, "AWS::KMS::Key")
		assert.Equal(t, true, kp["EnableKeyRotation"])
		var cw obj
		for _, st := range statements(kp["KeyPolicy"]) {
			if st["Sid"] == "CloudWatchAlarmsPublish" {
				cw = st
			}
		}
		require.NotNil(t, cw, "the key lets CloudWatch publish")
		assert.Equal(t, obj{"Service": "cloudwatch.amazonaws.com"}, cw["Principal"])
		assert.ElementsMatch(t, []string{"kms:Decrypt", "kms:GenerateDataKey*"}, strs(cw["Action"]))
		assert.Equal(t, obj{"StringEquals": obj{"aws:SourceAccount": obj{"Ref": "AWS::AccountId"}}}, cw["Condition"])
	}
}

func TestReservedConcurrency(t *testing.T) {
	assert.Equal(t, 5.0, defaultStack(t).props(t, "AWS::Lambda::Function")["ReservedConcurrentExecutions"], "default: maxConcurrency")
	assert.Equal(t, 7.0, altStack(t).props(t, "AWS::Lambda::Function")["ReservedConcurrentExecutions"], "follows maxConcurrency")

	t.Run("config", func(t *testing.T) {
		t.Parallel()
		cfg, err := LoadConfig(map[string]any{"reservedConcurrency": "-1"}, t.TempDir())
		require.NoError(t, err)
		assert.Equal(t, 0, cfg.Reserved(), "-1 reserves none")
		cfg, err = LoadConfig(map[string]any{"reservedConcurrency": "50", "maxConcurrency": "20"}, t.TempDir())
		require.NoError(t, err)
		assert.Equal(t, 50, cfg.Reserved())
		_, err = LoadConfig(map[string]any{"reservedConcurrency": "3", "maxConcurrency": "10"}, t.TempDir())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "context: reservedConcurrency: must be 0 (reserve maxConcurrency), -1 (reserve none) or maxConcurrency (10) to 1000, got 3")
	})
}

// TestDashboard: the backlog, the DLQ, rows per status, model usage and
// cost, and commit latency from the function's EMF metrics; the run
// service's figures from its metric filters.
func TestDashboard(t *testing.T) {
	// The body is a Fn::Join of JSON text and references.
	body := func(s *synthesized) string {
		var text strings.Builder
		for _, part := range s.props(t, "AWS::CloudWatch::Dashboard")["DashboardBody"].(obj)["Fn::Join"].([]any)[1].([]any) {
			if p, ok := part.(string); ok {
				text.WriteString(p)
			} else {
				text.WriteString("REF")
			}
		}
		return text.String()
	}
	d := body(defaultStack(t))
	for _, m := range []string{"visible + inflight", "ApproximateAgeOfOldestMessage", "Dead-letter queue", "DeadLettered",
		`"Enricher/dev","RowsOk"`, "RowsSkipped", "RowsFailed", "RowsInvalidOutput", "{Enricher/dev,Job}",
		"ModelRequests", "ModelThrottled", "ModelServerErrors", "PromptTokens", "CompletionTokens", "CachedTokens", "CostUSD", "BudgetExhausted",
		"CommitLatency", `"stat":"p90"`, "Commits", "CommitConflicts", "Invocations", "Throttles", "ConcurrentExecutions"} {
		assert.Contains(t, d, m, "the function's dashboard shows %s", m)
	}
	f := body(fargateStack(t))
	for _, m := range []string{"visible + inflight", "DeadLettered", "Halts", "RowsCommitted", "CommitConflicts", "RowsFailed", "RowsInvalidOutput",
		"ModelThrottled", "BudgetExhausted", "CPUUtilization", "MemoryUtilization", `filter level = \"ERROR\"`} {
		assert.Contains(t, f, m, "the service's dashboard shows %s", m)
	}
	assert.NotContains(t, f, "CommitLatency", "the run service has no EMF metrics")
}

// TestNetwork: public subnets with public IPs and nothing else by default;
// private subnets with VPC endpoints (and a NAT gateway only for the model
// endpoint) when fargateNetwork=private. Neither admits any ingress.
func TestNetwork(t *testing.T) {
	pub := fargateStack(t)
	svc := pub.props(t, "AWS::ECS::Service")["NetworkConfiguration"].(obj)["AwsvpcConfiguration"].(obj)
	assert.Equal(t, "ENABLED", svc["AssignPublicIp"])
	subnets, _ := json.Marshal(svc["Subnets"])
	assert.Contains(t, string(subnets), "VpcpublicSubnet")
	check(t, "public: no NAT gateway", func() { pub.template.ResourceCountIs(jsii.String("AWS::EC2::NatGateway"), jsii.Number(0)) })
	check(t, "public: no endpoint", func() { pub.template.ResourceCountIs(jsii.String("AWS::EC2::VPCEndpoint"), jsii.Number(0)) })
	check(t, "public: two subnets", func() { pub.template.ResourceCountIs(jsii.String("AWS::EC2::Subnet"), jsii.Number(2)) })

	priv := altStack(t)
	svc = priv.props(t, "AWS::ECS::Service")["NetworkConfiguration"].(obj)["AwsvpcConfiguration"].(obj)
	assert.Equal(t, "DISABLED", svc["AssignPublicIp"])
	subnets, _ = json.Marshal(svc["Subnets"])
	assert.Contains(t, string(subnets), "VpcprivateSubnet")
	check(t, "private: one NAT gateway, for the model endpoint", func() {
		priv.template.ResourceCountIs(jsii.String("AWS::EC2::NatGateway"), jsii.Number(1))
	})
	var services []string
	for _, r := range priv.resources("AWS::EC2::VPCEndpoint") {
		b, _ := json.Marshal(r["Properties"].(obj)["ServiceName"])
		services = append(services, string(b))
	}
	for _, want := range []string{".s3", ".sqs", ".secretsmanager", ".ecr.api", ".ecr.dkr", ".logs"} {
		assert.True(t, slices.ContainsFunc(services, func(s string) bool { return strings.Contains(s, want) }), "endpoint %s in %v", want, services)
	}
	for id, sg := range priv.resources("AWS::EC2::SecurityGroup") {
		if strings.HasPrefix(id, "Vpc") && strings.Contains(id, "Endpoint") {
			vpc := priv.logicalID(priv.stack.Vpc.Node().DefaultChild().(awscdk.CfnElement))
			assert.Equal(t, []any{obj{"CidrIp": obj{"Fn::GetAtt": []any{vpc, "CidrBlock"}}, "Description": obj{"Fn::Join": []any{"", []any{"from ",
				obj{"Fn::GetAtt": []any{vpc, "CidrBlock"}}, ":443"}}}, "FromPort": 443.0, "IpProtocol": "tcp", "ToPort": 443.0}},
				sg["Properties"].(obj)["SecurityGroupIngress"], "%s: HTTPS from the VPC only", id)
		}
	}
	for _, s := range []*synthesized{pub, priv} {
		for id, sg := range s.resources("AWS::EC2::SecurityGroup") {
			if strings.HasPrefix(id, "RunService") {
				assert.NotContains(t, sg["Properties"].(obj), "SecurityGroupIngress", "the tasks admit nothing")
			}
		}
		check(t, "rejected traffic is logged", func() {
			s.template.HasResourceProperties(jsii.String("AWS::EC2::FlowLog"), like(obj{"TrafficType": "REJECT"}))
		})
	}
}

// TestBuildImage: the run image, built without a daemon, is arm64 Linux,
// runs the binary as an unprivileged user, holds the config and job specs
// and nothing else, and is the same bytes when built again.
func TestBuildImage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Compute = ComputeFargate
	asset, err := PrepareAsset(cfg, repoRootT(t), filepath.Join(dir, "asset"), fakeBuild)
	require.NoError(t, err)
	require.NotNil(t, asset.Image)
	assert.Equal(t, filepath.Join(dir, "asset-image.tar"), asset.Image.Tarball, "beside the Lambda folder, not in it")

	img, err := tarball.ImageFromPath(asset.Image.Tarball, nil)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "arm64", cf.Architecture)
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, []string{"/enricher"}, cf.Config.Entrypoint)
	assert.Equal(t, []string{"run", "--log-format", "json"}, cf.Config.Cmd)
	assert.Equal(t, "65532:65532", cf.Config.User)
	assert.Contains(t, cf.Config.Env, "ENRICHER_CONFIG=/etc/enricher/enricher.yaml")
	id, err := img.ConfigName()
	require.NoError(t, err)
	assert.Equal(t, id.String(), asset.Image.ID)

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		files[h.Name] = h
		contents[h.Name], err = io.ReadAll(tr)
		require.NoError(t, err)
	}
	assert.ElementsMatch(t, []string{"tmp/", "etc/", "etc/enricher/", "etc/enricher/jobs/", "enricher", "etc/enricher/enricher.yaml", "etc/enricher/jobs/sentiment.yaml"},
		keys(files))
	assert.Equal(t, int64(0o755), files["enricher"].Mode)
	assert.Equal(t, int64(0o1777), files["tmp/"].Mode)
	bin, err := os.ReadFile(filepath.Join(asset.Dir, "bootstrap"))
	require.NoError(t, err)
	assert.Equal(t, bin, contents["enricher"])
	conf, err := RuntimeConfig(cfg)
	require.NoError(t, err)
	assert.Equal(t, conf, contents["etc/enricher/enricher.yaml"])

	first, err := os.ReadFile(asset.Image.Tarball)
	require.NoError(t, err)
	again, err := BuildImage(asset, filepath.Join(dir, "again.tar"))
	require.NoError(t, err)
	second, err := os.ReadFile(again.Tarball)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(first, second), "the same asset gives the same tarball (and asset hash)")

	// No image for Lambda only, or when fargateImage names one.
	cfg.Compute = ComputeLambda
	asset, err = PrepareAsset(cfg, repoRootT(t), filepath.Join(dir, "lambda"), fakeBuild)
	require.NoError(t, err)
	assert.Nil(t, asset.Image)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestFargateImageConfig(t *testing.T) {
	t.Parallel()
	digest := "@sha256:" + strings.Repeat("ab", 32)
	_, err := LoadConfig(map[string]any{"compute": "fargate", "fargateImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/enricher:latest"}, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not pinned by digest")
	cfg, err := LoadConfig(map[string]any{"compute": "fargate", "fargateImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/enricher" + digest}, t.TempDir())
	require.NoError(t, err)
	m := ecrImage.FindStringSubmatch(cfg.FargateImage)
	require.NotNil(t, m)
	assert.Equal(t, []string{"123456789012", "eu-west-1", "team/enricher", digest[1:]}, m[1:])
	_, err = LoadConfig(map[string]any{"compute": "fargate", "fargateNetwork": "vpn"}, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `context: fargateNetwork: "vpn" is not public or private`)
	_, err = LoadConfig(map[string]any{"modelProvider": "azure"}, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "context: modelProvider: is only used with modelEndpoint")
	// The stack keeps no list of providers: any name goes through to the
	// consumer, which refuses one it does not know when it starts.
	cfg, err = LoadConfig(map[string]any{"modelProvider": "mistral", "modelEndpoint": "https://x", "modelDeployment": "d"}, t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, "mistral", cfg.Provider())
	_, err = LoadConfig(map[string]any{"modelProvider": "Azure OpenAI", "modelEndpoint": "https://x", "modelDeployment": "d"}, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `context: modelProvider: "Azure OpenAI" is not a provider name`)
}
