package main

import (
	"fmt"
	"path"
	"regexp"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecr"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsglue"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdaeventsources"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/socialdata/enricher/internal/iamactions"
	mn "github.com/socialdata/enricher/internal/metricnames"
)

// Environment variables of the consumer. cmd/enricher reads ENRICHER_CONFIG,
// ENRICHER_DLQ_URL (Lambda), ENRICHER_QUEUE_URL (run) and
// ENRICHER_API_KEY_SECRET (the model key's secret, both modes); the Lambda
// handler reads the model settings from ENRICHER_MODEL_PROVIDER, _BASE_URL
// and _DEPLOYMENT, which enricher run gets as flags (--provider,
// --base-url, --deployment; a provider without deployments takes the
// deployment as the model name), and writes its
// per-batch metrics (CloudWatch Embedded Metric Format) in the namespace
// ENRICHER_METRICS_NAMESPACE.
const (
	envConfig           = "ENRICHER_CONFIG"
	envDLQURL           = "ENRICHER_DLQ_URL"
	envQueueURL         = "ENRICHER_QUEUE_URL"
	envStage            = "ENRICHER_STAGE"
	envModelProvider    = "ENRICHER_MODEL_PROVIDER"
	envModelBaseURL     = "ENRICHER_MODEL_BASE_URL"
	envModelDeployment  = "ENRICHER_MODEL_DEPLOYMENT"
	envAPIKeySecret     = "ENRICHER_API_KEY_SECRET"
	envWarehouse        = "ENRICHER_WAREHOUSE"
	envMetricsNamespace = "ENRICHER_METRICS_NAMESPACE"
)

// warehousePrefix is the folder of the warehouse bucket that holds the
// Iceberg tables; the consumer may touch nothing else in it.
const warehousePrefix = "warehouse"

// Stack is the enricher deployment. The fields are the constructs other
// code (and the tests) refer to; Function and Service are nil when the
// compute choice leaves them out, Bucket and Database without Glue.
type Stack struct {
	Stack       awscdk.Stack
	Config      Config
	Asset       *Asset
	Queue       awssqs.Queue
	DeadLetters awssqs.Queue
	Secret      awssecretsmanager.ISecret
	Bucket      awss3.Bucket
	Database    awsglue.CfnDatabase
	Function    awslambda.Function
	Service     awsecs.FargateService
	Operator    awsiam.ManagedPolicy
	Alarms      awssns.Topic
	AlarmsKey   awskms.Key
	Vpc         awsec2.Vpc

	// createdSecret is Secret when this stack created it (nil when
	// imported): only then may the stack set its resource policy.
	createdSecret awssecretsmanager.Secret
	// consumers are the roles of the compute (function, task).
	consumers []awsiam.IRole
	// taskSubnets are the subnets of the run service's tasks (network).
	taskSubnets awsec2.SubnetType
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
	s := &Stack{Stack: st, Config: cfg, Asset: asset}
	// cdk-nag's AwsSolutions pack turns every unsuppressed finding of
	// level error into an error annotation, which fails cdk synth (and
	// go run ./infra, see main). Each suppression (nag.go) names the rule
	// and the reason, on the one resource it concerns.
	awscdk.Aspects_Of(st).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Reports: jsii.Bool(false)}), nil)

	s.queues()
	s.secret()
	if cfg.Catalog == CatalogGlue {
		s.warehouse()
	}
	var consumers []awsiam.IRole
	if cfg.Lambda() {
		consumers = append(consumers, s.function(asset))
	}
	var runLogs awslogs.LogGroup
	if cfg.Fargate() {
		var role awsiam.IRole
		role, runLogs = s.service(asset)
		consumers = append(consumers, role)
	}
	for _, role := range consumers {
		s.grantConsumer(role)
	}
	s.consumers = consumers
	s.onlyConsumersReadSecret(consumers)
	s.operator()
	s.alarms()
	s.dashboard(runLogs)
	s.outputs(asset)
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
		suppress(s.createdSecret, "AwsSolutions-SMG4", "the model provider issues the key; rotate it there, then put-secret-value (no rotation Lambda can)")
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
	suppress(s.Bucket, "AwsSolutions-S1", "Iceberg table files written only by the consumer roles; S3 data events in CloudTrail audit them where wanted, no log bucket per stage")
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
// with partial batch failures. Its role may write its own log group, and
// nothing else until grantConsumer.
func (s *Stack) function(asset *Asset) awsiam.IRole {
	cfg := s.Config
	logs := awslogs.NewLogGroup(s.Stack, jsii.String("ConsumerLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	role := awsiam.NewRole(s.Stack, jsii.String("ConsumerRole"), &awsiam.RoleProps{
		Description: jsii.String(fmt.Sprintf("enricher (%s): the consumer function", cfg.Stage)),
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
	})
	// In place of AWSLambdaBasicExecutionRole (every log group).
	logs.GrantWrite(role)
	env := s.consumerEnv()
	env[envConfig] = jsii.String(path.Join(lambdaTaskRoot, configFile))
	env[envDLQURL] = s.DeadLetters.QueueUrl()
	env[envMetricsNamespace] = jsii.String(s.metricNamespace())
	props := &awslambda.FunctionProps{
		Description:  jsii.String(fmt.Sprintf("enricher (%s): SQS snapshot events -> enriched Iceberg rows", cfg.Stage)),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String(bootstrapFile),
		Code:         awslambda.Code_FromAsset(jsii.String(asset.Dir), nil),
		Timeout:      awscdk.Duration_Seconds(jsii.Number(cfg.LambdaTimeoutSeconds)),
		MemorySize:   jsii.Number(cfg.LambdaMemoryMB),
		Environment:  &env,
		LogGroup:     logs,
		Role:         role,
	}
	if r := cfg.Reserved(); r > 0 {
		// At least the event source's maximum concurrency (config.go): the
		// pollers never meet a throttle of their own function, and other
		// functions' bursts cannot take the account's pool from it.
		props.ReservedConcurrentExecutions = jsii.Number(r)
	}
	s.Function = awslambda.NewFunction(s.Stack, jsii.String("Consumer"), props)
	events := awslambdaeventsources.NewSqsEventSource(s.Queue, &awslambdaeventsources.SqsEventSourceProps{
		BatchSize:               jsii.Number(cfg.BatchSize),
		MaxConcurrency:          jsii.Number(cfg.MaxConcurrency),
		ReportBatchItemFailures: jsii.Bool(true),
	})
	s.Function.AddEventSource(events)
	// Poison messages go straight to the DLQ (ENRICHER_DLQ_URL).
	s.DeadLetters.GrantSendMessages(s.Function)
	s.grantPause(role, events.EventSourceMappingArn())
	return role
}

// grantPause lets the function disable its event source mapping when a
// halt stops it (lambdabatch.Handler.Mappings). The statements are a
// policy of their own: in the role's default policy, which the function
// depends on, the mapping's ARN would make a cycle (mapping -> function
// -> policy -> mapping).
func (s *Stack) grantPause(role awsiam.IRole, mapping *string) {
	list, update := iamactions.PauseEventSource()
	p := awsiam.NewPolicy(s.Stack, jsii.String("ConsumerPausePolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{role},
		Statements: &[]awsiam.PolicyStatement{
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid: jsii.String("FindOwnEventSource"), Actions: jsii.Strings(list), Resources: jsii.Strings("*"),
			}),
			awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid: jsii.String("PauseOwnEventSource"), Actions: jsii.Strings(update), Resources: &[]*string{mapping},
			}),
		},
	})
	suppress(p, "AwsSolutions-IAM5", "lambda:ListEventSourceMappings takes no resource; the update is granted on the function's own mapping",
		"Resource::*")
}

// consumerEnv is the environment both compute choices share.
func (s *Stack) consumerEnv() map[string]*string {
	cfg := s.Config
	env := map[string]*string{
		envStage:        jsii.String(cfg.Stage),
		envAPIKeySecret: s.Secret.SecretArn(),
	}
	if cfg.ModelEndpoint != "" {
		env[envModelProvider] = jsii.String(cfg.Provider())
		env[envModelBaseURL] = jsii.String(cfg.ModelEndpoint)
		env[envModelDeployment] = jsii.String(cfg.ModelDeployment)
	}
	if s.Bucket != nil {
		env[envWarehouse] = jsii.String(s.warehouseURL())
	}
	return env
}

// modelFlags are the flags of enricher run that carry the model settings
// (the Lambda handler reads them from consumerEnv): the same three
// whatever the provider.
func (s *Stack) modelFlags() []string {
	cfg := s.Config
	if cfg.ModelEndpoint == "" {
		return nil
	}
	return []string{"--provider", cfg.Provider(), "--base-url", cfg.ModelEndpoint, "--deployment", cfg.ModelDeployment}
}

// metricNamespace holds the consumer's metrics: the Lambda handler's EMF
// documents (ENRICHER_METRICS_NAMESPACE) and the run service's metric
// filters.
func (s *Stack) metricNamespace() string { return "Enricher/" + s.Config.Stage }

// runMetricFilters turn enricher run's JSON log lines into metrics of the
// same names as the Lambda handler's EMF documents, without dimensions
// (internal/metricnames.RunFilters), so that one alarm watches both
// computes. run's model usage beyond 429s is on its Prometheus endpoint,
// not in its log lines.
func (s *Stack) runMetricFilters(logs awslogs.LogGroup) {
	for _, m := range mn.RunFilters {
		awslogs.NewMetricFilter(s.Stack, jsii.String("Run"+m.Name+"Metric"), &awslogs.MetricFilterProps{
			LogGroup:        logs,
			FilterPattern:   awslogs.FilterPattern_Literal(jsii.String(m.Pattern)),
			MetricNamespace: jsii.String(s.metricNamespace()),
			MetricName:      jsii.String(m.Name),
			MetricValue:     jsii.String(m.Value),
			Unit:            awscloudwatch.Unit_COUNT, // mn.FilterUnit
		})
	}
}

// network: the VPC of the run service. public: public subnets, a public IP
// per task (outbound only: the security group admits nothing), no NAT
// gateway and no endpoint, the cheapest that works. private: tasks in
// private subnets without public IPs; the AWS APIs they call through VPC
// endpoints (S3 gateway; SQS, Secrets Manager, ECR, CloudWatch Logs, Glue
// interface endpoints), and one NAT gateway only when something outside
// AWS must be reached (a model endpoint or a REST catalog). Rejected
// traffic goes to a flow log either way.
func (s *Stack) network() awsec2.Vpc {
	cfg := s.Config
	public := cfg.FargateNetwork == NetworkPublic
	internet := cfg.ModelEndpoint != "" || cfg.Catalog == CatalogREST
	var subnets []*awsec2.SubnetConfiguration
	nat := 0
	if public || internet {
		subnets = append(subnets, &awsec2.SubnetConfiguration{Name: jsii.String("public"), SubnetType: awsec2.SubnetType_PUBLIC, CidrMask: jsii.Number(24)})
	}
	switch {
	case public:
		s.taskSubnets = awsec2.SubnetType_PUBLIC
	case internet:
		nat = 1
		s.taskSubnets = awsec2.SubnetType_PRIVATE_WITH_EGRESS
		subnets = append(subnets, &awsec2.SubnetConfiguration{Name: jsii.String("private"), SubnetType: awsec2.SubnetType_PRIVATE_WITH_EGRESS, CidrMask: jsii.Number(24)})
	default:
		s.taskSubnets = awsec2.SubnetType_PRIVATE_ISOLATED
		subnets = append(subnets, &awsec2.SubnetConfiguration{Name: jsii.String("private"), SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED, CidrMask: jsii.Number(24)})
	}
	flowLogs := awslogs.NewLogGroup(s.Stack, jsii.String("VpcFlowLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	vpc := awsec2.NewVpc(s.Stack, jsii.String("Vpc"), &awsec2.VpcProps{
		MaxAzs:              jsii.Number(2),
		NatGateways:         jsii.Number(nat),
		SubnetConfiguration: &subnets,
		FlowLogs: &map[string]*awsec2.FlowLogOptions{"Rejected": {
			TrafficType: awsec2.FlowLogTrafficType_REJECT,
			Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, nil),
		}},
	})
	if !public {
		vpc.AddGatewayEndpoint(jsii.String("S3Endpoint"), &awsec2.GatewayVpcEndpointOptions{Service: awsec2.GatewayVpcEndpointAwsService_S3()})
		endpoints := []struct {
			id  string
			svc awsec2.InterfaceVpcEndpointAwsService
		}{
			{"SqsEndpoint", awsec2.InterfaceVpcEndpointAwsService_SQS()},
			{"SecretsManagerEndpoint", awsec2.InterfaceVpcEndpointAwsService_SECRETS_MANAGER()},
			{"EcrEndpoint", awsec2.InterfaceVpcEndpointAwsService_ECR()},
			{"EcrDockerEndpoint", awsec2.InterfaceVpcEndpointAwsService_ECR_DOCKER()},
			{"LogsEndpoint", awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS()},
		}
		if cfg.Catalog == CatalogGlue {
			endpoints = append(endpoints, struct {
				id  string
				svc awsec2.InterfaceVpcEndpointAwsService
			}{"GlueEndpoint", awsec2.InterfaceVpcEndpointAwsService_GLUE()})
		}
		for _, e := range endpoints {
			ep := vpc.AddInterfaceEndpoint(jsii.String(e.id), &awsec2.InterfaceVpcEndpointOptions{Service: e.svc, PrivateDnsEnabled: jsii.Bool(true)})
			suppress(ep, "CdkNagValidationFailure", "AwsSolutions-EC23 cannot resolve the VPC CIDR reference; the endpoint admits HTTPS from the VPC's own CIDR only (TestNetwork)")
		}
	}
	s.Vpc = vpc
	return vpc
}

// service: enricher run on ECS Fargate (arm64), scaling on the queue's
// backlog, in the image BuildImage makes of the consumer asset (or the
// digest-pinned fargateImage). It returns the task role and the log group.
func (s *Stack) service(asset *Asset) (awsiam.IRole, awslogs.LogGroup) {
	cfg := s.Config
	vpc := s.network()
	cluster := awsecs.NewCluster(s.Stack, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                 vpc,
		ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})
	task := awsecs.NewFargateTaskDefinition(s.Stack, jsii.String("RunTask"), &awsecs.FargateTaskDefinitionProps{
		Cpu:            jsii.Number(cfg.FargateCPU),
		MemoryLimitMiB: jsii.Number(cfg.FargateMemoryMB),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
	})
	image := s.runImage(asset)
	logs := awslogs.NewLogGroup(s.Stack, jsii.String("RunLogs"), &awslogs.LogGroupProps{
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	env := s.consumerEnv()
	env[envConfig] = jsii.String(path.Join(imageConfigDir, configFile))
	env[envQueueURL] = s.Queue.QueueUrl()
	env["AWS_REGION"] = awscdk.Aws_REGION()
	// The image's entry point is the binary: SIGTERM reaches enricher run.
	// --on-halt wait: a halted consumer stays up receiving nothing, where
	// an exit would have ECS start a task that receives the messages again
	// (each receive counts towards maxReceiveCount).
	command := append([]string{"run", "--log-format", "json", "--on-halt", "wait"}, s.modelFlags()...)
	task.AddContainer(jsii.String("enricher"), &awsecs.ContainerDefinitionOptions{
		Image:       image,
		Command:     jsii.Strings(command...),
		Environment: &env,
		Logging: awsecs.LogDrivers_AwsLogs(&awsecs.AwsLogDriverProps{
			StreamPrefix: jsii.String("run"),
			LogGroup:     logs,
		}),
		// enricher run gives work in flight its shutdown grace (30 s by
		// default) after SIGTERM.
		StopTimeout: awscdk.Duration_Seconds(jsii.Number(60)),
	})
	// After AddContainer, which grants the pull (a suppression reaches the
	// children that exist). GetAuthorizationToken has no resource-level permission; the pull
	// itself (BatchGetImage, GetDownloadUrlForLayer) names the repository.
	suppress(task.ObtainExecutionRole(), "AwsSolutions-IAM5", "ecr:GetAuthorizationToken allows no resource but *; the image pull is granted on its one repository", "Resource::*")
	suppress(task, "AwsSolutions-ECS2", "the variables name the config path, queue, secret ARN and model endpoint; the key itself is read from Secrets Manager at run time")
	s.runMetricFilters(logs)
	public := cfg.FargateNetwork == NetworkPublic
	s.Service = awsecs.NewFargateService(s.Stack, jsii.String("RunService"), &awsecs.FargateServiceProps{
		Cluster:           cluster,
		TaskDefinition:    task,
		DesiredCount:      jsii.Number(cfg.FargateMinTasks),
		AssignPublicIp:    jsii.Bool(public),
		VpcSubnets:        &awsec2.SubnetSelection{SubnetType: s.taskSubnets},
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

// ecrImage is an image in an ECR repository pinned by digest: account,
// region, repository, digest.
var ecrImage = regexp.MustCompile(`^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([a-z0-9._/-]+)@(sha256:[0-9a-f]{64})$`)

// runImage is the image of the run service: the one BuildImage made (a
// tarball image asset, which cdk deploy loads and pushes to the bootstrap
// ECR repository, tagged with the tarball's hash), else fargateImage by
// its digest; from ECR, the execution role may pull it from its
// repository only.
func (s *Stack) runImage(asset *Asset) awsecs.ContainerImage {
	ref := s.Config.FargateImage
	if ref == "" {
		return awsecs.ContainerImage_FromTarball(jsii.String(asset.Image.Tarball))
	}
	if m := ecrImage.FindStringSubmatch(ref); m != nil {
		repo := awsecr.Repository_FromRepositoryAttributes(s.Stack, jsii.String("RunImageRepository"), &awsecr.RepositoryAttributes{
			RepositoryName: jsii.String(m[3]),
			RepositoryArn:  s.Stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("ecr"), Account: jsii.String(m[1]), Region: jsii.String(m[2]), Resource: jsii.String("repository"), ResourceName: jsii.String(m[3])}),
		})
		return awsecs.ContainerImage_FromEcrRepository(repo, jsii.String(m[4]))
	}
	return awsecs.ContainerImage_FromRegistry(jsii.String(ref), nil)
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
	// The wildcards are the objects of the warehouse prefix and the tables
	// of the one database: iceberg-go names its files and the jobs their
	// tables.
	suppress(role, "AwsSolutions-IAM5", "table files are created under warehouse/ with generated names; tables of the one Glue database are the jobs' and created on first use",
		&cdknag.RegexAppliesTo{Regex: jsii.String(`/^Resource::` + logicalIDFinding("Warehouse") + `\.Arn>\/` + warehousePrefix + `\/\*$/`)},
		fmt.Sprintf("Resource::arn:<AWS::Partition>:glue:<AWS::Region>:<AWS::AccountId>:table/%s/*", db))
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

func (s *Stack) outputs(asset *Asset) {
	out := func(id string, v *string) {
		awscdk.NewCfnOutput(s.Stack, jsii.String(id), &awscdk.CfnOutputProps{Value: v})
	}
	out("QueueUrl", s.Queue.QueueUrl())
	out("DeadLetterQueueUrl", s.DeadLetters.QueueUrl())
	out("ModelApiKeySecretArn", s.Secret.SecretArn())
	out("AlarmTopicArn", s.Alarms.TopicArn())
	// For the deny an imported secret's owner may add (README).
	roles := make([]*string, len(s.consumers))
	for i, r := range s.consumers {
		roles[i] = r.RoleArn()
	}
	out("ConsumerRoleArns", awscdk.Fn_Join(jsii.String(","), &roles))
	if s.Bucket != nil {
		out("WarehouseBucketName", s.Bucket.BucketName())
		out("GlueDatabaseName", jsii.String(s.Config.GlueDatabase))
	}
	if s.Function != nil {
		out("ConsumerFunctionName", s.Function.FunctionName())
	}
	if s.Service != nil {
		out("RunServiceName", s.Service.ServiceName())
		if asset.Image != nil && s.Config.FargateImage == "" {
			// The image id (config digest) docker load and the registry
			// show: the image the task runs, whatever tag it was pushed as.
			out("RunImageId", jsii.String(asset.Image.ID))
		}
	}
}
