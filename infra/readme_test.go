package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's section "Deploying on AWS (CDK)" and its runbook, checked
// against the code and the synthesised templates: a setting, default,
// alarm, variable or output the README promises must be there.

func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRootT(t), "README.md"))
	require.NoError(t, err)
	text := string(data)
	i := strings.Index(text, "\n"+heading+"\n")
	require.GreaterOrEqual(t, i, 0, "README has %q", heading)
	level := strings.Index(heading, " ") // the number of #
	rest := text[i+len(heading)+2:]
	for j := 0; j < len(rest); {
		k := strings.Index(rest[j:], "\n#")
		if k < 0 {
			break
		}
		j += k + 1
		if n := strings.Index(rest[j:], " "); n > 0 && n <= level && strings.Trim(rest[j:j+n], "#") == "" {
			return rest[:j]
		}
	}
	return rest
}

// TestReadmeSettingsTable: every setting is in the table with the default
// DefaultConfig has, and the table names no setting that does not exist.
func TestReadmeSettingsTable(t *testing.T) {
	section := readmeSection(t, "## Deploying on AWS (CDK)")
	defaults := map[string]any{}
	b, err := json.Marshal(DefaultConfig())
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &defaults))
	documented := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| ((?:`[a-zA-Z]+`(?:, )?)+) \\|\\s*([^|]*?)\\s*\\|")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		names := strings.Split(strings.ReplaceAll(m[1], "`", ""), ", ")
		cell := strings.TrimSpace(m[2])
		var values []string
		if exact := regexp.MustCompile("^`[^`]*`(, `[^`]*`)*$"); exact.MatchString(cell) {
			values = strings.Split(strings.ReplaceAll(cell, "`", ""), ", ")
		}
		for i, name := range names {
			documented[name] = true
			if name == contextConfigFile {
				continue
			}
			_, known := configKeys()[name]
			assert.True(t, known, "README documents setting %q, which does not exist", name)
			want := fmt.Sprint(defaults[name])
			if list, ok := defaults[name].([]any); ok {
				parts := make([]string, len(list))
				for i, p := range list {
					parts[i] = fmt.Sprint(p)
				}
				want = strings.Join(parts, ",")
			}
			switch {
			case cell == "":
				assert.Contains(t, []string{"", "0", "<nil>"}, want, "README says %s has no default", name)
			case len(values) == len(names):
				assert.Equal(t, want, values[i], "README's default of %s", name)
			}
		}
	}
	for k := range configKeys() {
		assert.True(t, documented[k], "setting %s is not in the README's table", k)
	}
}

// TestReadmeRunbookCoversEveryAlarm: the runbook has an entry for every
// alarm that notifies the topic, in any deployment shape, and no other.
func TestReadmeRunbookCoversEveryAlarm(t *testing.T) {
	runbook := readmeSection(t, "### Runbook: what each alarm means")
	var entries []string
	for _, m := range regexp.MustCompile("(?m)^- \\*\\*`([A-Za-z]+Alarm)`\\*\\*").FindAllStringSubmatch(runbook, -1) {
		entries = append(entries, m[1])
	}
	alarms := map[string]bool{}
	for _, stack := range allStacks {
		s := stack(t)
		for id, r := range s.resources("AWS::CloudWatch::Alarm") {
			if b, _ := json.Marshal(r["Properties"].(obj)["AlarmActions"]); strings.Contains(string(b), `"Ref":"Alarms`) {
				alarms[id[:len(id)-8]] = true
			}
		}
	}
	assert.ElementsMatch(t, keys(alarms), entries, "runbook entries vs the stacks' alarms")
	for _, cmd := range []string{"enricher dlq peek", "enricher dlq redrive", "enricher status", "--only-status", "enricher maintain", "enricher resync", "enricher batches list", "enricher batches collect"} {
		assert.Contains(t, strings.Join(strings.Fields(runbook), " "), cmd, "the runbook says when to run %s", cmd)
	}
}

func env(t *testing.T, s *synthesized, typ string) obj {
	t.Helper()
	p := s.props(t, typ)
	if typ == "AWS::Lambda::Function" {
		return p["Environment"].(obj)["Variables"].(obj)
	}
	out := obj{}
	for _, e := range p["ContainerDefinitions"].([]any)[0].(obj)["Environment"].([]any) {
		out[e.(obj)["Name"].(string)] = e.(obj)["Value"]
	}
	return out
}

// TestReadmeStackPromises goes through "What a stack holds": what the
// other tests do not assert already is asserted here (the others are
// named).
func TestReadmeStackPromises(t *testing.T) {
	t.Run("queues: 20 s long polls, the DLQ keeps 14 days", func(t *testing.T) { // TestQueues: SSE, TLS, redrive
		for _, stack := range allStacks {
			s := stack(t)
			src, dlq := s.queueIDs(t)
			qs := s.resources("AWS::SQS::Queue")
			assert.Equal(t, 20.0, qs[src]["Properties"].(obj)["ReceiveMessageWaitTimeSeconds"])
			assert.Equal(t, 14*86400.0, qs[dlq]["Properties"].(obj)["MessageRetentionPeriod"])
		}
	})
	t.Run("consumer: metrics namespace, own log group only, no managed policy", func(t *testing.T) { // TestConsumerFunction, TestReservedConcurrency
		for _, s := range []*synthesized{defaultStack(t), altStack(t)} {
			assert.Equal(t, "Enricher/"+s.stack.Config.Stage, env(t, s, "AWS::Lambda::Function")["ENRICHER_METRICS_NAMESPACE"])
			role := s.logicalID(s.stack.Function.Role().Node().DefaultChild().(awscdk.CfnElement))
			assert.NotContains(t, s.resources("AWS::IAM::Role")[role]["Properties"].(obj), "ManagedPolicyArns", "no AWSLambdaBasicExecutionRole")
			for _, p := range s.policies(t) {
				for _, st := range p.statements {
					if slices.Contains(strs(st["Action"]), "logs:PutLogEvents") && slices.Contains(p.roles, role) {
						assert.Regexp(t, `^\{"Fn::GetAtt":\["ConsumerLogs[0-9A-F]{8}","Arn"\]\}$`, strs(st["Resource"])[0], "its own log group")
						assert.Len(t, strs(st["Resource"]), 1)
					}
				}
			}
		}
	})
	t.Run("fargate: Container Insights", func(t *testing.T) { // TestFargateService, TestNetwork, TestBuildImage
		for _, s := range []*synthesized{altStack(t), fargateStack(t)} {
			assert.Equal(t, []any{obj{"Name": "containerInsights", "Value": "enabled"}}, s.props(t, "AWS::ECS::Cluster")["ClusterSettings"])
		}
	})
	t.Run("model settings in both computes", func(t *testing.T) {
		alt := altStack(t)
		for _, typ := range []string{"AWS::Lambda::Function", "AWS::ECS::TaskDefinition"} {
			e := env(t, alt, typ)
			assert.Equal(t, "azure", e["ENRICHER_MODEL_PROVIDER"], typ)
			assert.Equal(t, "https://example.openai.azure.com/", e["ENRICHER_MODEL_BASE_URL"], typ)
			assert.Equal(t, "gpt-4o-mini", e["ENRICHER_MODEL_DEPLOYMENT"], typ)
			assert.Equal(t, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:enricher/model-key-AbCdEf", e["ENRICHER_API_KEY_SECRET"], typ)
		}
		e := env(t, fargateStack(t), "AWS::ECS::TaskDefinition")
		assert.Equal(t, "openai", e["ENRICHER_MODEL_PROVIDER"])
		assert.Equal(t, "llama-3.1-8b", e["ENRICHER_MODEL_DEPLOYMENT"], "whatever the provider")
		assert.NotContains(t, e, "ENRICHER_MODEL_NAME")
		e = env(t, defaultStack(t), "AWS::Lambda::Function")
		for _, k := range []string{"ENRICHER_MODEL_PROVIDER", "ENRICHER_MODEL_BASE_URL", "ENRICHER_MODEL_DEPLOYMENT", "ENRICHER_MODEL_NAME"} {
			assert.NotContains(t, e, k, "no model endpoint: the job specs' own")
		}
	})
	t.Run("warehouse: ENRICHER_WAREHOUSE, old versions expire", func(t *testing.T) { // TestWarehouse, TestConsumerPermissions
		for _, s := range []*synthesized{defaultStack(t), fargateStack(t)} {
			typ := "AWS::Lambda::Function"
			if s.stack.Function == nil {
				typ = "AWS::ECS::TaskDefinition"
			}
			b, _ := json.Marshal(env(t, s, typ)["ENRICHER_WAREHOUSE"])
			assert.Regexp(t, `^\{"Fn::Join":\["",\["s3://",\{"Ref":"Warehouse[0-9A-F]{8}"\},"/warehouse"\]\]\}$`, string(b))
			rules, _ := json.Marshal(s.props(t, "AWS::S3::Bucket")["LifecycleConfiguration"])
			assert.Contains(t, string(rules), `"NoncurrentDays":30`)
			assert.Contains(t, string(rules), `"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":7}`)
		}
	})
	t.Run("outputs", func(t *testing.T) {
		want := map[string][]string{
			"dev": {"QueueUrl", "DeadLetterQueueUrl", "ModelApiKeySecretArn", "AlarmTopicArn", "ConsumerRoleArns", "WarehouseBucketName",
				"GlueDatabaseName", "ConsumerFunctionName", "DlqOperatorRoleArn", "DlqOperatorPolicyArn"},
			"alt": {"QueueUrl", "DeadLetterQueueUrl", "ModelApiKeySecretArn", "AlarmTopicArn", "ConsumerRoleArns", "ConsumerFunctionName",
				"RunServiceName", "RunImageId", "DlqOperatorRoleArn", "DlqOperatorPolicyArn"},
			"run": {"QueueUrl", "DeadLetterQueueUrl", "ModelApiKeySecretArn", "AlarmTopicArn", "ConsumerRoleArns", "WarehouseBucketName",
				"GlueDatabaseName", "RunServiceName", "RunImageId", "DlqOperatorRoleArn", "DlqOperatorPolicyArn"},
		}
		for _, stack := range allStacks {
			s := stack(t)
			assert.ElementsMatch(t, want[s.stack.Config.Stage], keys(s.json["Outputs"].(obj)), s.stack.Config.Stage)
		}
		s := altStack(t)
		assert.Equal(t, s.stack.Asset.Image.ID, s.json["Outputs"].(obj)["RunImageId"].(obj)["Value"])
		roles, _ := json.Marshal(s.json["Outputs"].(obj)["ConsumerRoleArns"])
		for _, r := range s.consumerRoles(t) {
			assert.Contains(t, string(roles), r)
		}
	})
	t.Run("tags", func(t *testing.T) {
		for _, stack := range allStacks {
			s := stack(t)
			tags := s.props(t, "AWS::SNS::Topic")["Tags"]
			assert.ElementsMatch(t, []any{obj{"Key": "project", "Value": "enricher"}, obj{"Key": "stage", "Value": s.stack.Config.Stage}}, tags)
		}
	})
}

// TestImportedSecret: with an imported secret the stack creates no secret
// and no resource policy (it cannot restrict who else reads it), and
// grants GetSecretValue on that one ARN to the consumer roles only.
func TestImportedSecret(t *testing.T) {
	s := altStack(t)
	arn := s.stack.Config.ModelSecretARN
	assert.Empty(t, s.resources("AWS::SecretsManager::Secret"))
	assert.Empty(t, s.resources("AWS::SecretsManager::ResourcePolicy"), "the imported secret's policy is its owner's")
	consumers := s.consumerRoles(t)
	for _, p := range s.policies(t) {
		for _, st := range p.statements {
			if !slices.Contains(strs(st["Action"]), "secretsmanager:GetSecretValue") {
				continue
			}
			assert.Subset(t, consumers, p.roles, "only consumer roles read the key")
			assert.Equal(t, []string{arn}, strs(st["Resource"]), "that one secret")
			assert.ElementsMatch(t, []string{"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}, strs(st["Action"]))
		}
	}
	section := readmeSection(t, "## Deploying on AWS (CDK)")
	for _, claim := range []string{"cannot change the resource policy", "can only grant its own roles", "ConsumerRoleArns", "kms:Decrypt"} {
		assert.Contains(t, strings.Join(strings.Fields(section), " "), claim)
	}
}
