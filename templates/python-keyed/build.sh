#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component, world
# sluice:plugin/keyed-processor@0.2.0) into the folder given as first argument
# (default ./out). app.py and the SDK next to it (sluice_sdk/) go in.
# Needs componentize-py on PATH, or COMPONENTIZE_PY pointing at it (see README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "componentize-py not found (pip install componentize-py==0.25.1, see README.md)" >&2; exit 1; }
cd "$here"
"$cpy" -d wit/0.2.0 -w keyed-processor componentize app -o "$out/{{name}}.wasm"
rm -rf "$here/__pycache__" "$here/sluice_sdk/__pycache__"
echo "built $out/{{name}}.wasm ($(wc -c < "$out/{{name}}.wasm" | tr -d " ") bytes)"
