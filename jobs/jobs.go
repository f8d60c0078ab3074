// Package jobs holds the job spec files shipped with the enricher. They are
// embedded in the binary so that `enricher demo` can write a working copy
// next to its config wherever the binary runs.
package jobs

import "embed"

// Files holds every *.yaml spec in this folder.
//
//go:embed *.yaml
var Files embed.FS
