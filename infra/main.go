// Command infra is the enricher's AWS CDK app: one stack per stage with the
// source queue and its dead-letter queue, the consumer (a Go Lambda and/or
// enricher run on ECS Fargate), the model key's secret, the warehouse
// bucket and Glue database (or an existing REST catalog), least-privilege
// IAM, alarms, a dashboard and the operators' DLQ policy.
//
// cdk.json at the repository root runs it (`npx cdk synth`, `cdk deploy`);
// `go run ./infra` synthesises into cdk.out/ as well. Settings come from
// CDK context (-c key=value) over an optional JSON file (-c config=FILE)
// over the defaults of DefaultConfig; bad values stop the synth with every
// problem named. The consumer binary is built by scripts/build-lambda.sh
// (linux/arm64, no Docker) into .cache/infra/asset-STAGE/, and for the
// Fargate service its container image (image.go, no Docker daemon) into
// .cache/infra/asset-STAGE-image.tar. cdk-nag's AwsSolutions checks run on
// the stack: an unsuppressed finding is an error annotation, and the app
// exits 1 naming each (suppressions: nag.go, next to their resources).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

func main() {
	err := run()
	jsii.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "infra:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	props := &awscdk.AppProps{}
	if os.Getenv("CDK_OUTDIR") == "" { // go run ./infra, without the CLI
		props.Outdir = jsii.String(filepath.Join(root, "cdk.out"))
	}
	app := awscdk.NewApp(props)
	cfg, err := AppConfig(app, root)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, ".cache", "infra", "asset-"+cfg.Stage)
	asset, err := PrepareAsset(cfg, root, dir, ScriptBuild(root, os.Stderr))
	if err != nil {
		return err
	}
	NewStack(app, cfg, asset)
	assembly := app.Synth(nil)
	if err := synthErrors(*assembly.Directory()); err != nil {
		return err
	}
	if props.Outdir != nil {
		fmt.Fprintf(os.Stderr, "infra: synthesised %s into %s\n", StackName(cfg.Stage), *props.Outdir)
	}
	return nil
}

// synthErrors are the error annotations of the synthesised stacks, above
// all cdk-nag's unsuppressed findings, read from the cloud assembly in
// outdir (manifest.json, and the metadata file of each stack that the CDK
// writes apart): the CDK CLI refuses to go on with them, and so does go run
// ./infra.
func synthErrors(outdir string) error {
	type entries = map[string][]struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}
	var manifest struct {
		Artifacts map[string]struct {
			Metadata               entries `json:"metadata"`
			AdditionalMetadataFile string  `json:"additionalMetadataFile"`
		} `json:"artifacts"`
	}
	if err := readJSON(filepath.Join(outdir, "manifest.json"), &manifest); err != nil {
		return err
	}
	var errs []error
	for _, name := range sortedKeys(manifest.Artifacts) {
		art := manifest.Artifacts[name]
		meta := art.Metadata
		if art.AdditionalMetadataFile != "" {
			if err := readJSON(filepath.Join(outdir, art.AdditionalMetadataFile), &meta); err != nil {
				return err
			}
		}
		for _, path := range sortedKeys(meta) {
			for _, e := range meta[path] {
				if e.Type == "aws:cdk:error" {
					errs = append(errs, fmt.Errorf("%s: %v", path, e.Data))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("synthesis found %d errors (an unsuppressed cdk-nag finding fails synthesis: fix it, or suppress it on its resource with the reason, see infra/nag.go):\n%w",
			len(errs), errors.Join(errs...))
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read cloud assembly: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read cloud assembly %s: %w", path, err)
	}
	return nil
}

// AppConfig loads the configuration from the app's context (and the
// config file it may name, relative to root).
func AppConfig(app awscdk.App, root string) (Config, error) {
	ctx, _ := app.Node().GetAllContext(nil).(map[string]any)
	cfg, err := LoadConfig(ctx, root)
	if err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// repoRoot is the folder holding go.mod, from the working directory up:
// the CDK CLI runs the app at the root, go test in infra/.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the repository")
		}
		dir = parent
	}
}
