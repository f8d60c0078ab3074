#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script):
# formatting, go vet, staticcheck, then every test with the race detector.
# Needs Go, Node and npm: the Go module proxy supplies every Go dependency,
# staticcheck included (pinned in go.mod as a tool); npm supplies the SQS
# emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

# step prints a step's title and how long the one before it took, so that
# CI's log says where the time goes (README, "Running the tests").
last_step= last_start=$SECONDS
step() {
  if [ -n "$last_step" ]; then printf -- '-- %s took %ds\n' "$last_step" $((SECONDS - last_start)); fi
  last_step=$* last_start=$SECONDS
  printf '\n== %s\n' "$*"
}

step "go mod download"
go mod download

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then
  echo "not gofmt-formatted:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
go tool staticcheck ./...

step "actionlint"
# The GitHub Actions workflows (.github/workflows/). actionlint is pinned in
# a module of its own, scripts/actionlint/go.mod: its YAML library clashes
# with iceberg-go's.
go -C scripts/actionlint tool actionlint "$PWD"/.github/workflows/*.yml

step "cdk synth"
# The CDK app (infra/) synthesised offline by the pinned aws-cdk CLI from
# npm (installed into .cache/cdk/ on first use), for each deployment choice.
SYNTH_MATRIX=1 scripts/synth.sh

step "SQS emulator"
# Integration tests talk to the fauxqs SQS emulator from npm (installed into
# .cache/ on first use); they find it through ENRICHER_SQS_ENDPOINT.
eval "$(scripts/sqs-emulator.sh start)"
trap 'scripts/sqs-emulator.sh stop' EXIT

step "Lambda runtime interface emulator"
# The Lambda handler's test runs it under the AWS Lambda Runtime Interface
# Emulator, pinned in a module of its own (scripts/rie/go.mod) and built
# here so that a failing build says so in its own step.
go build -C scripts/rie -o "$PWD/.cache/bin/aws-lambda-rie" github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
export ENRICHER_RIE_BIN="$PWD/.cache/bin/aws-lambda-rie"

step "go test -race"
# The end-to-end tests read ../shared/data beside the repository; point
# ENRICHER_SHARED_DATA elsewhere if it lives somewhere else.
go test -race -count=1 -timeout 20m ./...

step "fuzz (brief)"
# Each fuzz target runs a fixed number of inputs (about ten seconds each)
# on top of its seed corpus (testdata/fuzz/ in the package); a failure
# writes the input there. A count, not a duration: with a duration Go 1.26's
# fuzz coordinator can fail at the deadline having found nothing
# ("context deadline exceeded", go.dev/issue/75804, fixed in Go 1.27); a
# count sets no deadline. FUZZTIME_DECODE / FUZZTIME_ANSWER override it.
go test -run '^$' -fuzz '^FuzzDecodeEvent$' -fuzztime "${FUZZTIME_DECODE:-300000x}" ./consumer
go test -run '^$' -fuzz '^FuzzParseAnswer$' -fuzztime "${FUZZTIME_ANSWER:-100000x}" ./enrich

step "benchmark smoke run"
# Every scenario of scripts/bench.sh at reduced sizes (under a minute), only
# to check that the benchmark still works: it writes to a temp file, never
# BENCHMARKS.md, and asserts no timing.
BENCH_SMOKE=1 scripts/bench.sh "$(mktemp -t enricher-bench-XXXXXX.md)"
step "done"
