#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine (idempotent, quick
# when everything is there): the wasm target, Debian's Chromium for the
# dashboard test, Debian's nats-server for the cluster tests and prometheus for
# the metrics test, the npm packages
# of the browser test, the MCP conformance suite (with its Node 22), the MCP
# Python SDK and OpenTelemetry's protobuf definitions (a venv in
# tests/mcp-python), the
# JavaScript tenant's toolchain, and wasmtime-cli 48.0.8 for the
# `wasmtime serve` parity tests (built once, cached in ~/.cache/mctx-tools or
# $MCTX_TOOLS_DIR).
#
# Every step says what it does, and a failing step names itself: a CI run once
# stopped here with no word of why, because the npm steps ran with --silent.
# Steps that fetch from a registry are tried three times, since one dropped
# connection should not fail a 30-minute run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "setup: $*"; }
trap 'echo "setup: failed at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

# Runs a command up to three times, 5 s apart, showing each failure.
retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$@"; then return 0; fi
    echo "setup: attempt $attempt of 3 failed: $*" >&2
    [ "$attempt" -lt 3 ] && sleep 5
  done
  return 1
}

step "wasm32-wasip2 target"
rustup target add wasm32-wasip2

missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || missing+=(nats-server)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  retry apt-get update -qq
  retry env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi

for dir in tests/browser tests/mcp tests/workerd guests/js-kit guests/mcp-ts; do
  step "npm ci in $dir"
  retry npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
done

venv=tests/mcp-python/.venv
if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("mcp") == "2.3.0"; assert m.version("opentelemetry-proto") == "1.45.2"' 2>/dev/null; then
  step "python venv with the MCP Python SDK and opentelemetry-proto in $venv"
  python3 -m venv "$venv"
  retry "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/mcp-python/requirements.txt
fi

tools="${MCTX_TOOLS_DIR:-$HOME/.cache/mctx-tools}"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.0\.8'; then
  step "cargo install wasmtime-cli 48.0.8 into $tools (about 15 minutes on 2 cores)"
  retry cargo install wasmtime-cli@48.0.8 --locked --root "$tools"
fi
step "done"
