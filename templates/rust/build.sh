#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component for sluice) into
# the folder given as first argument (default ./out).
# Needs cargo with the wasm32-wasip2 target (see README.md); rust-toolchain.toml
# asks rustup for it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
command -v cargo >/dev/null || { echo "cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
cd "$here"
cargo build --release --target wasm32-wasip2
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
cp "${target:-$here/target}/wasm32-wasip2/release/{{name_snake}}.wasm" "$out/{{name}}.wasm"
echo "built $out/{{name}}.wasm ($(wc -c < "$out/{{name}}.wasm" | tr -d " ") bytes)"
