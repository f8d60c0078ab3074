// Package specfile reads the program's own files (the runtime config and
// the job specs) and holds the rules every reader of them shares: the one
// error type that names file, field and reason (FieldError), the bounded
// reader (ReadFile), the strict YAML decoder (DecodeYAML) and the name
// rules of a spec (TablePattern, NamePattern).
//
// enrich (job specs), cmd/enricher (the runtime config) and infra (the CDK
// app, which reads the tables of the job specs it ships) use it, so that a
// spec means the same and fails with the same words wherever it is read.
// It imports only the standard library and gopkg.in/yaml.v3: the CDK app
// may import it without pulling in the runtime.
package specfile
