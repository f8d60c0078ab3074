package enrich

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Lineage columns written next to the output fields of every job.
const (
	ColSourceSnapshotID = "_source_snapshot_id"
	ColModel            = "_model"
	ColSpecVersion      = "_spec_version"
	ColStatus           = "_status"
	ColError            = "_error"
	ColEnrichedAt       = "_enriched_at"
)

// SchemaError says that a source table cannot be read by a job: a column is
// missing or has a type the job cannot use. It is permanent: retrying the
// same table with the same spec cannot succeed.
type SchemaError struct {
	Job    string
	Table  string
	Reason string
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("job %s cannot read table %s: %s", e.Job, e.Table, e.Reason)
}

// Counts tallies rows by status.
type Counts map[Status]int64

// Add adds o into c.
func (c Counts) Add(o Counts) {
	for k, v := range o {
		c[k] += v
	}
}

// Total is the number of rows counted.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// Enricher turns record batches of source rows into record batches of
// target rows: the key and carried columns (shared with the input, not
// copied), the typed output columns and the lineage columns. It is safe for
// concurrent use; each call allocates its output from the allocator given to
// NewEnricher, and the caller owns (and must Release) what it returns.
type Enricher struct {
	spec     *Spec
	model    Model
	mem      memory.Allocator
	in       *arrow.Schema
	out      *arrow.Schema
	keyIdx   int
	textIdx  int
	carryIdx []int
	lang     *languageGate
	langIdx  int
	now      func() time.Time
}

// Columns lists the source columns a job reads: key, text, carried
// columns, then the language column when it is not one of those.
func (s *Spec) Columns() []string {
	cols := append([]string{s.Source.Key, s.Source.Text}, s.Source.Carry...)
	if c := s.Source.Language.Column; c != "" && !slices.Contains(cols, c) {
		cols = append(cols, c)
	}
	return cols
}

// NewEnricher checks that in, the Arrow schema of the source rows, has what
// the spec needs, and derives the target schema. A mismatch is a
// *SchemaError. mem may be nil for the default allocator.
func NewEnricher(spec *Spec, model Model, in *arrow.Schema, mem memory.Allocator) (*Enricher, error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	e := &Enricher{spec: spec, model: model, mem: mem, in: in, now: time.Now}
	schemaErr := func(format string, args ...any) error {
		return &SchemaError{Job: spec.Name, Table: spec.Source.Table, Reason: fmt.Sprintf(format, args...)}
	}
	find := func(name string) (int, error) {
		idx := in.FieldIndices(name)
		if len(idx) == 0 {
			return -1, schemaErr("column %q is missing (the table has %s)", name, fieldNames(in))
		}
		return idx[0], nil
	}
	var err error
	if e.keyIdx, err = find(spec.Source.Key); err != nil {
		return nil, err
	}
	switch in.Field(e.keyIdx).Type.ID() {
	case arrow.INT32, arrow.INT64, arrow.STRING, arrow.LARGE_STRING:
	default:
		return nil, schemaErr("key column %q is %s; it must be a long, int or string", spec.Source.Key, in.Field(e.keyIdx).Type)
	}
	if e.textIdx, err = find(spec.Source.Text); err != nil {
		return nil, err
	}
	if id := in.Field(e.textIdx).Type.ID(); id != arrow.STRING && id != arrow.LARGE_STRING {
		return nil, schemaErr("text column %q is %s; it must be a string", spec.Source.Text, in.Field(e.textIdx).Type)
	}
	for _, c := range spec.Source.Carry {
		i, err := find(c)
		if err != nil {
			return nil, err
		}
		e.carryIdx = append(e.carryIdx, i)
	}
	if e.lang = newLanguageGate(spec); e.lang != nil {
		if e.langIdx, err = find(e.lang.column); err != nil {
			return nil, err
		}
		if id := in.Field(e.langIdx).Type.ID(); id != arrow.STRING && id != arrow.LARGE_STRING {
			return nil, schemaErr("language column %q is %s; it must be a string", e.lang.column, in.Field(e.langIdx).Type)
		}
	}

	fields := []arrow.Field{in.Field(e.keyIdx)}
	for _, i := range e.carryIdx {
		f := in.Field(i)
		f.Nullable = true
		fields = append(fields, f)
	}
	for _, f := range spec.Outputs {
		fields = append(fields, arrow.Field{Name: f.Name, Type: ArrowType(f.Type), Nullable: true})
	}
	fields = append(fields,
		arrow.Field{Name: ColSourceSnapshotID, Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: ColModel, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: ColSpecVersion, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: ColStatus, Type: arrow.BinaryTypes.String},
		arrow.Field{Name: ColError, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: ColEnrichedAt, Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	)
	// Two target columns of one name (a key or carried column called
	// like a lineage or output column, in a spec that was not validated)
	// would fail at every commit; it is the spec's fault, permanent.
	names := make(map[string]bool, len(fields))
	for _, f := range fields {
		if names[f.Name] {
			return nil, schemaErr("the target would have two columns named %q: the key, a carried column, an output field and the lineage columns (%s) need distinct names",
				f.Name, strings.Join(LineageColumns, ", "))
		}
		names[f.Name] = true
	}
	e.out = arrow.NewSchema(fields, nil)
	return e, nil
}

// LineageColumns are the columns every target has next to the job's own,
// in target order.
var LineageColumns = []string{ColSourceSnapshotID, ColModel, ColSpecVersion, ColStatus, ColError, ColEnrichedAt}

// ArrowType maps a spec field type to its Arrow type.
func ArrowType(t string) arrow.DataType {
	switch t {
	case TypeDouble:
		return arrow.PrimitiveTypes.Float64
	case TypeLong:
		return arrow.PrimitiveTypes.Int64
	case TypeBoolean:
		return arrow.FixedWidthTypes.Boolean
	case TypeStringList:
		return arrow.ListOf(arrow.BinaryTypes.String)
	default:
		return arrow.BinaryTypes.String
	}
}

func fieldNames(s *arrow.Schema) string {
	names := make([]string, 0, s.NumFields())
	for _, f := range s.Fields() {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return fmt.Sprint(names)
}

// Schema is the Arrow schema of the batches Enrich returns.
func (e *Enricher) Schema() *arrow.Schema { return e.out }

// Model is the model this enricher asks.
func (e *Enricher) Model() Model { return e.model }

type stringColumn interface {
	IsNull(i int) bool
	Value(i int) string
}

// Enrich enriches every row of rec, which must have the input schema given
// to NewEnricher. Blank texts are skipped, as are rows in a language the
// model does not read (with the reason, see Language), over-long texts are
// truncated (see Truncate), and every row comes out with a status. sourceSnapshotID is
// written to _source_snapshot_id. The error is only for what stops the run
// (see Model); the returned batch is the caller's to Release.
func (e *Enricher) Enrich(ctx context.Context, rec arrow.RecordBatch, sourceSnapshotID int64) (arrow.RecordBatch, Counts, error) {
	n := int(rec.NumRows())
	texts, ok := rec.Column(e.textIdx).(stringColumn)
	if !ok {
		return nil, nil, fmt.Errorf("enrich: text column is %s, not a string", rec.Column(e.textIdx).DataType())
	}
	var langs stringColumn
	if e.lang != nil {
		if langs, ok = rec.Column(e.langIdx).(stringColumn); !ok {
			return nil, nil, fmt.Errorf("enrich: language column is %s, not a string", rec.Column(e.langIdx).DataType())
		}
	}
	answers := make([]Answer, n)
	items := make([]Item, 0, n)
	for i := range n {
		if texts.IsNull(i) || Blank(texts.Value(i)) {
			answers[i] = Answer{Status: StatusSkipped}
			continue
		}
		if langs != nil {
			var reason string
			if langs.IsNull(i) {
				reason = e.lang.refuse("", false)
			} else {
				reason = e.lang.refuse(langs.Value(i), true)
			}
			if reason != "" {
				answers[i] = Answer{Status: StatusSkipped, Error: reason}
				continue
			}
		}
		t, _ := Truncate(texts.Value(i), e.spec.Model.MaxTextChars)
		items = append(items, Item{ID: i, Text: t})
	}
	if len(items) > 0 {
		got := make([]Answer, len(items))
		if err := e.model.Annotate(ctx, items, got); err != nil {
			return nil, nil, fmt.Errorf("model %s: %w", e.model.Name(), err)
		}
		for j, it := range items {
			answers[it.ID] = got[j]
		}
	}
	// Validate what the model answered against the spec: a backend bug must
	// not write out-of-range values.
	for i := range answers {
		a := &answers[i]
		if a.Status != StatusOK {
			continue
		}
		if len(a.Values) != len(e.spec.Outputs) {
			*a = Answer{Status: StatusInvalidOutput, Error: fmt.Sprintf("model answered %d values for %d output fields", len(a.Values), len(e.spec.Outputs))}
			continue
		}
		for k, f := range e.spec.Outputs {
			if err := f.Check(a.Values[k]); err != nil {
				*a = Answer{Status: StatusInvalidOutput, Error: err.Error()}
				break
			}
		}
	}
	return e.assemble(rec, answers, sourceSnapshotID)
}

func (e *Enricher) assemble(rec arrow.RecordBatch, answers []Answer, snap int64) (arrow.RecordBatch, Counts, error) {
	n := len(answers)
	cols := make([]arrow.Array, 0, e.out.NumFields())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	key := rec.Column(e.keyIdx)
	key.Retain()
	cols = append(cols, key)
	for _, i := range e.carryIdx {
		c := rec.Column(i)
		c.Retain()
		cols = append(cols, c)
	}
	for k, f := range e.spec.Outputs {
		cols = append(cols, e.buildOutput(f, k, answers))
	}

	// The lineage columns: _source_snapshot_id, _model, _spec_version and
	// _enriched_at hold one value for the whole batch and are built from
	// their buffers at once; _status and _error row by row, with their
	// data reserved up front.
	counts := Counts{}
	statusB := array.NewStringBuilder(e.mem)
	defer statusB.Release()
	errB := array.NewStringBuilder(e.mem)
	defer errB.Release()
	statusB.Reserve(n)
	errB.Reserve(n)
	statusBytes, errBytes := 0, 0
	for i := range answers {
		statusBytes += len(answers[i].Status)
		errBytes += len(answers[i].Error)
	}
	statusB.ReserveData(statusBytes)
	errB.ReserveData(errBytes)
	var run Status // counts go by runs of one status: no map update per row
	var runRows int64
	for i := range answers {
		a := &answers[i]
		if a.Status != run {
			if runRows > 0 {
				counts[run] += runRows
			}
			run, runRows = a.Status, 0
		}
		runRows++
		statusB.Append(string(a.Status))
		if a.Error == "" {
			errB.AppendNull()
		} else {
			errB.Append(a.Error)
		}
	}
	if runRows > 0 {
		counts[run] += runRows
	}
	at := arrow.Timestamp(e.now().UnixMicro())
	cols = append(cols,
		constantFixed(e.mem, arrow.PrimitiveTypes.Int64, snap, n),
		constantString(e.mem, e.model.Name(), n),
		constantString(e.mem, e.spec.Version, n),
		statusB.NewArray(),
		errB.NewArray(),
		constantFixed(e.mem, e.out.Field(e.out.NumFields()-1).Type, at, n),
	)
	return array.NewRecordBatch(e.out, cols, int64(n)), counts, nil
}

// constantFixed is an n-row column of a fixed-width type (int64 or a
// microsecond timestamp) holding v in every row, without a validity bitmap.
func constantFixed[T int64 | arrow.Timestamp](mem memory.Allocator, dt arrow.DataType, v T, n int) arrow.Array {
	buf := memory.NewResizableBuffer(mem)
	defer buf.Release()
	buf.Resize(n * 8)
	vals := arrow.GetData[T](buf.Bytes())
	for i := range vals {
		vals[i] = v
	}
	data := array.NewData(dt, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

// constantString is an n-row string column holding s in every row, built
// from its offsets and data buffers at once rather than row by row.
func constantString(mem memory.Allocator, s string, n int) arrow.Array {
	if int64(len(s))*int64(n) > math.MaxInt32 {
		b := array.NewStringBuilder(mem)
		defer b.Release()
		for range n {
			b.Append(s)
		}
		return b.NewArray()
	}
	offBuf := memory.NewResizableBuffer(mem)
	defer offBuf.Release()
	offBuf.Resize((n + 1) * arrow.Int32SizeBytes)
	offs := arrow.Int32Traits.CastFromBytes(offBuf.Bytes())
	for i := range offs {
		offs[i] = int32(i * len(s))
	}
	dataBuf := memory.NewResizableBuffer(mem)
	defer dataBuf.Release()
	dataBuf.Resize(n * len(s))
	if d := dataBuf.Bytes(); len(d) > 0 {
		copy(d, s)
		for filled := len(s); filled < len(d); filled *= 2 {
			copy(d[filled:], d[:filled])
		}
	}
	data := array.NewData(arrow.BinaryTypes.String, n, []*memory.Buffer{nil, offBuf, dataBuf}, nil, 0, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

func (e *Enricher) buildOutput(f Field, k int, answers []Answer) arrow.Array {
	ok := func(a *Answer) bool { return a.Status == StatusOK && a.Values[k].Set }
	switch f.Type {
	case TypeDouble:
		b := array.NewFloat64Builder(e.mem)
		defer b.Release()
		b.Reserve(len(answers))
		for i := range answers {
			if a := &answers[i]; ok(a) {
				b.UnsafeAppend(a.Values[k].Num)
			} else {
				b.UnsafeAppendBoolToBitmap(false)
			}
		}
		return b.NewArray()
	case TypeLong:
		b := array.NewInt64Builder(e.mem)
		defer b.Release()
		b.Reserve(len(answers))
		for i := range answers {
			if a := &answers[i]; ok(a) {
				b.UnsafeAppend(a.Values[k].Int)
			} else {
				b.UnsafeAppendBoolToBitmap(false)
			}
		}
		return b.NewArray()
	case TypeBoolean:
		b := array.NewBooleanBuilder(e.mem)
		defer b.Release()
		b.Reserve(len(answers))
		for i := range answers {
			if a := &answers[i]; ok(a) {
				b.UnsafeAppend(a.Values[k].Bool)
			} else {
				b.UnsafeAppendBoolToBitmap(false)
			}
		}
		return b.NewArray()
	case TypeStringList:
		b := array.NewListBuilder(e.mem, arrow.BinaryTypes.String)
		defer b.Release()
		vb := b.ValueBuilder().(*array.StringBuilder)
		for i := range answers {
			if a := &answers[i]; ok(a) {
				b.Append(true)
				for _, s := range a.Values[k].List {
					vb.Append(s)
				}
			} else {
				b.AppendNull()
			}
		}
		return b.NewArray()
	default:
		b := array.NewStringBuilder(e.mem)
		defer b.Release()
		b.Reserve(len(answers))
		for i := range answers {
			if a := &answers[i]; ok(a) {
				b.Append(a.Values[k].Str)
			} else {
				b.AppendNull()
			}
		}
		return b.NewArray()
	}
}

// Spec is the job spec this enricher serves.
func (e *Enricher) Spec() *Spec { return e.spec }
