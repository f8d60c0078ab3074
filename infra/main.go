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
// (linux/arm64, no Docker) into .cache/infra/asset-STAGE/.
package main

import (
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
	app.Synth(nil)
	if props.Outdir != nil {
		fmt.Fprintf(os.Stderr, "infra: synthesised %s into %s\n", StackName(cfg.Stage), *props.Outdir)
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
