package storage

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
)

// SchemaMismatchError says that a table cannot take rows of a given shape.
// It names both schemas.
type SchemaMismatchError struct {
	Table    string
	Problems []string
	Have     string
	Want     string
}

func (e *SchemaMismatchError) Error() string {
	return fmt.Sprintf("table %s does not match the job's schema: %s; table has (%s), job writes (%s)",
		e.Table, strings.Join(e.Problems, "; "), e.Have, e.Want)
}

// CheckSchema reports whether tbl can take batches of schema want: every
// column of want must exist in tbl with the same type, and every required
// column of tbl must be in want.
func CheckSchema(tbl *table.Table, want *arrow.Schema) error {
	have, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
	if err != nil {
		return fmt.Errorf("table %s: arrow schema: %w", tableName(tbl), err)
	}
	var problems []string
	for _, f := range want.Fields() {
		idx := have.FieldIndices(f.Name)
		if len(idx) == 0 {
			problems = append(problems, fmt.Sprintf("column %s is missing", f.Name))
			continue
		}
		if h := have.Field(idx[0]); !arrow.TypeEqual(h.Type, f.Type) {
			problems = append(problems, fmt.Sprintf("column %s is %s, the job writes %s", f.Name, h.Type, f.Type))
		}
	}
	for _, f := range tbl.Schema().Fields() {
		if f.Required && len(want.FieldIndices(f.Name)) == 0 {
			problems = append(problems, fmt.Sprintf("required column %s is not written by the job", f.Name))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return &SchemaMismatchError{Table: tableName(tbl), Problems: problems, Have: describe(have), Want: describe(want)}
}

func describe(s *arrow.Schema) string {
	parts := make([]string, 0, s.NumFields())
	for _, f := range s.Fields() {
		parts = append(parts, f.Name+" "+f.Type.String())
	}
	return strings.Join(parts, ", ")
}
