package arch_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/socialdata/enricher"

// deps lists every package pkg imports, directly or not (go list -deps).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/"+pkg).CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	return strings.Fields(string(out))
}

// TestRooms: each package imports only what docs/architecture.md allows.
func TestRooms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pkg    string
		banned []string // import path prefixes
		why    string
	}{
		{pkg: "consumer", why: "the runtime knows no queue SDK, no Iceberg, no model",
			banned: []string{"github.com/aws/", "github.com/apache/iceberg-go", "github.com/apache/arrow-go", "github.com/sashabaranov/go-openai",
				module + "/consumer/", module + "/enrich", module + "/storage"}},
		{pkg: "consumer/pipeline", why: "the stages import no queue driver",
			banned: []string{"github.com/aws/aws-sdk-go-v2/service/sqs", "github.com/aws/aws-sdk-go-v2/service/lambda", "github.com/aws/aws-lambda-go",
				module + "/consumer/sqsqueue", module + "/consumer/lambdabatch"}},
		{pkg: "consumer/sqsqueue", why: "a queue driver knows no table and no model",
			banned: []string{"github.com/apache/iceberg-go", module + "/consumer/pipeline", module + "/enrich", module + "/storage"}},
		{pkg: "consumer/lambdabatch", why: "a queue driver knows no table and no model",
			banned: []string{"github.com/apache/iceberg-go", module + "/consumer/pipeline", module + "/enrich", module + "/storage"}},
		{pkg: "enrich", why: "enrich knows neither queues nor tables",
			banned: []string{module + "/consumer", module + "/storage", "github.com/apache/iceberg-go", "github.com/aws/aws-sdk-go-v2/service/sqs"}},
		{pkg: "storage", why: "storage knows neither queues nor models",
			banned: []string{module + "/consumer", module + "/enrich", "github.com/sashabaranov/go-openai", "github.com/aws/aws-sdk-go-v2/service/sqs"}},
		{pkg: "infra", why: "the CDK app imports nothing of the runtime",
			banned: []string{module + "/consumer", module + "/enrich", module + "/storage", module + "/cmd",
				"github.com/apache/iceberg-go", "github.com/apache/arrow-go", "github.com/sashabaranov/go-openai"}},
		{pkg: "internal/iamactions", why: "the IAM action lists that infra grants and cmd/enricher's tests check are plain data",
			banned: []string{module + "/", "github.com/", "golang.org/", "gopkg.in/"}},
		{pkg: "internal/metricnames", why: "the metric names that infra alarms on and the consumer writes are plain data",
			banned: []string{module + "/", "github.com/", "golang.org/", "gopkg.in/"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.pkg, "/", "_"), func(t *testing.T) {
			t.Parallel()
			for _, d := range deps(t, tt.pkg) {
				if d == module+"/"+tt.pkg {
					continue
				}
				for _, b := range tt.banned {
					if d == strings.TrimSuffix(b, "/") || strings.HasPrefix(d, b) {
						t.Errorf("%s imports %s (through its dependencies): %s", tt.pkg, d, tt.why)
					}
				}
			}
		})
	}
}

// TestInfraImportsOnlyPlainPackages: of this module, the CDK app imports
// internal/iamactions (the one list of what the consumer may do, shared
// with the tests that record what it does), internal/metricnames (the
// metrics its alarms read, which the consumer writes) and
// internal/specfile (how the consumer reads the job specs the stack ships,
// and the one error type of settings and files), nothing else.
func TestInfraImportsOnlyPlainPackages(t *testing.T) {
	t.Parallel()
	allowed := []string{module + "/infra", module + "/internal/iamactions", module + "/internal/metricnames", module + "/internal/specfile"}
	for _, d := range deps(t, "infra") {
		if strings.HasPrefix(d, module+"/") && !slices.Contains(allowed, d) {
			t.Errorf("infra imports %s: only internal/iamactions, internal/metricnames and internal/specfile of this module are allowed", d)
		}
	}
}

// testOnly are the packages that only tests may import: emulator clients,
// fakes and test beds.
var testOnly = []string{"internal/testbed", "internal/testlog", "internal/sqstest", "internal/lambdatest", "internal/emf/emftest", "consumer/sourcetest"}

// TestTestOnlyPackagesStayInTests: no package's own code (its tests
// aside) imports a test-only package, so none reaches the binary.
func TestTestOnlyPackagesStayInTests(t *testing.T) {
	t.Parallel()
	// Deps of a package are its own code's, transitively, without tests.
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...").CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	var pkgs []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		rel, _ := strings.CutPrefix(f[0], module+"/")
		pkgs = append(pkgs, rel)
		if slices.Contains(testOnly, rel) {
			continue
		}
		for _, d := range f[1:] {
			if r, ok := strings.CutPrefix(d, module+"/"); ok && slices.Contains(testOnly, r) {
				t.Errorf("%s imports the test-only %s (directly or not): only tests may", rel, r)
			}
		}
	}
	for _, p := range testOnly {
		require.Contains(t, pkgs, p, "%s is a package of this module", p)
	}
}

// TestSpecfileImportsOnlyYAML: internal/specfile, which the CDK app
// imports beside enrich and cmd/enricher, needs the standard library and
// gopkg.in/yaml.v3, nothing else.
func TestSpecfileImportsOnlyYAML(t *testing.T) {
	t.Parallel()
	for _, d := range deps(t, "internal/specfile") {
		first, _, _ := strings.Cut(d, "/")
		if d != module+"/internal/specfile" && strings.Contains(first, ".") && d != "gopkg.in/yaml.v3" {
			t.Errorf("internal/specfile imports %s: only the standard library and gopkg.in/yaml.v3 are allowed", d)
		}
	}
}
