#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component, world
# sluice:plugin/keyed-processor@0.2.0) into the folder given as first argument
# (default ./out).
# Needs the componentize-js CLI (npm @bytecodealliance/componentize-js) on PATH, or
# COMPONENTIZE_JS pointing at it (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
cjs="${COMPONENTIZE_JS:-componentize-js}"
if ! command -v "$cjs" >/dev/null && [ -x "$here/node_modules/.bin/componentize-js" ]; then
  cjs="$here/node_modules/.bin/componentize-js"   # npm install in this folder
fi
command -v "$cjs" >/dev/null || { echo "componentize-js not found (npm install @bytecodealliance/componentize-js, see README.md)" >&2; exit 1; }
# -d: leave out the WASI features the plugin does not use, so that the component
# imports only sluice:plugin.
# componentize-js loads only modules under its working folder: run it here.
cd "$here"
# app.js is the entry; componentize-js bundles what it imports (processor.js,
# the SDK in sluice.js).
"$cjs" "$here/app.js" --wit "$here/wit/0.2.0" --world-name keyed-processor \
  -d stdio random clocks http fetch-event -o "$out/{{name}}.wasm"
echo "built $out/{{name}}.wasm ($(wc -c < "$out/{{name}}.wasm" | tr -d " ") bytes)"
