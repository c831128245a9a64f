#!/usr/bin/env bash
# Builds flights_delay.wasm (a WebAssembly component, world sluice:plugin/processor)
# into the folder given as first argument (default ./out).
# Needs the componentize-js CLI (npm @bytecodealliance/componentize-js) on PATH, or
# COMPONENTIZE_JS pointing at it (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
wit="$(cd "$here/../../../../wit" && pwd)"
cjs="${COMPONENTIZE_JS:-componentize-js}"
command -v "$cjs" >/dev/null || { echo "componentize-js not found (npm install @bytecodealliance/componentize-js)" >&2; exit 1; }
# -d: leave out the WASI features the plugin does not use (fewer imports).
# app.js is the entry: it imports flights_delay.js and the SDK
# (sdk/js/sluice.js), which componentize-js bundles in. It loads only modules
# under its working folder: run it from the repository's root.
cd "$here/../../../.."
"$cjs" "$here/app.js" --wit "$wit" --world-name processor \
  -d stdio random clocks http fetch-event -o "$out/flights_delay.wasm"
echo "built $out/flights_delay.wasm ($(stat -c %s "$out/flights_delay.wasm") bytes)"
