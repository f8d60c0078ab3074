#!/usr/bin/env bash
# Builds the consumer for AWS Lambda (provided.al2023) and ECS Fargate on
# arm64: cmd/enricher as one static binary, no Docker. The CDK app (infra/)
# calls it at synth time with the output file, .../bootstrap.
#
#   scripts/build-lambda.sh OUT    # writes OUT (default .cache/infra/bootstrap)
#
# -trimpath and -buildvcs=false make the binary depend on the source only,
# so an unchanged consumer keeps its asset hash and is not redeployed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/.cache/infra/bootstrap}
mkdir -p "$(dirname "$OUT")"
cd "$ROOT"
echo "build-lambda: go build ./cmd/enricher for linux/arm64 -> $OUT" >&2
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 \
  go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$OUT" ./cmd/enricher
