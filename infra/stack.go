package main

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsglue"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdaeventsources"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3assets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/socialdata/enricher/internal/iamactions"
)

// Environment variables of the consumer. cmd/enricher reads ENRICHER_CONFIG,
// ENRICHER_DLQ_URL (Lambda), ENRICHER_QUEUE_URL (run) and
// ENRICHER_API_KEY_SECRET (the model key's secret, both modes).
// ENRICHER_MODEL_BASE_URL and ENRICHER_MODEL_DEPLOYMENT carry the model
// settings that enricher run gets as --base-url and --deployment; Lambda
// mode has no flags and does not read them yet (see README).
const (
	envConfig          = "ENRICHER_CONFIG"
	envDLQURL          = "ENRICHER_DLQ_URL"
	envQueueURL        = "ENRICHER_QUEUE_URL"
	envStage           = "ENRICHER_STAGE"
	envModelBaseURL    = "ENRICHER_MODEL_BASE_URL"
	envModelDeployment = "ENRICHER_MODEL_DEPLOYMENT"
	envAPIKeySecret    = "ENRICHER_API_KEY_SECRET"
	envWarehouse       = "ENRICHER_WAREHOUSE"
)

// warehousePrefix is the folder of the warehouse bucket that holds the
// Iceberg tables; the consumer may touch nothing else in it.
const warehousePrefix = "warehouse"

// defaultFargateImage runs the enricher run service: the AWS CLI image
// (multi-arch, with a shell and CA certificates) downloads the consumer
// asset's files from the CDK asset bucket and execs the static binary, so
// no container image is built.
const defaultFargateImage = "public.ecr.aws/aws-cli/aws-cli:2.22.0"

// Stack is the enricher deployment. The fields are the constructs other
// code (and the tests) refer to; Function and Service are nil when the
// compute choice leaves them out, Bucket and Database without Glue.
type Stack struct {
	Stack       awscdk.Stack
	Config      Config
	Queue       awssqs.Queue
	DeadLetters awssqs.Queue
	Secret      awssecretsmanager.ISecret
	Bucket      awss3.Bucket
	Database    awsglue.CfnDatabase
	Function    awslambda.Function
	Service     awsecs.FargateService
	Operator    awsiam.ManagedPolicy
	Alarms      awssns.Topic

	// createdSecret is Secret when this stack created it (nil when
	// imported): only then may the stack set its resource policy.
	createdSecret awssecretsmanager.Secret
}

// StackName is the CloudFormation stack of a stage.
func StackName(stage string) string { return "Enricher-" + stage }

// NewStack defines everything one stage of the enricher needs. cfg must be
// valid (LoadConfig) and asset prepared for it (PrepareAsset).
func NewStack(scope constructs.Construct, cfg Config, asset *Asset) *Stack {
	st := awscdk.NewStack(scope, jsii.String(StackName(cfg.Stage)), &awscdk.StackProps{
		Description: jsii.String(fmt.Sprintf("enricher (%s): snapshot events -> language model -> Iceberg, exactly once", cfg.Stage)),
	})
	awscdk.Tags_Of(st).Add(jsii.String("project"), jsii.String("enricher"), nil)
	awscdk.Tags_Of(st).Add(jsii.String("stage"), jsii.String(cfg.Stage), nil)
	s := &Stack{Stack: st, Config: cfg}

	s.queues()
	s.secret()
	if cfg.Catalog == CatalogGlue {
		s.warehouse()
	}
	var consumers []awsiam.IRole
	if cfg.Lambda() {
		consumers = append(consumers, s.function(asset))
	}
	var fargateLogs awslogs.LogGroup
	if cfg.Fargate() {
		var role awsiam.IRole
		role, fargateLogs = s.service(asset)
		consumers = append(consumers, role)
	}
	for _, role := range consumers {
		s.grantConsumer(role)
	}
	s.onlyConsumersReadSecret(consumers)
	s.operator()
	s.alarms()
	s.dashboard(fargateLogs)
	s.outputs()
	return s
}

// queues: the source queue and its dead-letter queue, same type, both
// encrypted (SSE-SQS) and TLS only. The DLQ keeps messages for the SQS
// maximum, longer than the source queue.
func (s *Stack) queues() {
	cfg := s.Config
	props := func() *awssqs.QueueProps {
		p := &awssqs.QueueProps{
			Encryption: awssqs.QueueEncryption_SQS_MANAGED,
			EnforceSSL: jsii.Bool(true),
		}
		if cfg.FIFO() {
			p.Fifo = jsii.Bool(true)
		}
		return p
	}
	dlq := props()
	dlq.RetentionPeriod = awscdk.Duration_Days(jsii.Number(dlqRetentionDays))
	s.DeadLetters = awssqs.NewQueue(s.Stack, jsii.String("DeadLetterQueue"), dlq)

	src := props()
	src.RetentionPeriod = awscdk.Duration_Days(jsii.Number(cfg.RetentionDays))
	src.VisibilityTimeout = awscdk.Duration_Seconds(jsii.Number(cfg.VisibilityTimeout()))
	src.ReceiveMessageWaitTime = awscdk.Duration_Seconds(jsii.Number(20))
	src.DeadLetterQueue = &awssqs.DeadLetterQueue{Queue: s.DeadLetters, MaxReceiveCount: jsii.Number(cfg.MaxReceiveCount)}
	if cfg.FIFO() {
		// Producers set the deduplication id (TABLE:SNAPSHOT:JOB); one
		// message group per table, so high-throughput mode scales with
		// the number of tables.
		src.ContentBasedDeduplication = jsii.Bool(false)
		src.DeduplicationScope = awssqs.DeduplicationScope_MESSAGE_GROUP
		src.FifoThroughputLimit = awssqs.FifoThroughputLimit_PER_MESSAGE_GROUP_ID
	}
	s.Queue = awssqs.NewQueue(s.Stack, jsii.String("SourceQueue"), src)
}

var completeSecretARN = regexp.MustCompile(`-[A-Za-z0-9]{6}$`)

// secret: the model API key, created with a generated placeholder (put the
// real key after the first deploy) or imported by ARN.
func (s *Stack) secret() {
	arn := s.Config.ModelSecretARN
	switch {
	case arn == "":
		s.createdSecret = awssecretsmanager.NewSecret(s.Stack, jsii.String("ModelApiKey"), &awssecretsmanager.SecretProps{
			Description: jsii.String(fmt.Sprintf("enricher (%s): the language model's API key. Created with a placeholder: put the key with aws secretsmanager put-secret-value.", s.Config.Stage)),
		})
		s.Secret = s.createdSecret
	case completeSecretARN.MatchString(arn):
		s.Secret = awssecretsmanager.Secret_FromSecretCompleteArn(s.Stack, jsii.String("ModelApiKey"), jsii.String(arn))
	default:
		s.Secret = awssecretsmanager.Secret_FromSecretPartialArn(s.Stack, jsii.String("ModelApiKey"), jsii.String(arn))
	}
}

// onlyConsumersReadSecret denies reading a created secret's value to every
// principal but the consumers' roles (an imported secret's policy belongs to
// whoever created it).
func (s *Stack) onlyConsumersReadSecret(consumers []awsiam.IRole) {
	if s.createdSecret == nil {
		return
	}
	arns := make([]*string, len(consumers))
	for i, r := range consumers {
		arns[i] = r.RoleArn()
	}
	s.createdSecret.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("OnlyTheConsumerReadsTheKey"),
		Effect:     awsiam.Effect_DENY,
		Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
		Actions:    jsii.Strings("secretsmanager:GetSecretValue"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{"StringNotEquals": map[string]any{"aws:PrincipalArn": arns}},
	}))
}

// warehouse: the bucket for table files and the Glue database (the
// Iceberg namespace) whose location is the bucket's warehouse/DATABASE.
func (s *Stack) warehouse() {
	s.Bucket = awss3.NewBucket(s.Stack, jsii.String("Warehouse"), &awss3.BucketProps{
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		Versioned:         jsii.Bool(true),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			// Iceberg never rewrites a file: old versions are only the
			// leftovers of deletes and overwrites.
			NoncurrentVersionExpiration:         awscdk.Duration_Days(jsii.Number(30)),
			AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(7)),
		}},
	})
	db := s.Config.GlueDatabase
	s.Database = awsglue.NewCfnDatabase(s.Stack, jsii.String("Catalog"), &awsglue.CfnDatabaseProps{
		CatalogId: awscdk.Aws_ACCOUNT_ID(),
		DatabaseInput: &awsglue.CfnDatabase_DatabaseInputProperty{
			Name:        jsii.String(db),
			Description: jsii.String(fmt.Sprintf("enricher (%s): Iceberg tables of namespace %s", s.Config.Stage, db)),
			LocationUri: jsii.String(s.warehouseURL() + "/" + db),
		},
	})
	s.Database.ApplyRemovalPolicy(awscdk.RemovalPolicy_RETAIN, nil)
}

func (s *Stack) warehouseURL() string {
	return "s3://" + *s.Bucket.BucketName() + "/" + warehousePrefix
}

// function: the consumer as a Go Lambda on arm64, fed by the source queue
// with partial batch failures.
func (s *Stack) function(asset *Asset) awsiam.IRole {
	cfg := s.Config
	logs := awslogs.NewLogGroup(s.Stack, jsii.String("ConsumerLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	env := s.consumerEnv()
	env[envConfig] = jsii.String(path.Join(lambdaTaskRoot, configFile))
	env[envDLQURL] = s.DeadLetters.QueueUrl()
	s.Function = awslambda.NewFunction(s.Stack, jsii.String("Consumer"), &awslambda.FunctionProps{
		Description:  jsii.String(fmt.Sprintf("enricher (%s): SQS snapshot events -> enriched Iceberg rows", cfg.Stage)),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String(bootstrapFile),
		Code:         awslambda.Code_FromAsset(jsii.String(asset.Dir), nil),
		Timeout:      awscdk.Duration_Seconds(jsii.Number(cfg.LambdaTimeoutSeconds)),
		MemorySize:   jsii.Number(cfg.LambdaMemoryMB),
		Environment:  &env,
		LogGroup:     logs,
	})
	s.Function.AddEventSource(awslambdaeventsources.NewSqsEventSource(s.Queue, &awslambdaeventsources.SqsEventSourceProps{
		BatchSize:               jsii.Number(cfg.BatchSize),
		MaxConcurrency:          jsii.Number(cfg.MaxConcurrency),
		ReportBatchItemFailures: jsii.Bool(true),
	}))
	// Poison messages go straight to the DLQ (ENRICHER_DLQ_URL).
	s.DeadLetters.GrantSendMessages(s.Function)
	s.batchMetricFilters(logs)
	return s.Function.Role()
}

// consumerEnv is the environment both compute choices share.
func (s *Stack) consumerEnv() map[string]*string {
	cfg := s.Config
	env := map[string]*string{
		envStage:        jsii.String(cfg.Stage),
		envAPIKeySecret: s.Secret.SecretArn(),
	}
	if cfg.ModelEndpoint != "" {
		env[envModelBaseURL] = jsii.String(cfg.ModelEndpoint)
		env[envModelDeployment] = jsii.String(cfg.ModelDeployment)
	}
	if s.Bucket != nil {
		env[envWarehouse] = jsii.String(s.warehouseURL())
	}
	return env
}

// metricNamespace holds the figures of the consumer's per-batch log line.
func (s *Stack) metricNamespace() string { return "Enricher/" + s.Config.Stage }

// batchMetricFilters turn the Lambda handler's JSON log line per batch
// ("lambda batch done") into CloudWatch metrics.
func (s *Stack) batchMetricFilters(logs awslogs.LogGroup) {
	for _, m := range []struct{ id, name, field string }{
		{"RecordsMetric", "Records", "records"},
		{"FailedRecordsMetric", "FailedRecords", "failed"},
		{"CommitsMetric", "Commits", "commits"},
		{"CommitConflictsMetric", "CommitConflicts", "commit_conflicts"},
	} {
		awslogs.NewMetricFilter(s.Stack, jsii.String(m.id), &awslogs.MetricFilterProps{
			LogGroup:        logs,
			FilterPattern:   awslogs.FilterPattern_Literal(jsii.String(`{ $.msg = "lambda batch done" }`)),
			MetricNamespace: jsii.String(s.metricNamespace()),
			MetricName:      jsii.String(m.name),
			MetricValue:     jsii.String("$." + m.field),
			DefaultValue:    jsii.Number(0),
		})
	}
}

func (s *Stack) batchMetric(name string) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:  jsii.String(s.metricNamespace()),
		MetricName: jsii.String(name),
		Statistic:  jsii.String("Sum"),
		Period:     awscdk.Duration_Minutes(jsii.Number(5)),
	})
}

// service: enricher run on ECS Fargate (arm64), scaling on the queue's
// backlog. It returns the task role and the log group.
func (s *Stack) service(asset *Asset) (awsiam.IRole, awslogs.LogGroup) {
	cfg := s.Config
	vpc := awsec2.NewVpc(s.Stack, jsii.String("Vpc"), &awsec2.VpcProps{
		// Public subnets only, no NAT gateway: the tasks only call AWS
		// APIs and the model endpoint, with a public IP and no ingress.
		MaxAzs:      jsii.Number(2),
		NatGateways: jsii.Number(0),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{{
			Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24),
		}},
	})
	cluster := awsecs.NewCluster(s.Stack, jsii.String("Cluster"), &awsecs.ClusterProps{Vpc: vpc})
	task := awsecs.NewFargateTaskDefinition(s.Stack, jsii.String("RunTask"), &awsecs.FargateTaskDefinitionProps{
		Cpu:            jsii.Number(cfg.FargateCPU),
		MemoryLimitMiB: jsii.Number(cfg.FargateMemoryMB),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
	})
	// The task downloads the consumer asset's files (each a file asset:
	// uploaded as is) and execs the binary: SIGTERM reaches enricher run.
	const dir = "/tmp/enricher"
	script := []string{"set -eu"}
	for i, f := range asset.Files {
		a := awss3assets.NewAsset(s.Stack, jsii.String(fmt.Sprintf("RunFile%d", i)), &awss3assets.AssetProps{
			Path: jsii.String(asset.Dir + "/" + f),
		})
		a.GrantRead(task.TaskRole())
		dst := path.Join(dir, f)
		script = append(script, fmt.Sprintf("mkdir -p %s && aws s3 cp --only-show-errors s3://%s/%s %s",
			path.Dir(dst), *a.S3BucketName(), *a.S3ObjectKey(), dst))
	}
	run := fmt.Sprintf("exec %s/%s run --log-format json", dir, bootstrapFile)
	if cfg.ModelEndpoint != "" {
		// enricher run takes the model settings as flags (the key comes
		// from ENRICHER_API_KEY_SECRET).
		run += fmt.Sprintf(" --base-url %s --deployment %s", shellQuote(cfg.ModelEndpoint), shellQuote(cfg.ModelDeployment))
	}
	script = append(script, fmt.Sprintf("chmod +x %s/%s", dir, bootstrapFile), run)
	logs := awslogs.NewLogGroup(s.Stack, jsii.String("RunLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	env := s.consumerEnv()
	env[envConfig] = jsii.String(path.Join(dir, configFile))
	env[envQueueURL] = s.Queue.QueueUrl()
	env["AWS_REGION"] = awscdk.Aws_REGION()
	image := cfg.FargateImage
	if image == "" {
		image = defaultFargateImage
	}
	task.AddContainer(jsii.String("enricher"), &awsecs.ContainerDefinitionOptions{
		Image:       awsecs.ContainerImage_FromRegistry(jsii.String(image), nil),
		EntryPoint:  jsii.Strings("/bin/sh", "-c"),
		Command:     jsii.Strings(strings.Join(script, "\n")),
		Environment: &env,
		Logging: awsecs.LogDrivers_AwsLogs(&awsecs.AwsLogDriverProps{
			StreamPrefix: jsii.String("run"),
			LogGroup:     logs,
		}),
		// enricher run gives work in flight its shutdown grace (30 s by
		// default) after SIGTERM.
		StopTimeout: awscdk.Duration_Seconds(jsii.Number(60)),
	})
	s.Service = awsecs.NewFargateService(s.Stack, jsii.String("RunService"), &awsecs.FargateServiceProps{
		Cluster:           cluster,
		TaskDefinition:    task,
		DesiredCount:      jsii.Number(cfg.FargateMinTasks),
		AssignPublicIp:    jsii.Bool(true),
		VpcSubnets:        &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC},
		CircuitBreaker:    &awsecs.DeploymentCircuitBreaker{Rollback: jsii.Bool(true)},
		MinHealthyPercent: jsii.Number(0),
		MaxHealthyPercent: jsii.Number(200),
	})
	scaling := s.Service.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
		MinCapacity: jsii.Number(cfg.FargateMinTasks),
		MaxCapacity: jsii.Number(cfg.FargateMaxTasks),
	})
	// Backlog = visible + in flight: a task working on the last message
	// keeps the service from scaling in under it.
	scaling.ScaleOnMetric(jsii.String("QueueBacklog"), &awsapplicationautoscaling.BasicStepScalingPolicyProps{
		Metric: s.backlog(),
		ScalingSteps: &[]*awsapplicationautoscaling.ScalingInterval{
			{Upper: jsii.Number(0), Change: jsii.Number(-1)},
			{Lower: jsii.Number(1), Change: jsii.Number(1)},
			{Lower: jsii.Number(20), Change: jsii.Number(2)},
			{Lower: jsii.Number(100), Change: jsii.Number(4)},
		},
		AdjustmentType: awsapplicationautoscaling.AdjustmentType_CHANGE_IN_CAPACITY,
		Cooldown:       awscdk.Duration_Minutes(jsii.Number(2)),
	})
	// enricher run finds the DLQ from the source queue's RedrivePolicy and
	// sends poison messages there.
	s.Queue.GrantConsumeMessages(task.TaskRole())
	s.DeadLetters.GrantSendMessages(task.TaskRole())
	return task.TaskRole(), logs
}

// shellQuote quotes a word for sh.
func shellQuote(w string) string {
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

func (s *Stack) backlog() awscloudwatch.IMetric {
	period := awscdk.Duration_Minutes(jsii.Number(1))
	return awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String("visible + inflight"),
		UsingMetrics: &map[string]awscloudwatch.IMetric{
			"visible":  s.Queue.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: period, Statistic: jsii.String("Maximum")}),
			"inflight": s.Queue.MetricApproximateNumberOfMessagesNotVisible(&awscloudwatch.MetricOptions{Period: period, Statistic: jsii.String("Maximum")}),
		},
		Label:  jsii.String("backlog"),
		Period: period,
	})
}

// grantConsumer gives a consumer role the warehouse prefix, the Glue
// database and its tables, and the model key; the queues are granted where
// the compute is defined. The S3 and Glue actions are those of
// internal/iamactions, which cmd/enricher's TestGrantedActionsCoverEveryCall
// checks against the requests the commands make.
func (s *Stack) grantConsumer(role awsiam.IRole) {
	s.Secret.GrantRead(role, nil)
	if s.Bucket == nil {
		return
	}
	objects := s.Bucket.ArnForObjects(jsii.String(warehousePrefix + "/*"))
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("WarehouseFiles"),
		Actions:   jsii.Strings(iamactions.WarehouseObjects()...),
		Resources: &[]*string{objects},
	}))
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("WarehouseList"),
		Actions:    jsii.Strings(iamactions.WarehouseBucket()...),
		Resources:  &[]*string{s.Bucket.BucketArn()},
		Conditions: &map[string]any{"StringLike": map[string]any{"s3:prefix": []string{warehousePrefix, warehousePrefix + "/*"}}},
	}))
	db := s.Config.GlueDatabase
	arn := func(resource, name string) *string {
		c := &awscdk.ArnComponents{Service: jsii.String("glue"), Resource: jsii.String(resource)}
		if name != "" {
			c.ResourceName = jsii.String(name)
		}
		return s.Stack.FormatArn(c)
	}
	// CreateDatabase on the database itself lets iceberg-go's "create the
	// namespace when missing" find it already there.
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("GlueCatalog"),
		Actions:   jsii.Strings(iamactions.GlueCatalog()...),
		Resources: &[]*string{arn("catalog", ""), arn("database", db), arn("table", db+"/*")},
	}))
}

// operator: a managed policy (and a role in this account carrying it) for
// enricher dlq stats|peek|redrive, and nothing more.
func (s *Stack) operator() {
	s.Operator = awsiam.NewManagedPolicy(s.Stack, jsii.String("DlqOperatorPolicy"), &awsiam.ManagedPolicyProps{
		Description: jsii.String(fmt.Sprintf("enricher (%s): inspect and redrive the dead-letter queue (enricher dlq stats|peek|redrive)", s.Config.Stage)),
		Statements: &[]awsiam.PolicyStatement{
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid: jsii.String("InspectAndDrainDeadLetters"),
				Actions: jsii.Strings("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage",
					"sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
					"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:CancelMessageMoveTask"),
				Resources: &[]*string{s.DeadLetters.QueueArn()},
			}),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:       jsii.String("RedriveToSourceQueue"),
				Actions:   jsii.Strings("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"),
				Resources: &[]*string{s.Queue.QueueArn()},
			}),
		},
	})
	role := awsiam.NewRole(s.Stack, jsii.String("DlqOperatorRole"), &awsiam.RoleProps{
		Description:        jsii.String(fmt.Sprintf("enricher (%s): operators on call assume it to run enricher dlq", s.Config.Stage)),
		AssumedBy:          awsiam.NewAccountRootPrincipal(),
		ManagedPolicies:    &[]awsiam.IManagedPolicy{s.Operator},
		MaxSessionDuration: awscdk.Duration_Hours(jsii.Number(1)),
	})
	awscdk.NewCfnOutput(s.Stack, jsii.String("DlqOperatorRoleArn"), &awscdk.CfnOutputProps{Value: role.RoleArn()})
	awscdk.NewCfnOutput(s.Stack, jsii.String("DlqOperatorPolicyArn"), &awscdk.CfnOutputProps{Value: s.Operator.ManagedPolicyArn()})
}

// alarms: anything in the DLQ, and the oldest source message getting old.
// Both notify the Alarms topic (subscribe to it after deploying).
func (s *Stack) alarms() {
	s.Alarms = awssns.NewTopic(s.Stack, jsii.String("Alarms"), &awssns.TopicProps{
		DisplayName: jsii.String(fmt.Sprintf("enricher %s alarms", s.Config.Stage)),
		EnforceSSL:  jsii.Bool(true),
	})
	action := awscloudwatchactions.NewSnsAction(s.Alarms)
	dead := s.DeadLetters.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{
		Period: awscdk.Duration_Minutes(jsii.Number(1)), Statistic: jsii.String("Maximum"),
	}).CreateAlarm(s.Stack, jsii.String("DeadLettersAlarm"), &awscloudwatch.CreateAlarmOptions{
		AlarmDescription:   jsii.String(fmt.Sprintf("enricher (%s): messages in the dead-letter queue; see enricher dlq peek", s.Config.Stage)),
		Threshold:          jsii.Number(0),
		ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD,
		EvaluationPeriods:  jsii.Number(1),
		TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
	})
	old := s.Queue.MetricApproximateAgeOfOldestMessage(&awscloudwatch.MetricOptions{
		Period: awscdk.Duration_Minutes(jsii.Number(1)), Statistic: jsii.String("Maximum"),
	}).CreateAlarm(s.Stack, jsii.String("OldestMessageAlarm"), &awscloudwatch.CreateAlarmOptions{
		AlarmDescription: jsii.String(fmt.Sprintf("enricher (%s): the oldest snapshot event has waited over %d s; the consumer is behind or stuck",
			s.Config.Stage, s.Config.OldestMessageAlarmSeconds)),
		Threshold:          jsii.Number(s.Config.OldestMessageAlarmSeconds),
		ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD,
		EvaluationPeriods:  jsii.Number(5),
		DatapointsToAlarm:  jsii.Number(3),
		TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
	})
	for _, a := range []awscloudwatch.Alarm{dead, old} {
		a.AddAlarmAction(action)
		a.AddOkAction(action)
	}
}

// dashboard: queues, the function, the per-batch figures and the service.
func (s *Stack) dashboard(runLogs awslogs.LogGroup) {
	minute := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(1)), Statistic: jsii.String("Maximum")}
	graph := func(title string, left ...awscloudwatch.IMetric) awscloudwatch.IWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &left, Width: jsii.Number(8)})
	}
	d := awscloudwatch.NewDashboard(s.Stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(StackName(s.Config.Stage)),
	})
	d.AddWidgets(
		graph("Source queue: messages", s.Queue.MetricApproximateNumberOfMessagesVisible(minute), s.Queue.MetricApproximateNumberOfMessagesNotVisible(minute)),
		graph("Source queue: age of oldest message (s)", s.Queue.MetricApproximateAgeOfOldestMessage(minute)),
		graph("Dead-letter queue: messages", s.DeadLetters.MetricApproximateNumberOfMessagesVisible(minute)),
	)
	if s.Function != nil {
		sum := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(5)), Statistic: jsii.String("Sum")}
		d.AddWidgets(
			graph("Consumer: invocations, errors, throttles", s.Function.MetricInvocations(sum), s.Function.MetricErrors(sum), s.Function.MetricThrottles(sum)),
			graph("Consumer: duration (ms)", s.Function.MetricDuration(&awscloudwatch.MetricOptions{Statistic: jsii.String("p90")}),
				s.Function.MetricDuration(&awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum")})),
			graph("Consumer: records, failed records, commits, conflicts (per 5 min)",
				s.batchMetric("Records"), s.batchMetric("FailedRecords"), s.batchMetric("Commits"), s.batchMetric("CommitConflicts")),
		)
	}
	if s.Service != nil {
		d.AddWidgets(
			graph("Run service: CPU and memory (%)", s.Service.MetricCpuUtilization(nil), s.Service.MetricMemoryUtilization(nil)),
			graph("Run service: backlog (visible + in flight)", s.backlog()),
			awscloudwatch.NewLogQueryWidget(&awscloudwatch.LogQueryWidgetProps{
				Title:         jsii.String("Run service: recent errors"),
				LogGroupNames: &[]*string{runLogs.LogGroupName()},
				QueryLines:    jsii.Strings("fields @timestamp, msg, error", `filter level = "ERROR"`, "sort @timestamp desc", "limit 20"),
				Width:         jsii.Number(8),
			}),
		)
	}
}

func (s *Stack) outputs() {
	out := func(id string, v *string) {
		awscdk.NewCfnOutput(s.Stack, jsii.String(id), &awscdk.CfnOutputProps{Value: v})
	}
	out("QueueUrl", s.Queue.QueueUrl())
	out("DeadLetterQueueUrl", s.DeadLetters.QueueUrl())
	out("ModelApiKeySecretArn", s.Secret.SecretArn())
	out("AlarmTopicArn", s.Alarms.TopicArn())
	if s.Bucket != nil {
		out("WarehouseBucketName", s.Bucket.BucketName())
		out("GlueDatabaseName", jsii.String(s.Config.GlueDatabase))
	}
	if s.Function != nil {
		out("ConsumerFunctionName", s.Function.FunctionName())
	}
	if s.Service != nil {
		out("RunServiceName", s.Service.ServiceName())
	}
}
