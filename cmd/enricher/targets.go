package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// jobTarget is a target table and the job that writes it, with the
// job's target.properties.
type jobTarget struct {
	job, table string
	props      map[string]string
}

// openTargets loads the config and its job specs (no models: the commands
// that only look after tables need none), picks the targets of every job
// or of the job named job, and opens the catalog, refusing a missing one.
// The caller closes the catalog.
func (g *globals) openTargets(ctx context.Context, job string) (*Config, *storage.Catalog, []jobTarget, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	specs, err := cfg.loadSpecs(enrich.Overrides{})
	if err != nil {
		return nil, nil, nil, err
	}
	var out []jobTarget
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
		if job == "" || s.Name == job {
			out = append(out, jobTarget{job: s.Name, table: s.Target.Table, props: s.Target.Properties})
		}
	}
	if job != "" && len(out) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: --job %q: no such job in %s; the config has jobs %s", errUsage, job, cfg.file, strings.Join(names, ", "))
	}
	cfg.Catalog.MustExist = true
	cat, err := storage.OpenCatalog(ctx, cfg.Catalog)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, cat, out, nil
}
