package consumer

import (
	"errors"
	"fmt"
)

// Reasons a message is dead-lettered. They travel with the message as an
// attribute so that operators can filter on them.
const (
	ReasonBadMessage       = "bad_message"
	ReasonUnknownTable     = "unknown_table"
	ReasonUnknownJob       = "unknown_job"
	ReasonTableNotFound    = "table_not_found"
	ReasonSnapshotNotFound = "snapshot_not_found"
	ReasonSchemaMismatch   = "schema_mismatch"
	ReasonHistory          = "history_diverged"
	ReasonMaxReceives      = "max_receives"
)

// PermanentError marks a failure that no retry can fix: the message goes
// to the dead-letter queue at once, with Reason.
type PermanentError struct {
	Reason string
	Err    error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a permanent failure with a reason.
func Permanent(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &PermanentError{Reason: reason, Err: err}
}

// Permanentf is Permanent with a formatted error.
func Permanentf(reason, format string, args ...any) error {
	return Permanent(reason, fmt.Errorf(format, args...))
}

// IsPermanent returns the reason of a permanent error in err's chain.
func IsPermanent(err error) (string, bool) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe.Reason, true
	}
	return "", false
}
