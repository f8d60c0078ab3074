package specfile

import (
	"fmt"
	"regexp"
)

// TablePattern is what a table name must match: NAMESPACE.TABLE, with
// nested namespaces as a.b.TABLE. The snapshot event's JSON Schema
// (consumer/snapshot-event.schema.json) holds the same pattern for its
// table field; TestEventTablePatternIsTheSpecs keeps the two equal.
var TablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)

// TableProblem says what is wrong with the table name of source.table or
// target.table, "" when nothing is.
func TableProblem(name string) string {
	switch {
	case name == "":
		return "is required"
	case !TablePattern.MatchString(name):
		return fmt.Sprintf("%q must be NAMESPACE.TABLE", name)
	}
	return ""
}

// NamePattern is what the names of a spec must match: the job's name, its
// output fields, and the model providers that model.provider names.
var NamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
