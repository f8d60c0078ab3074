package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"
)

// PropFailurePrefix + job is the target table property in which a
// consumer records the last time the job failed an event, so that status
// (run anywhere, also for a Lambda consumer that keeps no state) can say
// which job is failing and why. It is a record, not a state: a commit
// after it means the job has since moved on.
const PropFailurePrefix = "enricher.last-failure."

// maxFailureText bounds the error text a failure record keeps.
const maxFailureText = 1000

// JobFailure is a job's last recorded failure.
type JobFailure struct {
	At time.Time `json:"at"`
	// Class is how the consumer took it: retry, retry_after, permanent
	// (dead-lettered) or halt (the consumer stopped).
	Class string `json:"class"`
	// Reason is the dead-letter reason of a permanent failure.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error"`
	// Snapshot is the source snapshot of the event that failed.
	Snapshot int64 `json:"snapshot_id"`
}

// RecordFailure writes f as job's last failure on the target table name,
// in a commit of its own (retried on a conflict). The error text is cut
// to 1000 bytes. A missing target is not an error: there is nothing to
// record on yet.
func (c *Catalog) RecordFailure(ctx context.Context, name, job string, f JobFailure) error {
	if len(f.Error) > maxFailureText {
		cut := maxFailureText
		for cut > 0 && !utf8.RuneStart(f.Error[cut]) {
			cut--
		}
		f.Error = f.Error[:cut] + "…"
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("record the failure of job %s: %w", job, err)
	}
	err = c.onReloaded(ctx, name, ConflictBackoff(0, 0), func(ctx context.Context, tbl *table.Table) error {
		txn := tbl.NewTransaction()
		if err := txn.SetProperties(iceberg.Properties{PropFailurePrefix + job: string(b)}); err != nil {
			return fmt.Errorf("table %s: record the failure of job %s: %w", name, job, err)
		}
		if _, err := txn.Commit(ctx); err != nil {
			if isConflict(err) {
				return retry.RetryableError(fmt.Errorf("table %s: record the failure of job %s: %w: %w", name, job, ErrConflict, err))
			}
			return fmt.Errorf("table %s: record the failure of job %s: %w", name, job, err)
		}
		return nil
	})
	if errors.Is(err, ErrTableNotFound) {
		return nil
	}
	return err
}

// LastFailure reads job's last recorded failure from tbl (false: none).
func LastFailure(tbl *table.Table, job string) (JobFailure, bool, error) {
	v, ok := tbl.Properties()[PropFailurePrefix+job]
	if !ok {
		return JobFailure{}, false, nil
	}
	var f JobFailure
	if err := json.Unmarshal([]byte(v), &f); err != nil {
		return JobFailure{}, false, fmt.Errorf("table %s: property %s%s: %w", tableName(tbl), PropFailurePrefix, job, err)
	}
	return f, true, nil
}
