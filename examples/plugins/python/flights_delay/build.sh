#!/usr/bin/env bash
# Builds flights_delay.wasm (a WebAssembly component, world sluice:plugin/processor)
# into the folder given as first argument (default ./out).
# Needs componentize-py on PATH, or COMPONENTIZE_PY pointing at it (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
wit="$(cd "$here/../../../../wit" && pwd)"
sdk="$(cd "$here/../../../../sdk/python" && pwd)"   # the SDK, sluice_sdk/
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "componentize-py not found (pip install componentize-py)" >&2; exit 1; }
cd "$here"
"$cpy" -d "$wit" -w processor componentize -p "$here" -p "$sdk" app -o "$out/flights_delay.wasm"
rm -rf "$here/__pycache__" "$sdk/sluice_sdk/__pycache__"
echo "built $out/flights_delay.wasm ($(stat -c %s "$out/flights_delay.wasm") bytes)"
