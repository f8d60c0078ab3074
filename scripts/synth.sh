#!/usr/bin/env bash
# Synthesises the CDK app offline, as CI does: `npx cdk synth` with the
# pinned CLI (scripts/cdk.sh installs it into .cache/cdk/ when missing),
# which runs `go run ./infra`, which builds the consumer for linux/arm64
# (scripts/build-lambda.sh) and, for the Fargate service, its container
# image (infra/image.go, no Docker daemon). No AWS account, credentials or
# Docker. cdk-nag's AwsSolutions checks run in every synthesis: an
# unsuppressed finding fails it.
#
#   scripts/synth.sh                                  # stage dev: FIFO, Lambda, Glue -> cdk.out/
#   scripts/synth.sh -c stage=prod -c compute=both    # any context
#   SYNTH_MATRIX=1 scripts/synth.sh                   # also the other choices -> .cache/cdk.out-alt/, -run/
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

synth() {
  echo "synth: cdk synth $*" >&2
  local start=$SECONDS
  "$ROOT/scripts/cdk.sh" synth --no-notices --quiet "$@" >&2
  echo "synth: done in $((SECONDS - start))s" >&2
}

synth "$@"
if [ -n "${SYNTH_MATRIX:-}" ]; then
  # Standard queue, Lambda and Fargate in private subnets, REST catalog,
  # imported secret, an Azure model.
  synth -o "$ROOT/.cache/cdk.out-alt" -c stage=alt -c queueType=standard -c compute=both -c fargateNetwork=private \
    -c catalog=rest -c restCatalogUri=https://catalog.example.com/iceberg \
    -c modelEndpoint=https://example.openai.azure.com/ -c modelDeployment=gpt-4o-mini \
    -c modelSecretArn=arn:aws:secretsmanager:eu-west-1:123456789012:secret:enricher/model-key-AbCdEf
  # Fargate alone in public subnets, Glue catalog, an OpenAI-compatible model.
  synth -o "$ROOT/.cache/cdk.out-run" -c stage=run -c compute=fargate \
    -c modelEndpoint=https://llm.example.com/v1 -c modelProvider=openai -c modelDeployment=llama-3.1-8b
fi
