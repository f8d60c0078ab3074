package storage

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/apache/iceberg-go/table"
)

// PropBatchesPrefix starts the table property that lists the Batch API
// batches of a job that are submitted and not yet committed:
// enricher.batches.<job> holds a JSON array of PendingBatch, oldest first.
//
// The list is the job's durable promise about rows it has paid for. A
// batch is added in a commit of the target that moves no watermark before
// its rows' message is let go; its rows are committed, and it is removed
// from the list, in one commit that moves the watermark to its end. The
// ranges of the list follow each other: the first starts at the watermark,
// each next one where the one before ends. A batch can take up to a day,
// longer than a queue may hold a message: the list, not the message, is
// what brings its rows in (`enricher batches collect`, or `run`).
const PropBatchesPrefix = "enricher.batches."

// BatchesProperty is the name of the pending batch list of job.
func BatchesProperty(job string) string { return PropBatchesPrefix + job }

// PendingBatch is one range of source rows sent to the Batch API and not
// yet written to the target.
type PendingBatch struct {
	// From and To are the range: From is the watermark (or the To of the
	// batch before) and To the cursor after its last row.
	From Cursor `json:"from"`
	To   Cursor `json:"to"`
	// Rows is the number of source rows of the range; Texts the distinct
	// texts sent for them.
	Rows  int64 `json:"rows"`
	Texts int   `json:"texts"`
	// RowsPerRequest is how many texts a request line of the first attempt
	// holds: with the range's texts it makes the lines again when the
	// answers are collected (the input file cannot be downloaded back).
	RowsPerRequest int `json:"rows_per_request"`
	// SpecVersion is the job spec's version at submission.
	SpecVersion string    `json:"spec_version"`
	Created     time.Time `json:"created"`
	// Attempts are the batches sent for the range: the first for every
	// text, each next one for the texts still unanswered.
	Attempts []BatchAttempt `json:"attempts,omitempty"`
}

// BatchAttempt is one batch of a range.
type BatchAttempt struct {
	// InputFile is the uploaded request file. It is recorded before the
	// batch is created: a batch found later with this input file is this
	// attempt's, so a crash between creating it and recording its ID does
	// not create a second one (paying twice).
	InputFile string `json:"input_file"`
	// Batch is the batch's ID, empty until recorded.
	Batch string `json:"batch,omitempty"`
	// Lines and Texts are the request lines and texts of the attempt.
	Lines int `json:"lines"`
	Texts int `json:"texts"`
	// Claimed is when a process last took the creation of the batch on
	// itself; another one takes it over only after a while.
	Claimed time.Time `json:"claimed"`
	// Refused is why the provider refused to create the batch (a 400: a
	// file over its limits, an enqueued-token quota): the attempt answered
	// nothing, its rows are asked again or written failed with it.
	Refused string `json:"refused,omitempty"`
}

// Ended reports whether the attempt can answer nothing more than it has:
// it was refused.
func (a BatchAttempt) Ended() bool { return a.Refused != "" }

// Empty reports whether the range holds no rows to send: a snapshot that
// added nothing, queued behind pending batches so that the watermark moves
// past it in order.
func (b PendingBatch) Empty() bool { return len(b.Attempts) == 0 }

// Last is the latest attempt (the zero BatchAttempt for an empty range).
func (b PendingBatch) Last() BatchAttempt {
	if len(b.Attempts) == 0 {
		return BatchAttempt{}
	}
	return b.Attempts[len(b.Attempts)-1]
}

// PendingBatches reads the pending batch list of job on tgt (nil: none).
func PendingBatches(tgt *table.Table, job string) ([]PendingBatch, error) {
	out, err := readList[PendingBatch](tgt, BatchesProperty(job))
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(out); i++ {
		if out[i].From != out[i-1].To {
			return nil, fmt.Errorf("table %s: property %s: batch %d starts at %s, not where the one before ends (%s)",
				tableName(tgt), BatchesProperty(job), i+1, out[i].From, out[i-1].To)
		}
	}
	return out, nil
}

// BatchesProps are the property changes that record list as job's pending
// batches: set as JSON, or removed when the list is empty. They go into a
// Commit's SetProps and RemoveProps.
func BatchesProps(job string, list []PendingBatch) (set map[string]string, remove []string, err error) {
	return listProps(BatchesProperty(job), list)
}

// readList reads a JSON list from a table property (nil when absent).
func readList[T any](tgt *table.Table, prop string) ([]T, error) {
	v, ok := tgt.Properties()[prop]
	if !ok || v == "" {
		return nil, nil
	}
	var out []T
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf("table %s: property %s: %w", tableName(tgt), prop, err)
	}
	return out, nil
}

// listProps are the property changes that record list in prop: set as
// JSON, or removed when the list is empty.
func listProps[T any](prop string, list []T) (set map[string]string, remove []string, err error) {
	if len(list) == 0 {
		return nil, []string{prop}, nil
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", prop, err)
	}
	return map[string]string{prop: string(raw)}, nil, nil
}

// PropReplayBatchesPrefix starts the table property that lists the Batch
// API batches of a job's replays not yet committed:
// enricher.replay-batches.<job> holds a JSON array of ReplayBatch. An entry
// is added before its batch is created and removed in the commit that
// replaces its rows, so a replay run again after a crash finds its batches
// instead of paying for them twice.
const PropReplayBatchesPrefix = "enricher.replay-batches."

// ReplayBatchesProperty is the name of the replay batch list of job.
func ReplayBatchesProperty(job string) string { return PropReplayBatchesPrefix + job }

// ReplayBatch is the batch of one commit group of a replay.
type ReplayBatch struct {
	// Replay names the replay: its source range and status filter.
	Replay string `json:"replay"`
	// Snapshots are the source snapshots of the group.
	Snapshots []int64 `json:"snapshots"`
	// Texts are the distinct texts sent; RowsPerRequest the texts per
	// request line of the first attempt.
	Texts          int            `json:"texts"`
	RowsPerRequest int            `json:"rows_per_request"`
	Created        time.Time      `json:"created"`
	Attempts       []BatchAttempt `json:"attempts"`
}

// ReplayBatches reads the replay batch list of job on tgt (nil: none).
func ReplayBatches(tgt *table.Table, job string) ([]ReplayBatch, error) {
	return readList[ReplayBatch](tgt, ReplayBatchesProperty(job))
}

// ReplayBatchesProps are the property changes that record list as job's
// replay batches (removed when empty).
func ReplayBatchesProps(job string, list []ReplayBatch) (set map[string]string, remove []string, err error) {
	return listProps(ReplayBatchesProperty(job), list)
}
