package storage

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go/table"
)

// PropResyncPrefix starts the table property that marks a resync of a job
// in progress on its target: enricher.resync.<job> holds the source
// snapshot the resync catches up to and when it started
// ("SNAPSHOT@RFC3339"). A resync commits its rows in chunks with the
// marker and the job's watermark unchanged, and its last commit moves the
// watermark to the snapshot and removes the marker, in one commit. While
// the marker is there, consumers must not commit rows of that job (they
// would write rows the resync also writes): they wait (see
// ResyncInProgress).
const PropResyncPrefix = "enricher.resync."

// ResyncProperty is the name of the resync marker of job.
func ResyncProperty(job string) string { return PropResyncPrefix + job }

// Resync describes a resync in progress.
type Resync struct {
	// SnapshotID is the source snapshot it catches up to.
	SnapshotID int64
	// Since is when it started.
	Since time.Time
}

// Marker returns the property value that records r.
func (r Resync) Marker() string {
	return strconv.FormatInt(r.SnapshotID, 10) + "@" + r.Since.UTC().Format(time.RFC3339Nano)
}

// ResyncInProgress reads the resync marker of job on tgt: ok is false when
// no resync is in progress (or one ended).
func ResyncInProgress(tgt *table.Table, job string) (r Resync, ok bool, err error) {
	v, has := tgt.Properties()[ResyncProperty(job)]
	if !has || v == "" {
		return Resync{}, false, nil
	}
	id, at, found := strings.Cut(v, "@")
	if !found {
		return Resync{}, false, fmt.Errorf("table %s: property %s=%q: want SNAPSHOT@TIME", tableName(tgt), ResyncProperty(job), v)
	}
	if r.SnapshotID, err = strconv.ParseInt(id, 10, 64); err != nil {
		return Resync{}, false, fmt.Errorf("table %s: property %s=%q: %w", tableName(tgt), ResyncProperty(job), v, err)
	}
	if r.Since, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return Resync{}, false, fmt.Errorf("table %s: property %s=%q: %w", tableName(tgt), ResyncProperty(job), v, err)
	}
	return r, true, nil
}
