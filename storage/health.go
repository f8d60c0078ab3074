package storage

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"iter"
	"strconv"
	"time"

	"github.com/apache/iceberg-go"
	icebergio "github.com/apache/iceberg-go/io"
	"github.com/apache/iceberg-go/table"
)

// PropLastMaintenance is the table property in which Maintain records
// when it last maintained the table (RFC 3339, UTC).
const PropLastMaintenance = "enricher.last-maintenance"

// TableHealth is what a table costs to keep and to commit to.
type TableHealth struct {
	Table string
	// Snapshots is how many snapshots the metadata holds.
	Snapshots int
	// MetadataFiles and MetadataBytes are the metadata.json files of the
	// table: the current one and those its metadata log still lists, as
	// far as they exist (write.metadata.delete-after-commit deletes those
	// that leave the log).
	MetadataFiles int
	MetadataBytes int64
	// CurrentMetadataBytes is the current metadata.json alone: what every
	// commit rewrites.
	CurrentMetadataBytes int64
	// Manifests and ManifestBytes are the manifests of the current
	// snapshot (what a scan or a merge reads).
	Manifests     int
	ManifestBytes int64
	// DataFiles, DataBytes and Rows are the current snapshot's live data.
	DataFiles, DataBytes, Rows int64
	// LastMaintenance is when Maintain last ran (zero: never).
	LastMaintenance time.Time
	// Retention is what ExpireSnapshots keeps of the history.
	Retention Retention
}

// MeanDataFileBytes is the mean size of a live data file (0 without one).
func (h TableHealth) MeanDataFileBytes() int64 {
	if h.DataFiles == 0 {
		return 0
	}
	return h.DataBytes / h.DataFiles
}

// Health measures tbl: its metadata in memory, the sizes of its
// metadata.json files through the table's FileIO (one stat each: at most
// write.metadata.previous-versions-max + 1), and the current snapshot's
// manifest list. Data file counts come from the snapshot summary's
// totals, else from the manifests.
func Health(ctx context.Context, tbl *table.Table) (TableHealth, error) {
	name := tableName(tbl)
	meta := tbl.Metadata()
	h := TableHealth{Table: name, Snapshots: len(meta.Snapshots())}
	var err error
	if h.Retention, err = RetentionOf(tbl); err != nil {
		return h, err
	}
	if v, ok := tbl.Properties()[PropLastMaintenance]; ok {
		if h.LastMaintenance, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return h, fmt.Errorf("table %s: property %s=%q: %w", name, PropLastMaintenance, v, err)
		}
	}
	fs, err := tbl.FS(ctx)
	if err != nil {
		return h, fmt.Errorf("table %s: file io: %w", name, err)
	}
	files := []string{tbl.MetadataLocation()}
	for e := range meta.PreviousFiles() {
		files = append(files, e.MetadataFile)
	}
	for i, f := range files {
		size, err := fileSize(fs, f)
		if errors.Is(err, iofs.ErrNotExist) {
			continue // deleted by another writer's commit since
		}
		if err != nil {
			return h, fmt.Errorf("table %s: metadata file: %w", name, err)
		}
		h.MetadataFiles++
		h.MetadataBytes += size
		if i == 0 {
			h.CurrentMetadataBytes = size
		}
	}

	snap := tbl.CurrentSnapshot()
	if snap == nil {
		return h, nil
	}
	manifests, err := snap.Manifests(fs)
	if err != nil {
		return h, fmt.Errorf("table %s: manifests of snapshot %d: %w", name, snap.SnapshotID, err)
	}
	h.Manifests = len(manifests)
	for _, m := range manifests {
		h.ManifestBytes += m.Length()
	}
	if snap.Summary != nil {
		p := snap.Summary.Properties
		files, ferr := strconv.ParseInt(p["total-data-files"], 10, 64)
		size, serr := strconv.ParseInt(p["total-files-size"], 10, 64)
		rows, rerr := strconv.ParseInt(p["total-records"], 10, 64)
		if ferr == nil && serr == nil && rerr == nil {
			h.DataFiles, h.DataBytes, h.Rows = files, size, rows
			return h, nil
		}
	}
	// No totals in the summary (another writer's snapshot): count.
	for df, err := range snapDataFiles(fs, manifests) {
		if err != nil {
			return h, fmt.Errorf("table %s: data files of snapshot %d: %w", name, snap.SnapshotID, err)
		}
		h.DataFiles++
		h.DataBytes += df.FileSizeBytes()
		h.Rows += df.Count()
	}
	return h, nil
}

// fileSize stats path through fs.
func fileSize(fs icebergio.IO, path string) (int64, error) {
	if st, ok := fs.(icebergio.StatIO); ok {
		fi, err := st.Stat(path)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	f, err := fs.Open(path)
	if err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	cerr := f.Close()
	if err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("close %s: %w", path, cerr)
	}
	return fi.Size(), nil
}

// snapDataFiles yields the live data files listed by manifests.
func snapDataFiles(fs icebergio.IO, manifests []iceberg.ManifestFile) iter.Seq2[iceberg.DataFile, error] {
	return func(yield func(iceberg.DataFile, error) bool) {
		for _, m := range manifests {
			if m.ManifestContent() != iceberg.ManifestContentData {
				continue
			}
			for e, err := range m.Entries(fs, true) {
				if err != nil {
					yield(nil, err)
					return
				}
				if !yield(e.DataFile(), nil) {
					return
				}
			}
		}
	}
}
