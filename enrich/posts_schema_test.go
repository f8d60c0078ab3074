package enrich

import "github.com/apache/arrow-go/v18/arrow"

// PostsSchema is the columns of the sentiment job's source table: the
// benchmarks here and the tests of package enrich_test build their
// batches of posts in it.
var PostsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "post_id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "author", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "created_at", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
	{Name: "lang", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)
