package consumer

import (
	"errors"
	"fmt"
	"time"
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
	ReasonHistoryExpired   = "source_history_expired"
	ReasonMaxReceives      = "max_receives"
)

// The four classes of failure, and what the runtime (Consumer, and through
// it `run`, Lambda and the demo) does with the message of each:
//
//	nil             the work is durable: acknowledge.
//	*PermanentError the same message can never succeed (bad JSON, unknown
//	                table or job, a schema the job cannot read): dead-letter
//	                it now, with its reason.
//	*HaltError      every message would fail the same way (a wrong key, a
//	                401/403, a spent token budget): release the message at
//	                once and stop consuming; Consumer.Run returns the error.
//	*RetryAfterError a passing failure whose end is known: release the
//	                message to come back after Wait. pipeline.Classify
//	                makes one for a chunk of which the model answered
//	                nothing because it throttled every request sent past
//	                its attempts (enrich.ThrottledError), with the longest
//	                Retry-After of those 429s rounded up to a second; the
//	                pipeline makes one for an event that waits for a
//	                resync in progress (a minute).
//	anything else   a passing failure (a model server that errs or is
//	                down, network, a commit conflict, a chunk throttled
//	                entirely by a server that gave no Retry-After): release
//	                the message to come back after the consumer's backoff
//	                for its receive count.
//
// Rows the model did not answer within a chunk that it answered in part
// (throttled, 5xx, timeouts past their attempts) are no error: they are
// written with status failed and the message is acknowledged.
//
// Classify names the class of an error; the constructors below wrap an
// error into one. Wrap once, where the error's meaning is known.

// Class is what the runtime does with a message whose work failed.
type Class int

// Error classes, see above.
const (
	ClassNone Class = iota
	ClassRetry
	ClassRetryAfter
	ClassPermanent
	ClassHalt
)

func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassRetry:
		return "retry"
	case ClassRetryAfter:
		return "retry_after"
	case ClassPermanent:
		return "permanent"
	case ClassHalt:
		return "halt"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Classify returns the class of err (the outermost class-giving error in
// its chain wins) and, for ClassRetryAfter, the wait.
func Classify(err error) (Class, time.Duration) {
	if err == nil {
		return ClassNone, 0
	}
	var c classed
	if errors.As(err, &c) {
		return c.class()
	}
	return ClassRetry, 0
}

type classed interface {
	error
	class() (Class, time.Duration)
}

// PermanentError marks a failure that no retry can fix: the message goes
// to the dead-letter queue at once, with Reason.
type PermanentError struct {
	Reason string
	Err    error
}

func (e *PermanentError) Error() string                 { return e.Err.Error() }
func (e *PermanentError) Unwrap() error                 { return e.Err }
func (e *PermanentError) class() (Class, time.Duration) { return ClassPermanent, 0 }

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

// HaltError marks a failure that every message would meet (the model
// refuses the key, the token budget is spent): the message is released
// untouched and the consumer stops instead of cycling every message into
// the dead-letter queue.
type HaltError struct{ Err error }

func (e *HaltError) Error() string                 { return e.Err.Error() }
func (e *HaltError) Unwrap() error                 { return e.Err }
func (e *HaltError) class() (Class, time.Duration) { return ClassHalt, 0 }

// Halt wraps err as a failure that stops the consumer.
func Halt(err error) error {
	if err == nil {
		return nil
	}
	return &HaltError{Err: err}
}

// RetryAfterError marks a passing failure that is known to last Wait (a
// model's Retry-After, a resync in progress): the message comes back after
// Wait rather than after the usual backoff.
type RetryAfterError struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfterError) Error() string                 { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error                 { return e.Err }
func (e *RetryAfterError) class() (Class, time.Duration) { return ClassRetryAfter, max(e.Wait, 0) }

// RetryAfter wraps err as a passing failure to retry after wait.
func RetryAfter(wait time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &RetryAfterError{Wait: wait, Err: err}
}
