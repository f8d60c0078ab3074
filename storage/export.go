package storage

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"
)

// Export formats.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// Export writes the rows of tbl's current snapshot to w, streaming: JSON
// lines keyed by column name (numbers as JSON numbers, 64-bit ids
// included; timestamps in RFC 3339; null as null), or CSV with a header
// (null as an empty field). limit <= 0 means every row. It returns the
// number of rows written.
func Export(ctx context.Context, tbl *table.Table, w io.Writer, format string, limit int64) (int64, error) {
	if format != FormatJSONL && format != FormatCSV {
		return 0, fmt.Errorf("export format %q: want %s or %s", format, FormatJSONL, FormatCSV)
	}
	bw := bufio.NewWriter(w)
	var cw *csv.Writer
	if format == FormatCSV {
		cw = csv.NewWriter(bw)
	}
	var n int64
	if tbl.CurrentSnapshot() == nil {
		if cw != nil {
			if err := cw.Write(columnNames(tbl)); err != nil {
				return 0, fmt.Errorf("export: %w", err)
			}
			cw.Flush()
		}
		return 0, bw.Flush()
	}
	opts := []table.ScanOption{}
	if limit > 0 {
		opts = append(opts, table.WithLimit(limit))
	}
	sc, recs, err := tbl.Scan(opts...).ToArrowRecords(ctx)
	if err != nil {
		return 0, fmt.Errorf("export %s: scan: %w", tableName(tbl), err)
	}
	if cw != nil {
		names := make([]string, sc.NumFields())
		for i, f := range sc.Fields() {
			names[i] = f.Name
		}
		if err := cw.Write(names); err != nil {
			return 0, fmt.Errorf("export: %w", err)
		}
	}
	line := make([]byte, 0, 1024)
	record := make([]string, sc.NumFields())
	for rec, err := range recs {
		if err != nil {
			return n, fmt.Errorf("export %s: read: %w", tableName(tbl), err)
		}
		for i := range int(rec.NumRows()) {
			if limit > 0 && n >= limit {
				break
			}
			if cw != nil {
				for c := range record {
					record[c] = csvValue(rec.Column(c), i)
				}
				err = cw.Write(record)
			} else {
				line = appendJSONRow(line[:0], rec, i)
				_, err = bw.Write(line)
			}
			if err != nil {
				rec.Release()
				return n, fmt.Errorf("export: write: %w", err)
			}
			n++
		}
		rec.Release()
	}
	if cw != nil {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, fmt.Errorf("export: write: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export: write: %w", err)
	}
	return n, nil
}

func columnNames(tbl *table.Table) []string {
	var out []string
	for _, f := range tbl.Schema().Fields() {
		out = append(out, f.Name)
	}
	return out
}

func appendJSONRow(b []byte, rec arrow.RecordBatch, i int) []byte {
	b = append(b, '{')
	for c, f := range rec.Schema().Fields() {
		if c > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f.Name)
		b = append(b, ':')
		v, _ := json.Marshal(Value(rec.Column(c), i))
		b = append(b, v...)
	}
	return append(b, '}', '\n')
}

func csvValue(col arrow.Array, i int) string {
	v := Value(col, i)
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []any:
		out, _ := json.Marshal(v)
		return string(out)
	default:
		out, _ := json.Marshal(v)
		s := string(out)
		if len(s) >= 2 && s[0] == '"' {
			s, _ = strconv.Unquote(s)
		}
		return s
	}
}

// Value returns row i of col as a plain Go value: nil, bool, int64,
// uint64, float64, string, a timestamp as an RFC 3339 string, or []any for
// lists. It is what export writes.
func Value(col arrow.Array, i int) any {
	if col.IsNull(i) {
		return nil
	}
	switch a := col.(type) {
	case *array.Boolean:
		return a.Value(i)
	case *array.Int8:
		return int64(a.Value(i))
	case *array.Int16:
		return int64(a.Value(i))
	case *array.Int32:
		return int64(a.Value(i))
	case *array.Int64:
		return a.Value(i)
	case *array.Uint64:
		return a.Value(i)
	case *array.Float32:
		return float64(a.Value(i))
	case *array.Float64:
		return a.Value(i)
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Binary:
		return a.Value(i)
	case *array.Timestamp:
		tt := a.DataType().(*arrow.TimestampType)
		t := a.Value(i).ToTime(tt.Unit)
		if tt.TimeZone == "" {
			return t.Format("2006-01-02T15:04:05.999999999")
		}
		return t.UTC().Format(time.RFC3339Nano)
	case *array.Date32:
		return a.Value(i).ToTime().Format(time.DateOnly)
	case *array.List:
		start, end := a.ValueOffsets(i)
		vals := a.ListValues()
		out := make([]any, 0, end-start)
		for j := start; j < end; j++ {
			out = append(out, Value(vals, int(j)))
		}
		return out
	default:
		return a.ValueStr(i)
	}
}

// Rows yields up to limit rows (limit <= 0: all) of tbl's current snapshot
// as maps from column name to Value. It is for small reads: samples, tests
// and checks.
func Rows(ctx context.Context, tbl *table.Table, limit int64) iter.Seq2[map[string]any, error] {
	return func(yield func(map[string]any, error) bool) {
		if tbl.CurrentSnapshot() == nil {
			return
		}
		opts := []table.ScanOption{}
		if limit > 0 {
			opts = append(opts, table.WithLimit(limit))
		}
		sc, recs, err := tbl.Scan(opts...).ToArrowRecords(ctx)
		if err != nil {
			yield(nil, fmt.Errorf("read %s: %w", tableName(tbl), err))
			return
		}
		var n int64
		for rec, err := range recs {
			if err != nil {
				yield(nil, fmt.Errorf("read %s: %w", tableName(tbl), err))
				return
			}
			for i := range int(rec.NumRows()) {
				if limit > 0 && n >= limit {
					break
				}
				row := make(map[string]any, sc.NumFields())
				for c, f := range rec.Schema().Fields() {
					row[f.Name] = Value(rec.Column(c), i)
				}
				n++
				if !yield(row, nil) {
					rec.Release()
					return
				}
			}
			rec.Release()
		}
	}
}
