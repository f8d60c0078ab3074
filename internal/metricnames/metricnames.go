// Package metricnames names the consumer's CloudWatch metrics: those the
// Lambda handler writes as Embedded Metric Format documents
// (consumer/pipeline.EMFMetrics) and those the run service's log metric
// filters make (infra), which the CDK app's alarms and dashboard read. One
// list, so that an alarm cannot watch a metric nobody writes. Plain data:
// infra may import it.
package metricnames

// DefaultNamespace is the namespace when none is configured
// (ENRICHER_METRICS_NAMESPACE).
const DefaultNamespace = "Enricher"

// Dimension is the dimension of a job's metrics. Every metric is also
// written without dimensions, which is what the alarms read.
const Dimension = "Job"

// A batch's metrics (one Lambda invocation): records received, records
// handed back, records sent to the dead-letter queue, and 1 when a halt
// stopped the batch.
const (
	Records       = "Records"
	FailedRecords = "FailedRecords"
	DeadLettered  = "DeadLettered"
	Halts         = "Halts"
)

// A job's metrics in a batch: rows written per status, commits (of rows,
// and of Batch API ranges recorded as pending; not the bookkeeping commits
// that record a batch's ID or a new attempt), commit conflicts, Batch API
// batches submitted, the model's usage over the batch, 1 when its token
// budget ran out, and one latency per commit.
const (
	RowsOk            = "RowsOk"
	RowsSkipped       = "RowsSkipped"
	RowsFailed        = "RowsFailed"
	RowsInvalidOutput = "RowsInvalidOutput"
	Commits           = "Commits"
	CommitConflicts   = "CommitConflicts"
	BatchesSubmitted  = "BatchesSubmitted"
	ModelRequests     = "ModelRequests"
	ModelThrottled    = "ModelThrottled"
	ModelServerErrors = "ModelServerErrors"
	PromptTokens      = "PromptTokens"
	CompletionTokens  = "CompletionTokens"
	CachedTokens      = "CachedTokens"
	BudgetExhausted   = "BudgetExhausted"
	CostUSD           = "CostUSD"
	CommitLatency     = "CommitLatency"
)

// RowsCommitted is the run service's rows per commit (a log metric filter
// on "chunk committed"); the Lambda handler writes rows per status instead.
const RowsCommitted = "RowsCommitted"

// Filter is a CloudWatch Logs metric filter: the metric Name gets Value
// (a number, or a $.selector of the matching line) for every JSON log line
// that Pattern matches. Every filter publishes in FilterUnit, the unit of
// the same metric in the EMF documents: an alarm on a metric published in
// two units behaves unpredictably (CloudWatch PutMetricAlarm).
type Filter struct {
	Name, Pattern, Value string
}

// FilterUnit is the unit of every RunFilters metric.
const FilterUnit = "Count"

// RunFilters turn the JSON log lines of `enricher run` (the Fargate
// service) into metrics of the same names as the Lambda handler's EMF
// documents, without dimensions, so that one alarm watches both computes.
// The patterns name the log lines and attributes they count on;
// cmd/enricher's TestRunLogLinesFeedTheMetricFilters evaluates them on the
// lines of a real run.
var RunFilters = []Filter{
	{Records, `{ $.msg = "message done" || $.msg = "message dead-lettered" || $.msg = "message released*" }`, "1"},
	{FailedRecords, `{ $.msg = "message released for retry" }`, "1"},
	{DeadLettered, `{ $.msg = "message dead-lettered" }`, "1"},
	{Halts, `{ $.msg = "message released: halting" }`, "1"},
	// A commit of rows, or of a Batch API range recorded as pending.
	{Commits, `{ $.msg = "chunk committed" || $.msg = "batch range recorded" }`, "1"},
	{RowsCommitted, `{ $.msg = "chunk committed" }`, "$.rows"},
	// One line per conflict the pipeline counts (Result.Conflicts, the
	// EMF CommitConflicts), and the batch collector's conflicts, which only
	// this filter counts.
	{CommitConflicts, `{ $.msg = "target commit conflict*" }`, "1"},
	// Every commit of rows logs "chunk committed", a collected batch's too
	// ("batch collected" after it repeats the counts: not counted again).
	{RowsFailed, `{ $.msg = "chunk committed" && $.counts.failed > 0 }`, "$.counts.failed"},
	{RowsInvalidOutput, `{ $.msg = "chunk committed" && $.counts.invalid_output > 0 }`, "$.counts.invalid_output"},
	{ModelThrottled, `{ $.msg = "model throttled" }`, "1"},
	// A report whose job ran out of budget, and the batch collector's
	// failure for the same reason, carry budget_exhausted.
	{BudgetExhausted, `{ $.budget_exhausted IS TRUE }`, "1"},
}
