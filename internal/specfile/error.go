package specfile

import "fmt"

// FieldError names the file, the field and the reason a file or setting
// is invalid: a job spec, the runtime config that names the specs, or a
// setting of the CDK app (whose "file" is where the setting came from:
// its config file, or "context"). It is the one error type of the
// program's own files, so that every such message reads
// "FILE: FIELD: REASON"; an empty File or Field is left out.
type FieldError struct {
	File   string
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	switch {
	case e.File == "" && e.Field == "":
		return e.Reason
	case e.File == "":
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	case e.Field == "":
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Reason)
}
