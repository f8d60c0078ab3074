#!/usr/bin/env bash
# Local SQS (and SNS/S3) emulator for tests and development: fauxqs from npm,
# pinned to 1.9.2 (later releases need Node 22), installed into .cache/fauxqs/.
#
#   eval "$(scripts/sqs-emulator.sh start)"   # install if needed, start, print env
#   scripts/sqs-emulator.sh env                # print env of the running one (fails if none)
#   scripts/sqs-emulator.sh stop               # stop it
#
# The emulator listens on 127.0.0.1 only, on a port the OS picks, and serves
# SQS (AWS JSON 1.0), SNS (query protocol) and S3 (path-style) on that one
# port. State is in memory only and is lost when it stops. Only the export
# lines go to stdout; progress and errors go to stderr.
#
# Files in .cache/fauxqs/: pid (process id, also its process group), log
# (request log), env (the export lines), serve.mjs (the launcher).
set -euo pipefail

FAUXQS_VERSION=1.9.2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/.cache/fauxqs"
PID_FILE="$DIR/pid"
LOG_FILE="$DIR/log"
ENV_FILE="$DIR/env"
LAUNCHER="$DIR/serve.mjs"
READY_TIMEOUT=${SQS_EMULATOR_READY_TIMEOUT:-30}

say() { printf 'sqs-emulator: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|env" >&2
  exit 2
}

installed_version() {
  local pkg="$DIR/node_modules/fauxqs/package.json"
  [ -f "$pkg" ] || return 0
  node -e 'process.stdout.write(String(require(process.argv[1]).version))' "$pkg" 2>/dev/null || true
}

install() {
  command -v node >/dev/null || die "node is not installed"
  command -v npm >/dev/null || die "npm is not installed"
  mkdir -p "$DIR"
  if [ "$(installed_version)" != "$FAUXQS_VERSION" ]; then
    say "installing fauxqs@$FAUXQS_VERSION into $DIR"
    # npm ci from the committed lock file: every transitive version pinned.
    mkdir -p "$DIR"
    cp "$ROOT/scripts/fauxqs/package.json" "$ROOT/scripts/fauxqs/package-lock.json" "$DIR/"
    npm ci --prefix "$DIR" --no-audit --no-fund >&2
    [ "$(installed_version)" = "$FAUXQS_VERSION" ] || die "fauxqs@$FAUXQS_VERSION did not install"
  fi
  # fauxqs's own CLI always binds 0.0.0.0; this launcher uses its public
  # buildApp() export to bind loopback only. Settings as for the CLI:
  # FAUXQS_PORT, FAUXQS_HOST, FAUXQS_DEFAULT_REGION, FAUXQS_LOGGER.
  cat >"$LAUNCHER" <<'EOF'
import { buildApp } from "fauxqs";

const port = parseInt(process.env.FAUXQS_PORT ?? "4566", 10);
const app = buildApp({
  logger: (process.env.FAUXQS_LOGGER ?? "true") !== "false",
  host: process.env.FAUXQS_HOST || undefined,
  defaultRegion: process.env.FAUXQS_DEFAULT_REGION || undefined,
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.once(sig, () => {
    app.close().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
await app.listen({ port, host: "127.0.0.1" });
EOF
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    node -e 'const s=require("net").createServer(); s.listen(0,"127.0.0.1",()=>{console.log(s.address().port); s.close();})'
  fi
}

env_lines() {
  local url="http://127.0.0.1:$1"
  printf 'export ENRICHER_SQS_ENDPOINT=%s\n' "$url"
  printf 'export AWS_ENDPOINT_URL_SQS=%s\n' "$url"
  printf 'export AWS_REGION=us-east-1\n'
  printf 'export AWS_ACCESS_KEY_ID=test\n'
  printf 'export AWS_SECRET_ACCESS_KEY=test\n'
}

# answers PORT: true if an SQS ListQueues call on PORT succeeds.
answers() {
  curl -fsS -o /dev/null --max-time 2 \
    -H 'X-Amz-Target: AmazonSQS.ListQueues' \
    -H 'Content-Type: application/x-amz-json-1.0' \
    --data '{}' "http://127.0.0.1:$1/" 2>/dev/null
}

# alive PID: true if PID is a running fauxqs launcher started by this script.
alive() {
  local pid=$1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'fauxqs/serve.mjs'
}

recorded_pid() { if [ -f "$PID_FILE" ]; then cat "$PID_FILE"; fi; }

recorded_port() {
  [ -f "$ENV_FILE" ] || return 0
  sed -n 's|^export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:\([0-9]*\)$|\1|p' "$ENV_FILE"
}

# running: true if the recorded emulator is alive and answering.
running() {
  local pid port
  pid=$(recorded_pid)
  port=$(recorded_port)
  [ -n "$pid" ] && [ -n "$port" ] && alive "$pid" && answers "$port"
}

stop() {
  local pid _
  pid=$(recorded_pid)
  if [ -n "$pid" ] && alive "$pid"; then
    # Started with setsid, so its pid is also its process group: this ends
    # it and any children, and nothing else.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PID_FILE" "$ENV_FILE"
}

start() {
  if running; then
    say "already running (pid $(recorded_pid))"
    cat "$ENV_FILE"
    return 0
  fi
  # A stale or unanswering one: clear it away first.
  stop 2>/dev/null
  install
  command -v curl >/dev/null || die "curl is not installed"

  local port pid deadline _
  for _ in 1 2 3; do
    port=$(free_port)
    : >"$LOG_FILE"
    (
      cd "$DIR"
      FAUXQS_PORT=$port FAUXQS_DEFAULT_REGION=us-east-1 \
        FAUXQS_LOGGER=${FAUXQS_LOGGER:-true} \
        exec setsid node "$LAUNCHER" </dev/null >>"$LOG_FILE" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    deadline=$((SECONDS + READY_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
      if answers "$port"; then
        env_lines "$port" >"$ENV_FILE"
        say "fauxqs $FAUXQS_VERSION running on 127.0.0.1:$port (pid $pid, log $LOG_FILE)"
        cat "$ENV_FILE"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      stop 2>/dev/null
      say "no answer on port $port within ${READY_TIMEOUT}s; log:"
      tail -n 20 "$LOG_FILE" >&2 || true
      exit 1
    fi
    rm -f "$PID_FILE"
    if grep -q EADDRINUSE "$LOG_FILE"; then
      say "port $port was taken meanwhile; trying another"
      continue
    fi
    say "fauxqs exited at start; log:"
    tail -n 20 "$LOG_FILE" >&2 || true
    exit 1
  done
  die "could not find a free port"
}

print_env() {
  running || die "not running (start it with: $0 start)"
  cat "$ENV_FILE"
}

[ $# -eq 1 ] || usage
case "$1" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) usage ;;
esac
