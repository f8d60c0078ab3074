package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Files of the consumer asset, and where Lambda unpacks it.
const (
	bootstrapFile  = "bootstrap"
	configFile     = "enricher.yaml"
	lambdaTaskRoot = "/var/task"
)

// Asset is what the consumer runs, in one folder: bootstrap (cmd/enricher
// built for linux/arm64), enricher.yaml (its runtime config, written for the
// deployment's catalog) and the job specs at the paths enricher.yaml names.
// Lambda gets the folder as its code; the Fargate service runs an image of
// the same files (BuildImage), written beside the folder as DIR-image.tar.
type Asset struct {
	Dir string
	// Files are the folder's files, slash-separated and relative to Dir:
	// bootstrap, enricher.yaml, then the job specs.
	Files []string
	// Image is the run service's container image of the same files
	// (BuildImage), nil unless the Fargate service runs a built image.
	Image *Image
}

// BuildFunc builds the consumer binary into the file out.
type BuildFunc func(out string) error

// ScriptBuild runs scripts/build-lambda.sh of the repository at root: a
// static linux/arm64 build of cmd/enricher, without Docker. Its output goes
// to log.
func ScriptBuild(root string, log io.Writer) BuildFunc {
	return func(out string) error {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "build-lambda.sh"), out)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build consumer (scripts/build-lambda.sh): %w", err)
		}
		return nil
	}
}

// PrepareAsset (re)creates dir as the consumer asset for cfg: the binary
// from build, enricher.yaml, and the job specs copied from the repository
// at root.
func PrepareAsset(cfg Config, root, dir string, build BuildFunc) (*Asset, error) {
	if _, err := cfg.ReadJobs(root); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear asset folder: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("asset folder: %w", err)
	}
	a := &Asset{Dir: dir, Files: []string{bootstrapFile, configFile}}
	bin := filepath.Join(dir, bootstrapFile)
	if err := build(bin); err != nil {
		return nil, err
	}
	if st, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("consumer binary: %w", err)
	} else if st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("consumer binary %s is not executable", bin)
	}
	conf, err := RuntimeConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, configFile), conf, 0o644); err != nil {
		return nil, fmt.Errorf("write runtime config: %w", err)
	}
	for _, j := range cfg.Jobs {
		rel := path.Clean(filepath.ToSlash(j))
		if err := copyFile(filepath.Join(root, j), filepath.Join(dir, filepath.FromSlash(rel))); err != nil {
			return nil, fmt.Errorf("copy job spec %s: %w", j, err)
		}
		a.Files = append(a.Files, rel)
	}
	if cfg.Fargate() && cfg.FargateImage == "" {
		if a.Image, err = BuildImage(a, filepath.Clean(dir)+"-image.tar"); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// runtimeConfig mirrors the consumer's enricher.yaml (cmd/enricher); infra
// imports nothing of the runtime, so the few fields it writes are repeated
// here.
type runtimeConfig struct {
	Catalog struct {
		Name       string            `yaml:"name"`
		Type       string            `yaml:"type"`
		URI        string            `yaml:"uri,omitempty"`
		Warehouse  string            `yaml:"warehouse,omitempty"`
		Properties map[string]string `yaml:"properties,omitempty"`
	} `yaml:"catalog"`
	Jobs []string `yaml:"jobs"`
}

// RuntimeConfig is the enricher.yaml shipped with the consumer. With the
// Glue catalog it names no warehouse: the tables go under the Glue
// database's location (s3://BUCKET/warehouse/DATABASE, set by the stack), so
// the file needs nothing known only at deploy time; the region comes from
// AWS_REGION. With a REST catalog it names the endpoint and warehouse.
func RuntimeConfig(cfg Config) ([]byte, error) {
	var rc runtimeConfig
	rc.Catalog.Name = "enricher"
	rc.Catalog.Type = cfg.Catalog
	if cfg.Catalog == CatalogREST {
		rc.Catalog.URI = cfg.RESTCatalogURI
		rc.Catalog.Warehouse = cfg.RESTWarehouse
	}
	for _, j := range cfg.Jobs {
		rc.Jobs = append(rc.Jobs, path.Clean(filepath.ToSlash(j)))
	}
	body, err := yaml.Marshal(&rc)
	if err != nil {
		return nil, fmt.Errorf("runtime config: %w", err)
	}
	head := fmt.Sprintf("# enricher runtime config for stage %s, written by infra at synth time: do not edit.\n", cfg.Stage)
	return append([]byte(head), body...), nil
}

func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}
