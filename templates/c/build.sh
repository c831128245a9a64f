#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component, world sluice:plugin/processor) into
# the folder given as first argument (default ./out).
#
# Needs (see README.md): wit-bindgen (or WIT_BINDGEN pointing at it), wasm-tools (or
# WASM_TOOLS), and a C compiler for wasm32-wasi: clang + lld + wasi-libc (the
# default; CC overrides the compiler, WASI_SYSROOT the sysroot, default /usr), or
# `CC=zig` to use `zig cc` (ZIG overrides the zig command).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-./out}" && cd "${1:-./out}" && pwd)"
wit_bindgen="${WIT_BINDGEN:-wit-bindgen}"
wasm_tools="${WASM_TOOLS:-wasm-tools}"
for tool in "$wit_bindgen" "$wasm_tools"; do
  command -v "$tool" >/dev/null || { echo "$tool not found (see README.md)" >&2; exit 1; }
done
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT

# 1. C bindings for the world: processor.h, processor.c, processor_component_type.o
#    (the last one carries the WIT types into the component).
log="$("$wit_bindgen" c "$here/wit" --world processor --out-dir "$gen" 2>&1)" || { echo "$log" >&2; exit 1; }

# 2. A core module. It uses no WASI import (no stdio), so it needs no preview1
#    adapter. --strip-debug: Debian's wasi-libc carries DWARF.
cflags=(-O2 -Wall -Wextra -I"$gen" -mexec-model=reactor -Wl,--strip-debug)
sources=("$here/app.c" "$gen/processor.c" "$gen/processor_component_type.o")
case "${CC:-clang}" in
  zig) ${ZIG:-zig} cc --target=wasm32-wasi "${cflags[@]}" "${sources[@]}" -o "$gen/core.wasm" ;;
  *) ${CC:-clang} --target=wasm32-wasi --sysroot="${WASI_SYSROOT:-/usr}" "${cflags[@]}" "${sources[@]}" -o "$gen/core.wasm" ;;
esac

# 3. The component.
"$wasm_tools" component new "$gen/core.wasm" -o "$out/{{name}}.wasm"
"$wasm_tools" validate --features component-model "$out/{{name}}.wasm"
echo "built $out/{{name}}.wasm ($(wc -c < "$out/{{name}}.wasm" | tr -d " ") bytes)"
