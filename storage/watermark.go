package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/apache/iceberg-go/table"
)

// PropWatermarkPrefix starts the table property that mirrors a job's
// watermark in its target table: PropWatermarkPrefix + job. Its value is
// a JSON object (see WatermarkProperty) written by the same commit as the
// rows it accounts for, so it survives what removes snapshots (expiry) or
// puts others at the head (compaction, manifest rewrites).
const PropWatermarkPrefix = "enricher.watermark."

// WatermarkProperty is the name of the table property that holds job's
// watermark.
func WatermarkProperty(job string) string { return PropWatermarkPrefix + job }

// watermarkFormat is the version of the property's JSON layout.
const watermarkFormat = 1

// watermarkJSON is the value of a watermark property. 64-bit ids are
// strings, as in snapshot summaries, so that no JSON reader rounds them.
type watermarkJSON struct {
	Format            int    `json:"format"`
	SourceTable       string `json:"source-table"`
	SourceSnapshotID  int64  `json:"source-snapshot-id,string"`
	PartialSnapshotID int64  `json:"partial-snapshot-id,string,omitempty"`
	PartialFiles      int    `json:"partial-files,omitempty"`
	PartialRows       int64  `json:"partial-rows,string,omitempty"`
	SpecVersion       string `json:"spec-version,omitempty"`
	// TargetSnapshotID is the target snapshot of the commit that wrote
	// the property (it may be expired since).
	TargetSnapshotID int64  `json:"target-snapshot-id,string"`
	CommittedAt      string `json:"committed-at"`
}

// encodeWatermark is the property value of w on sourceTable; its
// TargetSnapshotID and CommittedAt name the commit that writes it.
func encodeWatermark(sourceTable string, w Watermark) (string, error) {
	b, err := json.Marshal(watermarkJSON{
		Format:            watermarkFormat,
		SourceTable:       sourceTable,
		SourceSnapshotID:  w.SnapshotID,
		PartialSnapshotID: w.PartialSnapshotID,
		PartialFiles:      w.PartialFiles,
		PartialRows:       w.PartialRows,
		SpecVersion:       w.SpecVersion,
		TargetSnapshotID:  w.TargetSnapshotID,
		CommittedAt:       w.CommittedAt.UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return "", fmt.Errorf("encode watermark: %w", err)
	}
	return string(b), nil
}

// propertyWatermark reads job's watermark property from tgt. ok is false
// when the table has none.
func propertyWatermark(tgt *table.Table, job string) (w Watermark, sourceTable string, ok bool, err error) {
	key := WatermarkProperty(job)
	v, ok := tgt.Properties()[key]
	if !ok {
		return Watermark{}, "", false, nil
	}
	// Fields a newer enricher adds are ignored; a layout this one cannot
	// read carries another format number.
	var j watermarkJSON
	if err := json.Unmarshal([]byte(v), &j); err != nil {
		return Watermark{}, "", false, fmt.Errorf("target %s: property %s=%q: %w", tableName(tgt), key, v, err)
	}
	if j.Format != watermarkFormat {
		return Watermark{}, "", false, fmt.Errorf("target %s: property %s: format %d, this enricher reads %d: %w",
			tableName(tgt), key, j.Format, watermarkFormat, ErrWatermarkFormat)
	}
	at, err := time.Parse(time.RFC3339Nano, j.CommittedAt)
	if err != nil {
		return Watermark{}, "", false, fmt.Errorf("target %s: property %s: committed-at: %w", tableName(tgt), key, err)
	}
	w = Watermark{
		Cursor: Cursor{SnapshotID: j.SourceSnapshotID, PartialSnapshotID: j.PartialSnapshotID,
			PartialFiles: j.PartialFiles, PartialRows: j.PartialRows},
		TargetSnapshotID: j.TargetSnapshotID,
		CommittedAt:      at.UTC(),
		SpecVersion:      j.SpecVersion,
	}
	return w, j.SourceTable, true, nil
}

// ErrWatermarkFormat is returned (wrapped) for a watermark property
// written by a newer enricher in a layout this one does not know.
var ErrWatermarkFormat = errors.New("unknown watermark property format")

// ReadWatermark returns the watermark of job for sourceTable in tgt. A
// target without one returns the zero Watermark.
//
// The watermark property (WatermarkProperty) is the record: it is
// written by every commit of the job and no maintenance removes it. The
// snapshot summaries are walked back from the current snapshot only as
// far as the snapshot that wrote the property, which is normally the
// head or a few snapshots below it; meeting a newer snapshot of the job
// first means that a writer which does not keep the property (an
// enricher from before it) committed since, and that snapshot's summary
// wins. A property whose snapshot is still in the table but no longer an
// ancestor of the head was rolled back and is ignored. When expiry cut
// the history before either was found, the property is the answer;
// without one (a table written before the property existed)
// ErrWatermarkLost is returned.
func ReadWatermark(tgt *table.Table, job, sourceTable string) (Watermark, error) {
	prop, propSource, hasProp, err := propertyWatermark(tgt, job)
	if err != nil {
		return Watermark{}, err
	}
	meta := tgt.Metadata()
	if hasProp && propSource != sourceTable {
		hasProp = false // written for another source: the job moved
	}
	if hasProp && meta.SnapshotByID(prop.TargetSnapshotID) != nil && !onMain(meta, prop.TargetSnapshotID) {
		hasProp = false // its commit was rolled back
	}
	s, cut := newestOfJob(meta, job, sourceTable, func(id int64) bool { return hasProp && id == prop.TargetSnapshotID })
	switch {
	case s != nil && hasProp && s.SnapshotID == prop.TargetSnapshotID:
		return prop, nil
	case s != nil:
		return parseWatermark(s)
	case hasProp:
		return prop, nil
	case cut != nil:
		// History was expired before the job's last snapshot was found:
		// starting over would write every row again.
		return Watermark{}, fmt.Errorf("target %s: snapshot %d's parent %d is expired before any snapshot of job %s for %s: %w",
			tableName(tgt), cut.SnapshotID, *cut.ParentSnapshotID, job, sourceTable, ErrWatermarkLost)
	}
	return Watermark{}, nil
}

// newestOfJob walks back from the current snapshot of meta to the first
// snapshot that stop accepts or whose summary names job (and, when
// sourceTable is not empty, sourceTable). It returns nil and the snapshot
// whose parent is expired when history ends before one is found (cut is
// nil when the walk reached the table's first snapshot).
func newestOfJob(meta table.Metadata, job, sourceTable string, stop func(int64) bool) (found, cut *table.Snapshot) {
	for s := meta.CurrentSnapshot(); s != nil; {
		if stop(s.SnapshotID) {
			return s, nil
		}
		if s.Summary != nil && s.Summary.Properties[PropJob] == job &&
			(sourceTable == "" || s.Summary.Properties[PropSourceTable] == sourceTable) {
			return s, nil
		}
		if s.ParentSnapshotID == nil {
			return nil, nil
		}
		parent := meta.SnapshotByID(*s.ParentSnapshotID)
		if parent == nil {
			return nil, s
		}
		s = parent
	}
	return nil, nil
}

// onMain reports whether snapshot id is the current snapshot of meta or
// one of its ancestors.
func onMain(meta table.Metadata, id int64) bool {
	cur := meta.CurrentSnapshot()
	return cur != nil && IsAncestor(meta, id, cur.SnapshotID)
}

// ErrWatermarkLost is returned (wrapped) when the target's history no
// longer reaches the job's watermark (snapshots expired after commits by
// other writers) and the table has no watermark property. Nothing is
// written: an operator must decide where to resume.
var ErrWatermarkLost = errors.New("watermark lost to snapshot expiry")

func parseWatermark(s *table.Snapshot) (Watermark, error) {
	p := s.Summary.Properties
	w := Watermark{
		TargetSnapshotID: s.SnapshotID,
		CommittedAt:      time.UnixMilli(s.TimestampMs).UTC(),
		SpecVersion:      p[PropSpecVersion],
	}
	var err error
	parse := func(key string) int64 {
		v := p[key]
		if v == "" || err != nil {
			return 0
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil {
			err = fmt.Errorf("target snapshot %d: property %s=%q: %w", s.SnapshotID, key, v, perr)
		}
		return n
	}
	w.SnapshotID = parse(PropSourceSnapshotID)
	w.PartialSnapshotID = parse(PropPartialSnapshotID)
	w.PartialFiles = int(parse(PropPartialFiles))
	w.PartialRows = parse(PropPartialRows)
	return w, err
}

// stageWatermark sets the watermark property of job on txn, a
// transaction on base, for the snapshot txn has staged (the commit's
// own): the property and the rows then commit together or not at all.
func stageWatermark(base *table.Table, txn *table.Transaction, job, sourceTable string, w Watermark) error {
	st, err := txn.StagedTable()
	if err != nil {
		return fmt.Errorf("staged snapshot: %w", err)
	}
	snap := st.CurrentSnapshot()
	if snap == nil || (base.CurrentSnapshot() != nil && base.CurrentSnapshot().SnapshotID == snap.SnapshotID) {
		return errors.New("staged snapshot: the transaction staged none")
	}
	w.TargetSnapshotID = snap.SnapshotID
	w.CommittedAt = time.UnixMilli(snap.TimestampMs).UTC()
	v, err := encodeWatermark(sourceTable, w)
	if err != nil {
		return err
	}
	if err := txn.SetProperties(map[string]string{WatermarkProperty(job): v}); err != nil {
		return fmt.Errorf("set watermark property: %w", err)
	}
	return nil
}
