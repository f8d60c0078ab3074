package enrich

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// SpecError names the file, the field and the reason a file is invalid:
// a job spec, or the runtime config that names the specs. It is the one
// error type of the program's own files, so that every such message
// reads "FILE: FIELD: REASON".
type SpecError struct {
	File   string
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Reason)
}

// DecodeYAML decodes the YAML document data, read from file, into v,
// strictly: a field v does not have is an error, as is an empty file. Any
// problem is a *SpecError naming file and, in its reason, the line:
// "line 3: unknown field tpye; line 5: cannot read "x" as a number".
func DecodeYAML(file string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return &SpecError{File: file, Reason: "file is empty"}
		}
		return &SpecError{File: file, Reason: describeYAMLError(err)}
	}
	return nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// describeYAMLError turns a YAML decoding error into a short reason.
func describeYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		parts := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			e = unknownField.ReplaceAllString(e, "unknown field $1")
			parts[i] = strings.Replace(e, "cannot unmarshal", "cannot read", 1)
		}
		return strings.Join(parts, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
