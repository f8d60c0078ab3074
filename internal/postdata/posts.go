package postdata

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Post is one social-media post, a row of the source table the demo and
// `enricher ingest` write. Empty Author or Lang are written as null.
type Post struct {
	ID        int64
	Text      string
	Author    string
	CreatedAt time.Time
	Lang      string
}

// Schema is the schema of a posts source table.
func Schema() *iceberg.Schema {
	return iceberg.NewSchemaWithIdentifiers(0, []int{1},
		iceberg.NestedField{ID: 1, Name: "post_id", Type: iceberg.PrimitiveTypes.Int64, Required: true},
		iceberg.NestedField{ID: 2, Name: "text", Type: iceberg.PrimitiveTypes.String},
		iceberg.NestedField{ID: 3, Name: "author", Type: iceberg.PrimitiveTypes.String},
		iceberg.NestedField{ID: 4, Name: "created_at", Type: iceberg.PrimitiveTypes.TimestampTz},
		iceberg.NestedField{ID: 5, Name: "lang", Type: iceberg.PrimitiveTypes.String},
	)
}

// Of is the sequence of posts, in order, for Append and Reader.
func Of(posts ...Post) iter.Seq2[Post, error] {
	return func(yield func(Post, error) bool) {
		for _, p := range posts {
			if !yield(p, nil) {
				return
			}
		}
	}
}

// Edited is seq with edit applied to each post as it passes (an error of
// seq passes unchanged).
func Edited(seq iter.Seq2[Post, error], edit func(*Post)) iter.Seq2[Post, error] {
	return func(yield func(Post, error) bool) {
		for p, err := range seq {
			if err == nil {
				edit(&p)
			}
			if !yield(p, err) {
				return
			}
		}
	}
}

// postBatchRows is how many posts go into one Arrow batch while appending.
const postBatchRows = 8192

// Append appends posts to tbl as one snapshot, streaming them in
// bounded batches, and returns the committed table and the row count.
func Append(ctx context.Context, tbl *table.Table, posts iter.Seq2[Post, error]) (*table.Table, int64, error) {
	return AppendBatched(ctx, tbl, posts, postBatchRows)
}

// AppendBatched is AppendPosts with batchRows posts per Arrow batch.
// (The writer starts a new data file only between batches, so small
// batches and a small write.target-file-size-bytes make many files.)
func AppendBatched(ctx context.Context, tbl *table.Table, posts iter.Seq2[Post, error], batchRows int) (*table.Table, int64, error) {
	sc, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
	if err != nil {
		return nil, 0, fmt.Errorf("table %s: arrow schema: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	var n int64
	rdr := Reader(sc, posts, batchRows, &n)
	defer rdr.Release()
	txn := tbl.NewTransaction()
	if err := txn.Append(ctx, rdr, nil); err != nil {
		return nil, 0, fmt.Errorf("table %s: append posts: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	out, err := txn.Commit(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("table %s: commit posts: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	return out, n, nil
}

// Reader streams posts as Arrow batches of batchRows rows of schema sc
// (a posts table's), counting them into *n. The caller releases it.
func Reader(sc *arrow.Schema, posts iter.Seq2[Post, error], batchRows int, n *int64) array.RecordReader {
	batches := func(yield func(arrow.RecordBatch, error) bool) {
		b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
		defer b.Release()
		id := b.Field(0).(*array.Int64Builder)
		text := b.Field(1).(*array.StringBuilder)
		author := b.Field(2).(*array.StringBuilder)
		at := b.Field(3).(*array.TimestampBuilder)
		lang := b.Field(4).(*array.StringBuilder)
		rows := 0
		flush := func() bool {
			rows = 0
			return yield(b.NewRecordBatch(), nil)
		}
		for p, err := range posts {
			if err != nil {
				yield(nil, err)
				return
			}
			id.Append(p.ID)
			text.Append(p.Text)
			appendOrNull(author, p.Author)
			at.Append(arrow.Timestamp(p.CreatedAt.UnixMicro()))
			appendOrNull(lang, p.Lang)
			*n++
			if rows++; rows == batchRows && !flush() {
				return
			}
		}
		if rows > 0 {
			flush()
		}
	}
	return array.ReaderFromIter(sc, batches)
}

func appendOrNull(b *array.StringBuilder, s string) {
	if s == "" {
		b.AppendNull()
		return
	}
	b.Append(s)
}
