package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// JobStatus is where one job stands on its source table, and what its
// target costs to keep.
type JobStatus struct {
	Job         string         `json:"job"`
	SourceTable string         `json:"source_table"`
	TargetTable string         `json:"target_table"`
	Current     int64          `json:"source_snapshot_id"`       // the source's current snapshot (0: none)
	Watermark   storage.Cursor `json:"-"`                        // where the job stands
	WatermarkAt string         `json:"watermark"`                // Watermark as text
	Behind      int            `json:"snapshots_behind"`         // snapshots after the watermark, any operation (0 when the history does not reach it)
	RowsBehind  int64          `json:"rows_behind"`              // appended rows not yet enriched (likewise)
	LastCommit  *time.Time     `json:"last_commit_at,omitempty"` // when the target last recorded the watermark
	TargetRows  string         `json:"target_rows,omitempty"`    // total-records of the target's current snapshot
	// HistoryReaches says whether the source's current history still
	// reaches the watermark (storage.CheckHistory): when false, the
	// snapshots after it cannot be read incrementally and HistoryProblem
	// says why; `enricher resync --job J` brings the job to the source's
	// current snapshot. Nil when the source could not be read.
	HistoryReaches *bool  `json:"source_history_reaches_watermark,omitempty"`
	HistoryExpired bool   `json:"source_history_expired,omitempty"` // snapshot expiry cut it (storage.ErrHistoryExpired)
	HistoryProblem string `json:"source_history_problem,omitempty"`
	// Health is the target's (nil while the target does not exist, or
	// when it could not be measured: HealthProblem says why).
	Health        *TargetHealth `json:"target_health,omitempty"`
	HealthProblem string        `json:"target_health_problem,omitempty"`
	Problem       string        `json:"problem,omitempty"` // why the rest could not be read
	// Resync says that a resync of the job is in progress (or was cut
	// short), from its marker on the target.
	Resync string `json:"resync,omitempty"`
	// LastFailure is the job's last failure a consumer recorded on the
	// target (storage.RecordFailure), and Failing whether it came after
	// the job's last commit while the job still has work (snapshots
	// behind, batches pending, or a history that does not reach its
	// watermark): the job has not moved on since.
	LastFailure *storage.JobFailure `json:"last_failure,omitempty"`
	Failing     bool                `json:"failing,omitempty"`
	// PropertiesToSet are the job's target.properties (key=value) the
	// target does not have yet: the next consumer to open the target, or
	// enricher maintain, sets them.
	PropertiesToSet []string `json:"properties_to_set,omitempty"`
	// Batches are the job's Batch API batches submitted and not yet
	// committed, oldest first (`enricher batches list` shows them).
	Batches []PendingBatchStatus `json:"pending_batches,omitempty"`
	// Rows are the target's rows by status and skipped by reason, with
	// StatusOptions.CountRows only (a scan of two columns).
	Rows *RowCounts `json:"rows,omitempty"`
}

// TargetHealth is storage.TableHealth as status and maintain reports show
// it: what a table costs to keep and to commit to.
type TargetHealth struct {
	Snapshots            int   `json:"snapshots"`              // snapshots the metadata holds
	MetadataFiles        int   `json:"metadata_files"`         // metadata.json files kept (current and logged)
	MetadataBytes        int64 `json:"metadata_bytes"`         // their bytes
	CurrentMetadataBytes int64 `json:"current_metadata_bytes"` // the current one: what every commit rewrites
	Manifests            int   `json:"manifests"`              // manifests of the current snapshot
	ManifestBytes        int64 `json:"manifest_bytes"`
	DataFiles            int64 `json:"data_files"` // live data files
	DataBytes            int64 `json:"data_bytes"`
	MeanDataFileBytes    int64 `json:"mean_data_file_bytes"`
	Rows                 int64 `json:"rows"`
	// LastMaintenance is when `enricher maintain` (or the automatic
	// maintenance) last completed; nil: never.
	LastMaintenance *time.Time `json:"last_maintenance_at"`
	// RetainSnapshots and RetainMaxAgeMs are the snapshot retention
	// expiry applies (history.expire.min-snapshots-to-keep and
	// history.expire.max-snapshot-age-ms, else the enricher's defaults).
	RetainSnapshots int   `json:"retain_min_snapshots"`
	RetainMaxAgeMs  int64 `json:"retain_max_snapshot_age_ms"`
}

// NewTargetHealth converts h.
func NewTargetHealth(h storage.TableHealth) TargetHealth {
	out := TargetHealth{
		Snapshots:            h.Snapshots,
		MetadataFiles:        h.MetadataFiles,
		MetadataBytes:        h.MetadataBytes,
		CurrentMetadataBytes: h.CurrentMetadataBytes,
		Manifests:            h.Manifests,
		ManifestBytes:        h.ManifestBytes,
		DataFiles:            h.DataFiles,
		DataBytes:            h.DataBytes,
		MeanDataFileBytes:    h.MeanDataFileBytes(),
		Rows:                 h.Rows,
		RetainSnapshots:      h.Retention.MinSnapshots,
		RetainMaxAgeMs:       h.Retention.MaxAge.Milliseconds(),
	}
	if !h.LastMaintenance.IsZero() {
		at := h.LastMaintenance
		out.LastMaintenance = &at
	}
	return out
}

// Status reports, for every job, the source's current snapshot, the
// watermark, how far behind the job is, whether the source's history
// still reaches the watermark, and the target's health. It only reads:
// the metadata of both tables, the target's current manifest list and a
// stat of each metadata.json file the target keeps. A job whose tables
// cannot be read gets a Problem instead of failing the whole report.
func (p *Processor) Status(ctx context.Context) ([]JobStatus, error) {
	return p.StatusWith(ctx, StatusOptions{})
}

// StatusOptions ask Status for more than the metadata tells.
type StatusOptions struct {
	// CountRows scans each target's _status and _error columns for its
	// rows by status and its skipped rows by reason.
	CountRows bool
}

// StatusWith is Status with options.
func (p *Processor) StatusWith(ctx context.Context, o StatusOptions) ([]JobStatus, error) {
	var out []JobStatus
	for _, j := range p.jobs {
		s := JobStatus{Job: j.Spec.Name, SourceTable: j.Spec.Source.Table, TargetTable: j.Spec.Target.Table}
		if err := p.status(ctx, j.Spec, &s, o); err != nil {
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

func (p *Processor) status(ctx context.Context, spec *enrich.Spec, s *JobStatus, o StatusOptions) error {
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
		if r, ok, err := storage.ResyncInProgress(tgt, s.Job); err == nil && ok {
			s.Resync = fmt.Sprintf("in progress since %s, to source snapshot %d (events wait; if no resync runs, run enricher resync --job %s)",
				r.Since.Format(time.RFC3339), r.SnapshotID, s.Job)
		}
		if list, err := storage.PendingBatches(tgt, s.Job); err != nil {
			return err
		} else {
			for _, pb := range list {
				s.Batches = append(s.Batches, PendingStatus(pb))
			}
		}
		if o.CountRows {
			rc, err := CountRows(ctx, tgt)
			if err != nil {
				return fmt.Errorf("count target rows: %w", err)
			}
			s.Rows = &rc
		}
		if wm.TargetSnapshotID != 0 {
			at := wm.CommittedAt
			s.LastCommit = &at
		}
		have := tgt.Properties()
		for _, k := range slices.Sorted(maps.Keys(spec.Target.Properties)) {
			if v := spec.Target.Properties[k]; have[k] != v {
				s.PropertiesToSet = append(s.PropertiesToSet, k+"="+v)
			}
		}
		if f, ok, err := storage.LastFailure(tgt, s.Job); err != nil {
			return err
		} else if ok {
			s.LastFailure = &f
			s.Failing = s.LastCommit == nil || f.At.After(*s.LastCommit)
		}
		if cur := tgt.CurrentSnapshot(); cur != nil && cur.Summary != nil {
			s.TargetRows = cur.Summary.Properties["total-records"]
		}
		if h, err := storage.Health(ctx, tgt); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.HealthProblem = err.Error()
		} else {
			th := NewTargetHealth(h)
			s.Health = &th
		}
	}
	reaches := true
	if err := storage.CheckHistory(src, s.Watermark); err != nil {
		var he *storage.HistoryError
		if !errors.As(err, &he) {
			return fmt.Errorf("check the source's history: %w", err)
		}
		reaches = false
		s.HistoryExpired = errors.Is(err, storage.ErrHistoryExpired)
		s.HistoryProblem = err.Error()
	}
	s.HistoryReaches = &reaches
	if !reaches || s.Current == 0 {
		// A plan would fail as the history check did.
		return nil
	}
	plan, err := storage.PlanAppends(ctx, src, s.Watermark, s.Current)
	if err != nil {
		return fmt.Errorf("plan from the watermark: %w", err)
	}
	s.Behind = len(plan.Snapshots)
	s.RowsBehind = plan.Rows()
	if s.Behind == 0 && len(s.Batches) == 0 {
		// Nothing left to do: a failure since the last commit (a
		// duplicate event that failed, a bogus one) holds nothing back.
		s.Failing = false
	}
	return nil
}

// ReasonCount is how many target rows one reason left with a status.
type ReasonCount struct {
	Reason string `json:"reason"`
	Rows   int64  `json:"rows"`
}

// RowCounts are a target's rows by status, and its skipped rows by
// reason (a blank text, a language the model does not read, ...).
type RowCounts struct {
	ByStatus  map[enrich.Status]int64 `json:"rows_by_status"`
	SkippedBy []ReasonCount           `json:"skipped_by_reason"`
}

// CountRows reads a target's _status column, and _error where the status
// is skipped: a scan of two columns of the whole table, in bounded
// memory (a count per distinct status and reason).
func CountRows(ctx context.Context, tgt *table.Table) (RowCounts, error) {
	rc := RowCounts{ByStatus: map[enrich.Status]int64{}}
	for col, err := range storage.ScanColumn(ctx, tgt, enrich.ColStatus, nil) {
		if err != nil {
			return rc, err
		}
		if st, ok := col.(*array.String); ok {
			for i := range st.Len() {
				if st.IsValid(i) {
					rc.ByStatus[enrich.Status(st.Value(i))]++
				}
			}
		}
		col.Release()
	}
	reasons := map[string]int64{}
	filter := iceberg.EqualTo(iceberg.Reference(enrich.ColStatus), string(enrich.StatusSkipped))
	for col, err := range storage.ScanColumn(ctx, tgt, enrich.ColError, filter) {
		if err != nil {
			return rc, err
		}
		errs, ok := col.(*array.String)
		for i := range col.Len() {
			reason := "blank text"
			if ok && errs.IsValid(i) {
				reason = errs.Value(i)
			}
			reasons[reason]++
		}
		col.Release()
	}
	for r, n := range reasons {
		rc.SkippedBy = append(rc.SkippedBy, ReasonCount{Reason: r, Rows: n})
	}
	slices.SortFunc(rc.SkippedBy, func(a, b ReasonCount) int {
		if a.Rows != b.Rows {
			return cmp.Compare(b.Rows, a.Rows)
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return rc, nil
}

// PendingBatchStatus is one pending batch as status shows it.
type PendingBatchStatus struct {
	Batch string `json:"batch"` // the latest attempt's ID ("" until created)
	// State is what the target records of the latest attempt: submitted
	// (created, waiting to be collected), recorded (its input file is
	// uploaded, the batch not created yet: a crash or a failed create,
	// which a collection finishes), refused (the provider refused it: the
	// next collection asks its rows again or writes them failed), or
	// empty (a range without rows to send, queued in order). The
	// provider's own state is what `enricher batches collect` reports.
	State    string    `json:"state"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Rows     int64     `json:"rows"`
	Attempts int       `json:"attempts"`
	Created  time.Time `json:"created_at"`
	AgeSecs  int64     `json:"age_seconds"`
}

// PendingStatus is how status shows a pending batch.
func PendingStatus(pb storage.PendingBatch) PendingBatchStatus {
	last := pb.Last()
	state := "submitted"
	switch {
	case pb.Empty():
		state = "empty"
	case last.Refused != "":
		state = "refused: " + last.Refused
	case last.Batch == "":
		state = "recorded, not created"
	}
	return PendingBatchStatus{Batch: last.Batch, State: state, From: pb.From.String(), To: pb.To.String(), Rows: pb.Rows,
		Attempts: len(pb.Attempts), Created: pb.Created, AgeSecs: int64(time.Since(pb.Created).Seconds())}
}
