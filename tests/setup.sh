#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine (idempotent, quick
# when everything is there): the wasm target, Debian's Chromium for the
# dashboard test, Debian's nats-server for the cluster tests, the npm packages of the browser test, the MCP conformance
# suite (with its Node 22) and the JavaScript tenant's toolchain, and
# wasmtime-cli 48.0.8 for the `wasmtime serve` parity tests (built once,
# cached in ~/.cache/mctx-tools or $MCTX_TOOLS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2
missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for dir in tests/browser tests/mcp guests/js-hello; do
  npm ci --prefix "$dir" --no-audit --no-fund --silent
done
tools="${MCTX_TOOLS_DIR:-$HOME/.cache/mctx-tools}"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.0\.8'; then
  cargo install wasmtime-cli@48.0.8 --locked --root "$tools"
fi
