#!/usr/bin/env bash
# `npx cdk` with the aws-cdk CLI pinned in scripts/cdk/package-lock.json:
# installs it into .cache/cdk/ with npm ci when missing, then runs it at the
# repository root (where cdk.json says the app is `go run ./infra`).
#
#   scripts/cdk.sh synth -c stage=prod
#   scripts/cdk.sh bootstrap aws://123456789012/eu-west-1
#   scripts/cdk.sh deploy -c stage=prod -c queueType=fifo
#
# Installed once, the same CLI also answers to
# `npx --prefix .cache/cdk cdk ...`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/.cache/cdk"

command -v node >/dev/null || { echo "cdk.sh: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "cdk.sh: npm is not installed" >&2; exit 1; }
want=$(node -p 'require(process.argv[1]).dependencies["aws-cdk"]' "$ROOT/scripts/cdk/package.json")
have=$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$DIR/node_modules/aws-cdk/package.json")
if [ "$have" != "$want" ]; then
  echo "cdk.sh: installing aws-cdk@$want into $DIR" >&2
  mkdir -p "$DIR"
  cp "$ROOT/scripts/cdk/package.json" "$ROOT/scripts/cdk/package-lock.json" "$DIR/"
  npm ci --prefix "$DIR" --no-audit --no-fund >&2
fi

# No version check, notices fetch or telemetry: synth works offline. The
# jsii runtime's banner about the Node version concerns the CDK's support
# window only.
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=${JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION:-$(node -p 'process.versions.node.split(".")[0]')}
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1 JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION=1

cd "$ROOT"
exec npx --prefix "$DIR" --no-install cdk "$@"
