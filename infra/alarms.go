package main

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/jsii-runtime-go"

	mn "github.com/socialdata/enricher/internal/metricnames"
)

// Alarm thresholds that are not settings (README, "Runbook").
const (
	// commitConflictsAlarm: conflicts in 15 minutes above which writers
	// are fighting over a target (one now and then is a re-plan).
	commitConflictsAlarm = 5
	// modelThrottledPeriods: consecutive 5-minute periods with 429s before
	// the model's quota is too small for the load (a burst is retried).
	modelThrottledPeriods = 3
)

// Metrics of the Lambda handler's EMF documents and of the run service's
// metric filters (internal/metricnames); each one exists without
// dimensions (what the alarms read) and, for the EMF figures of a job,
// with the dimension Job.
const (
	mRecords, mFailedRecords, mDeadLettered, mHalts            = mn.Records, mn.FailedRecords, mn.DeadLettered, mn.Halts
	mRowsOk, mRowsSkipped, mRowsFailed, mRowsInvalid           = mn.RowsOk, mn.RowsSkipped, mn.RowsFailed, mn.RowsInvalidOutput
	mCommits, mCommitConflicts, mCommitLatency, mRowsCommitted = mn.Commits, mn.CommitConflicts, mn.CommitLatency, mn.RowsCommitted
	mModelRequests, mModelThrottled, mModelServerErrors        = mn.ModelRequests, mn.ModelThrottled, mn.ModelServerErrors
	mPromptTokens, mCompletionTokens, mCachedTokens, mCost     = mn.PromptTokens, mn.CompletionTokens, mn.CachedTokens, mn.CostUSD
	mBudgetExhausted, mBatchesSubmitted                        = mn.BudgetExhausted, mn.BatchesSubmitted
)

// Periods, in minutes.
const fiveMinutes, fifteenMinutes, oneMinute float64 = 5, 15, 1

// metric is one of the consumer's metrics, without dimensions.
func (s *Stack) metric(name, stat string, minutes float64) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:  jsii.String(s.metricNamespace()),
		MetricName: jsii.String(name),
		Statistic:  jsii.String(stat),
		Period:     awscdk.Duration_Minutes(jsii.Number(minutes)),
	})
}

func (s *Stack) sum(name string) awscloudwatch.Metric { return s.metric(name, "Sum", fiveMinutes) }

// alarms: every alarm notifies the Alarms topic (encrypted with its own
// KMS key, which CloudWatch may use to publish) when it fires and when it
// clears. The README's runbook says what each means and what answers it.
func (s *Stack) alarms() {
	stage := s.Config.Stage
	s.AlarmsKey = awskms.NewKey(s.Stack, jsii.String("AlarmsKey"), &awskms.KeyProps{
		Description:       jsii.String(fmt.Sprintf("enricher (%s): encrypts the alarm topic", stage)),
		EnableKeyRotation: jsii.Bool(true),
	})
	// CloudWatch alarms publish to an encrypted topic only if the key lets
	// the service encrypt with it, for this account's alarms.
	s.AlarmsKey.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchAlarmsPublish"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"), // in a key policy: this key
		Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}},
	}), nil)
	s.Alarms = awssns.NewTopic(s.Stack, jsii.String("Alarms"), &awssns.TopicProps{
		DisplayName: jsii.String(fmt.Sprintf("enricher %s alarms", stage)),
		EnforceSSL:  jsii.Bool(true),
		MasterKey:   s.AlarmsKey,
	})
	action := awscloudwatchactions.NewSnsAction(s.Alarms)
	add := func(id string, m awscloudwatch.IMetric, threshold float64, periods, datapoints float64, what string) {
		a := awscloudwatch.NewAlarm(s.Stack, jsii.String(id), &awscloudwatch.AlarmProps{
			Metric:             m,
			AlarmDescription:   jsii.String(fmt.Sprintf("enricher (%s): %s (README, Runbook: %s)", stage, what, id)),
			Threshold:          jsii.Number(threshold),
			ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD,
			EvaluationPeriods:  jsii.Number(periods),
			DatapointsToAlarm:  jsii.Number(datapoints),
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
		a.AddAlarmAction(action)
		a.AddOkAction(action)
	}
	minute := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(oneMinute)), Statistic: jsii.String("Maximum")}

	// Queues, whatever the compute.
	add("DeadLettersAlarm", s.DeadLetters.MetricApproximateNumberOfMessagesVisible(minute), 0, 1, 1,
		"messages in the dead-letter queue; see enricher dlq peek")
	add("OldestMessageAlarm", s.Queue.MetricApproximateAgeOfOldestMessage(minute), float64(s.Config.OldestMessageAlarmSeconds), 5, 3,
		fmt.Sprintf("the oldest snapshot event has waited over %d s; the consumer is behind or stuck", s.Config.OldestMessageAlarmSeconds))
	// The consumer's own metrics: EMF from the function, metric filters
	// from the run service, the same names.
	add("HaltsAlarm", s.sum(mHalts), 0, 1, 1,
		"the consumer halted: every message would fail alike (model key or request refused, token budget spent)")
	add("CommitConflictsAlarm", s.metric(mCommitConflicts, "Sum", fifteenMinutes), commitConflictsAlarm, 1, 1,
		fmt.Sprintf("more than %d commit conflicts in 15 minutes: writers fight over a target", commitConflictsAlarm))
	add("RowsFailedAlarm", awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression:   jsii.String("FILL(failed, 0) + FILL(invalid, 0)"),
		UsingMetrics: &map[string]awscloudwatch.IMetric{"failed": s.sum(mRowsFailed), "invalid": s.sum(mRowsInvalid)},
		Label:        jsii.String("rows failed or invalid_output"),
		Period:       awscdk.Duration_Minutes(jsii.Number(fiveMinutes)),
	}), 0, 1, 1, "rows written with status failed or invalid_output; see enricher status and replay --only-status")
	add("ModelThrottledAlarm", s.sum(mModelThrottled), 0, modelThrottledPeriods, modelThrottledPeriods,
		fmt.Sprintf("the model answered 429 in %d five-minute periods in a row: its quota (RPM/TPM) is below the load", modelThrottledPeriods))
	add("BudgetExhaustedAlarm", s.sum(mBudgetExhausted), 0, 1, 1,
		"a job's token budget (model.max_tokens_total) stopped it")
	if s.Function == nil {
		return
	}
	sum5 := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(fiveMinutes)), Statistic: jsii.String("Sum")}
	add("ConsumerErrorsAlarm", s.Function.MetricErrors(sum5), 0, 1, 1,
		"the consumer function failed whole invocations: their batches come back and count receives")
	add("ConsumerThrottlesAlarm", s.Function.MetricThrottles(sum5), 0, 1, 1,
		"the consumer function was throttled: throttled messages come back and count receives towards maxReceiveCount")
}

// dashboard Enricher-STAGE: the backlog and the DLQ; for the function (EMF)
// rows per status, model usage and cost, commits and their latency; for
// the service (metric filters) its figures, CPU and memory.
func (s *Stack) dashboard(runLogs awslogs.LogGroup) {
	minute := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(oneMinute)), Statistic: jsii.String("Maximum")}
	graph := func(title string, left ...awscloudwatch.IMetric) awscloudwatch.IWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &left, Width: jsii.Number(8)})
	}
	labelled := func(m awscloudwatch.Metric, label string) awscloudwatch.IMetric {
		return m.With(&awscloudwatch.MetricOptions{Label: jsii.String(label)})
	}
	d := awscloudwatch.NewDashboard(s.Stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(StackName(s.Config.Stage)),
	})
	d.AddWidgets(
		graph("Backlog: messages visible + in flight", s.backlog(),
			s.Queue.MetricApproximateNumberOfMessagesVisible(minute), s.Queue.MetricApproximateNumberOfMessagesNotVisible(minute)),
		graph("Source queue: age of oldest message (s)", s.Queue.MetricApproximateAgeOfOldestMessage(minute)),
		graph("Dead-letter queue: messages, and dead-lettered per 5 min",
			s.DeadLetters.MetricApproximateNumberOfMessagesVisible(minute), s.sum(mDeadLettered)),
	)
	if s.Function != nil {
		sum := &awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(fiveMinutes)), Statistic: jsii.String("Sum")}
		rowsByJob := awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
			Expression: jsii.String(fmt.Sprintf(`SEARCH('{%s,%s} MetricName="%s" OR MetricName="%s"', 'Sum', 300)`, s.metricNamespace(), mn.Dimension, mRowsFailed, mRowsInvalid)),
			Label:      jsii.String("by job"),
			Period:     awscdk.Duration_Minutes(jsii.Number(fiveMinutes)),
		})
		d.AddWidgets(
			graph("Rows per status (per 5 min)", labelled(s.sum(mRowsOk), "ok"), labelled(s.sum(mRowsSkipped), "skipped"),
				labelled(s.sum(mRowsFailed), "failed"), labelled(s.sum(mRowsInvalid), "invalid_output")),
			graph("Rows failed or invalid_output, by job", rowsByJob),
			graph("Records, failed records, halts (per 5 min)", s.sum(mRecords), s.sum(mFailedRecords), s.sum(mHalts)),
		)
		d.AddWidgets(
			graph("Model requests, 429s, server errors (per 5 min)", s.sum(mModelRequests), s.sum(mModelThrottled), s.sum(mModelServerErrors)),
			graph("Model tokens (per 5 min)", s.sum(mPromptTokens), s.sum(mCachedTokens), s.sum(mCompletionTokens)),
			graph("Estimated model cost (USD per hour), budget stops", s.metric(mCost, "Sum", 60), s.metric(mBudgetExhausted, "Sum", 60)),
		)
		d.AddWidgets(
			graph("Commit latency (ms)", labelled(s.metric(mCommitLatency, "p50", fiveMinutes), "p50"),
				labelled(s.metric(mCommitLatency, "p90", fiveMinutes), "p90"), labelled(s.metric(mCommitLatency, "Maximum", fiveMinutes), "max")),
			graph("Commits and conflicts (per 5 min)", s.sum(mCommits), s.sum(mCommitConflicts), s.sum(mBatchesSubmitted)),
			graph("Function: invocations, errors, throttles, concurrency", s.Function.MetricInvocations(sum), s.Function.MetricErrors(sum),
				s.Function.MetricThrottles(sum), s.Function.Metric(jsii.String("ConcurrentExecutions"), minute)),
		)
		d.AddWidgets(
			graph("Function: duration (ms)", s.Function.MetricDuration(&awscloudwatch.MetricOptions{Statistic: jsii.String("p90")}),
				s.Function.MetricDuration(&awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum")})),
		)
	}
	if s.Service != nil {
		d.AddWidgets(
			graph("Run service: messages, retried, dead-lettered, halts (per 5 min)", s.sum(mRecords), s.sum(mFailedRecords), s.sum(mDeadLettered), s.sum(mHalts)),
			graph("Run service: commits, rows committed, conflicts (per 5 min)", s.sum(mCommits), s.sum(mRowsCommitted), s.sum(mCommitConflicts)),
			graph("Run service: rows failed and invalid_output, model 429s, budget stops (per 5 min)",
				s.sum(mRowsFailed), s.sum(mRowsInvalid), s.sum(mModelThrottled), s.sum(mBudgetExhausted)),
			graph("Run service: CPU and memory (%)", s.Service.MetricCpuUtilization(nil), s.Service.MetricMemoryUtilization(nil)),
		)
		d.AddWidgets(
			awscloudwatch.NewLogQueryWidget(&awscloudwatch.LogQueryWidgetProps{
				Title:         jsii.String("Run service: recent errors"),
				LogGroupNames: &[]*string{runLogs.LogGroupName()},
				QueryLines:    jsii.Strings("fields @timestamp, msg, err", `filter level = "ERROR"`, "sort @timestamp desc", "limit 20"),
				Width:         jsii.Number(16),
			}),
		)
	}
}
