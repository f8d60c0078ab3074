package storage

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sethvargo/go-retry"
)

const (
	// defaultConflictAttempts is ConflictBackoff's attempts when given 0.
	defaultConflictAttempts = 8
	// defaultConflictBase is ConflictBackoff's base when given 0:
	// Iceberg's own commit.retry.min-wait-ms.
	defaultConflictBase = 100 * time.Millisecond
	// conflictWaitCap bounds every wait of ConflictBackoff.
	conflictWaitCap = 5 * time.Second
)

// ConflictBackoff is the one backoff between the tries of a commit that
// lost an Iceberg commit conflict to another writer, whoever retries it:
// the pipeline re-planning or re-committing a chunk, a resync, replay or
// batch record, and storage's own commits (maintenance, expiry,
// properties, failure records). attempts is the tries in all (0: 8);
// the wait before retry n (n = 1, 2, ...) is drawn uniformly from
//
//	[0, min(5s, base × 2^(n-1)))    base 0: 100ms
//
// This is "full jitter", chosen for Iceberg's optimistic commits: the
// writers that race on one table (several consumers, maintenance,
// another process's optimizer) lose to the same winner at about the same
// time and reload the same new metadata. A jitter of ±p% around the
// exponential spreads their retries over 2p% of it, and each waits the
// whole exponential on mean; a draw over all of it spreads them widest
// for half the mean wait (what the AWS Architecture Blog's "Exponential
// Backoff And Jitter" measured for clients racing on one optimistic
// resource). No floor is needed: the winner's commit is visible once a
// commit has lost to it, so an early retry works on fresh metadata. The
// cap keeps a late retry from holding a message or a maintenance run for
// minutes, and attempts bound the total: 8 tries of base 100ms wait at
// most 11.3s in all, 5.65s on mean.
func ConflictBackoff(attempts int, base time.Duration) retry.Backoff {
	if attempts <= 0 {
		attempts = defaultConflictAttempts
	}
	if base <= 0 {
		base = defaultConflictBase
	}
	var retries atomic.Int64
	next := retry.BackoffFunc(func() (time.Duration, bool) {
		return conflictWait(int(retries.Add(1)), base, rand.Float64()), false
	})
	return retry.WithMaxRetries(uint64(attempts-1), next)
}

// conflictCeiling is the bound of ConflictBackoff's wait before retry n:
// base × 2^(n-1), at most conflictWaitCap.
func conflictCeiling(n int, base time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < conflictWaitCap; i++ {
		d *= 2
	}
	return min(d, conflictWaitCap)
}

// conflictWait is ConflictBackoff's wait before retry n for the draw u in
// [0, 1): u × conflictCeiling(n, base).
func conflictWait(n int, base time.Duration, u float64) time.Duration {
	return time.Duration(u * float64(conflictCeiling(n, base)))
}
