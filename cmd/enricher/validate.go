package main

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// validateCmd is `enricher validate`: the config and its job specs
// checked.
type validateCmd struct {
	cmdBase
}

func newValidateCmd(g *globals) *cobra.Command {
	c := &validateCmd{cmdBase: cmdBase{g: g}}
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the runtime config and every job spec it names, without touching any table",
		Long: `validate loads the runtime config and every job spec it names, checks them, and
prints what each job reads, asks and writes. It exits non-zero on the first
invalid file, naming the file, the field and the reason, which is also what
run, status, demo and the Lambda handler do at start, and when a local
sqlite catalog file or warehouse folder the config names does not exist.`,
		Example: `  enricher validate --config enricher-demo/enricher.yaml`,
		Args:    cobra.NoArgs,
		RunE:    runE(c),
	}
}

// Validate has nothing to check: validate takes only the global flags.
func (c *validateCmd) Validate() error { return nil }

// Run loads the config and the specs and prints what each job does.
func (c *validateCmd) Run(context.Context) error {
	cfg, err := c.g.loadConfig()
	if err != nil {
		return err
	}
	specs, err := cfg.loadSpecs(enrich.Overrides{})
	if err != nil {
		return err
	}
	if err := cfg.Catalog.CheckExists(); err != nil {
		return err
	}
	out := c.g.stdout
	fmt.Fprintf(out, "config %s: catalog %s (%s), %d job(s)\n", cfg.file, cfg.Catalog.Type, shownURI(cfg.Catalog.URI), len(specs))
	for _, s := range specs {
		var outs []string
		for _, f := range s.Outputs {
			o := f.Name + " " + f.Type
			if len(f.Enum) > 0 {
				o += " {" + strings.Join(f.Enum, ",") + "}"
			}
			outs = append(outs, o)
		}
		fmt.Fprintf(out, "job %s v%s (%s): %s.%s -> %s via %s; outputs: %s\n",
			s.Name, s.Version, s.File, s.Source.Table, s.Source.Text, s.Target.Table, s.Model.ID(), strings.Join(outs, ", "))
		fmt.Fprintf(out, "  rows the model takes: %s\n", s.LanguageRule())
		fmt.Fprintf(out, "  target properties: %s\n", targetProperties(s))
		if m := s.Model; m.BatchAPI != enrich.BatchOff {
			b := m.Batch
			when := "every range"
			if m.BatchAPI == enrich.BatchAuto {
				when = fmt.Sprintf("ranges of at least %d rows (smaller ones synchronously)", b.MinRows)
			}
			fmt.Fprintf(out, "  batch API: %s, at most %d rows a batch, checked every %s, %d attempt(s), retries %s (at most %d rows synchronously)\n",
				when, b.MaxRows, b.Poll, b.Attempts, b.Retry, b.SyncMaxRows)
		}
	}
	return nil
}

// shownURI is a catalog URI as validate prints it: without what may be a
// secret (user:password@, a query such as ?token=...).
func shownURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || (u.User == nil && u.RawQuery == "") {
		return uri
	}
	user := u.User != nil
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "[redacted]"
	}
	shown := u.String()
	if user {
		shown = strings.Replace(shown, "://", "://[redacted]@", 1)
	}
	return shown
}

// targetProperties lists the table properties a job's target gets: the
// job's own, and the enricher's long-life defaults for a target it
// creates (an existing target keeps its own values for those).
func targetProperties(s *enrich.Spec) string {
	props := storage.TargetProperties()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.Target.Properties)) {
		parts = append(parts, k+"="+s.Target.Properties[k])
		delete(props, k)
	}
	for _, k := range slices.Sorted(maps.Keys(props)) {
		parts = append(parts, k+"="+props[k]+" (default)")
	}
	return strings.Join(parts, ", ")
}
