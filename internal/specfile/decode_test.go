package specfile_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/specfile"
)

func TestDecodeYAML(t *testing.T) {
	t.Parallel()
	type doc struct {
		Name  string `yaml:"name"`
		Count int    `yaml:"count"`
	}
	tests := []struct {
		name  string
		give  string
		want  string // "" = decodes
		field string
	}{
		{name: "valid", give: "name: a\ncount: 2\n"},
		{name: "trailing separator", give: "name: a\ncount: 2\n---\n"},
		{name: "whole number as a float", give: "name: a\ncount: 2.0\n"},
		{name: "two documents", give: "name: a\ncount: 2\n---\nname: b\n", want: "f.yaml: line 3: a second YAML document (after ---): a file holds one document (one config, or one job spec), the rest would be ignored"},
		{name: "fraction", give: "name: a\ncount: 2.5\n", want: "f.yaml: count: line 2: 2.5 is not an integer", field: "count"},
		{name: "empty", give: "", want: "f.yaml: file is empty"},
		{name: "unknown field", give: "name: a\ncuont: 2\n", want: "f.yaml: line 2: unknown field cuont"},
		{name: "wrong type", give: "count: many\n", want: `f.yaml: count: line 1: "many" is not a number (a quoted value, or one out of range)`, field: "count"},
		{name: "not yaml", give: "name: [a\n", want: "f.yaml: line 1: did not find expected ',' or ']'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var d doc
			err := specfile.DecodeYAML("f.yaml", []byte(tt.give), &d)
			if tt.want == "" {
				require.NoError(t, err)
				assert.Equal(t, doc{Name: "a", Count: 2}, d)
				return
			}
			var se *specfile.FieldError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, "f.yaml", se.File)
			assert.Equal(t, tt.field, se.Field)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestFieldErrorLeavesOutWhatIsEmpty(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		give specfile.FieldError
		want string
	}{
		{specfile.FieldError{File: "f.yaml", Field: "name", Reason: "is required"}, "f.yaml: name: is required"},
		{specfile.FieldError{File: "f.yaml", Reason: "file is empty"}, "f.yaml: file is empty"},
		{specfile.FieldError{Field: "stage", Reason: "is bad"}, "stage: is bad"},
		{specfile.FieldError{Reason: "is bad"}, "is bad"},
	} {
		assert.Equal(t, tt.want, tt.give.Error())
	}
}

func TestTableProblem(t *testing.T) {
	t.Parallel()
	assert.Empty(t, specfile.TableProblem("social.posts"))
	assert.Empty(t, specfile.TableProblem("a.b.posts"))
	assert.Equal(t, "is required", specfile.TableProblem(""))
	for _, bad := range []string{"posts", "social.", ".posts", "so cial.posts", "social.1posts", "social..posts"} {
		assert.Equal(t, `"`+bad+`" must be NAMESPACE.TABLE`, specfile.TableProblem(bad), bad)
	}
}
