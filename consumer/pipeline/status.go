package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/socialdata/enricher/storage"
)

// JobStatus is where one job stands on its source table.
type JobStatus struct {
	Job         string         `json:"job"`
	SourceTable string         `json:"source_table"`
	TargetTable string         `json:"target_table"`
	Current     int64          `json:"source_snapshot_id"`       // the source's current snapshot (0: none)
	Watermark   storage.Cursor `json:"-"`                        // where the job stands
	WatermarkAt string         `json:"watermark"`                // Watermark as text
	Behind      int            `json:"snapshots_behind"`         // snapshots after the watermark, any operation
	RowsBehind  int64          `json:"rows_behind"`              // appended rows not yet enriched
	LastCommit  *time.Time     `json:"last_commit_at,omitempty"` // when the target last recorded the watermark
	TargetRows  string         `json:"target_rows,omitempty"`    // total-records of the target's current snapshot
	Problem     string         `json:"problem,omitempty"`        // why the rest could not be read
}

// Status reports, for every job, the source's current snapshot, the
// watermark, and how far behind the job is. A job whose tables cannot be
// read gets a Problem instead of failing the whole report.
func (p *Processor) Status(ctx context.Context) ([]JobStatus, error) {
	var out []JobStatus
	for _, j := range p.jobs {
		s := JobStatus{Job: j.Spec.Name, SourceTable: j.Spec.Source.Table, TargetTable: j.Spec.Target.Table}
		if err := p.status(ctx, &s); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.Problem = err.Error()
		}
		s.WatermarkAt = s.Watermark.String()
		out = append(out, s)
	}
	return out, nil
}

func (p *Processor) status(ctx context.Context, s *JobStatus) error {
	src, err := p.cat.LoadTable(ctx, s.SourceTable)
	if err != nil {
		return err
	}
	if cur := src.CurrentSnapshot(); cur != nil {
		s.Current = cur.SnapshotID
	}
	tgt, err := p.cat.LoadTable(ctx, s.TargetTable)
	switch {
	case errors.Is(err, storage.ErrTableNotFound):
		// Nothing enriched yet: everything is behind.
	case err != nil:
		return err
	default:
		wm, err := storage.ReadWatermark(tgt, s.Job, s.SourceTable)
		if err != nil {
			return err
		}
		s.Watermark = wm.Cursor
		if wm.TargetSnapshotID != 0 {
			at := wm.CommittedAt
			s.LastCommit = &at
		}
		if cur := tgt.CurrentSnapshot(); cur != nil && cur.Summary != nil {
			s.TargetRows = cur.Summary.Properties["total-records"]
		}
	}
	if s.Current == 0 {
		return nil
	}
	plan, err := storage.PlanAppends(ctx, src, s.Watermark, s.Current)
	if err != nil {
		return fmt.Errorf("plan from the watermark: %w", err)
	}
	s.Behind = len(plan.Snapshots)
	s.RowsBehind = plan.Rows()
	return nil
}
