package enrich

import "github.com/socialdata/enricher/internal/specfile"

// SpecError names the file, the field and the reason a file is invalid:
// a job spec, or the runtime config that names the specs. It is
// specfile.FieldError, the one error type of the program's own files (the
// CDK app's settings included), so that every such message reads
// "FILE: FIELD: REASON".
type SpecError = specfile.FieldError

// MaxFileBytes is the largest config or job spec file ReadFile reads.
const MaxFileBytes = specfile.MaxFileBytes

// ReadFile reads a config or job spec file: see specfile.ReadFile.
func ReadFile(path string) ([]byte, error) { return specfile.ReadFile(path) }

// DecodeYAML decodes the YAML document data, read from file, into v,
// strictly: see specfile.DecodeYAML.
func DecodeYAML(file string, data []byte, v any) error { return specfile.DecodeYAML(file, data, v) }
