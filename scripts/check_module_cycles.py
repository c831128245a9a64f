#!/usr/bin/env python3
"""Fails when the runtime's top-level modules import each other in a cycle.

    python3 scripts/check_module_cycles.py [SRC_DIR]     (default: runtime/src)

Each crate root in SRC_DIR (`lib.rs`, `main.rs`) is followed through its `mod`
declarations, which gives every file its module path (`source/kafka.rs` is
`crate::source::kafka`). In each file, the modules it refers to are collected
from `use` declarations (`crate::`, `super::`, `self::` and child-module
paths, groups and renames included) and from such paths written in the code
(`crate::pipeline::Stats::default()`, `super::Lines`, and `window_operator::f`
after `use crate::window_operator`). Comments and string literals are skipped,
and so are `#[cfg(test)]` modules: a unit test may reach anywhere.

Level 1: the graph of the crate's top-level modules (`crate::X`, X a file or
folder directly under SRC_DIR; a folder's files all count as X; the crate
root, lib.rs or main.rs, is left out). Every cycle
(a strongly connected component of two or more modules, found with Tarjan's
algorithm) is printed with, for each edge inside it, the names imported, so
that whoever breaks the cycle sees what to move. Any such cycle: exit 1.

Level 2 (informative, does not change the exit status): cycles between the
files of one folder, e.g. `source/mod.rs` and `source/file.rs`.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

Module = tuple[str, ...]  # a module path below the crate root; () is the root


# --- reading Rust source -------------------------------------------------------


def strip_comments_and_strings(src: str) -> str:
    """`src` with comments blanked and string/char literals emptied (`""`),
    newlines kept. Lifetimes (`'a`) are left alone."""
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if src.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif src.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if src[i] == "\n":
                        out.append("\n")
                    i += 1
            out.append(" ")
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (
            i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")
        ):
            end = src.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * src.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}', b'x' is caught here too),
            # or a lifetime / label ('a, 'static), which has no closing quote.
            if src.startswith("\\", i + 1):
                j = src.find("'", i + 2)
                i = n if j < 0 else j + 1
                out.append("' '")
            elif i + 2 < n and src[i + 2] == "'":
                i += 3
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text: str, open_at: int) -> int:
    """The index of the `}` closing the `{` at `open_at` (or len(text))."""
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text)


CFG_TEST_BEFORE = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]\s*(?:#\s*\[[^\]]*\]\s*)*$")
MOD_DECL = re.compile(r"(?<![\w:])mod\s+(r#)?(\w+)\s*([;{])")
VISIBILITY_IN = re.compile(r"pub\s*\(\s*in\s+[^)]*\)")
USE_DECL = re.compile(r"(?<![\w:])use\s+([^;]+);")
PATH_IN_CODE = re.compile(r"(?<![\w:])(\w+)((?:\s*::\s*\w+)+)")


def is_cfg_test(text: str, at: int) -> bool:
    return bool(CFG_TEST_BEFORE.search(text[max(0, at - 300) : at]))


@dataclass
class Body:
    """The code of one module, inline `mod x { … }` blocks taken out."""

    module: Module
    code: str
    file: Path


@dataclass
class Scan:
    """What one file declares: its module bodies and its file child modules."""

    bodies: list[Body] = field(default_factory=list)
    file_children: list[tuple[Module, bool]] = field(default_factory=list)  # (child, cfg(test))


def scan_file(text: str, module: Module, file: Path) -> Scan:
    scan = Scan()

    def walk(code: str, module: Module) -> None:
        kept: list[str] = []
        pos = 0
        while m := MOD_DECL.search(code, pos):
            name, kind = m.group(2), m.group(3)
            test_only = is_cfg_test(code, m.start())
            if kind == ";":
                scan.file_children.append((module + (name,), test_only))
                kept.append(code[pos : m.end()])
                pos = m.end()
                continue
            close = matching_brace(code, m.end() - 1)
            kept.append(code[pos : m.start()])
            if not test_only:
                walk(code[m.end() : close], module + (name,))
            pos = close + 1
        kept.append(code[pos:])
        scan.bodies.append(Body(module, "".join(kept), file))

    walk(strip_comments_and_strings(text), module)
    return scan


def use_paths(tree: str) -> list[tuple[list[str], str | None]]:
    """The paths of a use tree (`crate::a::{b, c::D as E}`), each with its
    `as` name; a group's `self` is the group's own path."""
    tree = re.sub(r"\s+", " ", tree).strip()

    def split_top(s: str) -> list[str]:
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        return [p.strip() for p in parts if p.strip()]

    def expand(prefix: list[str], t: str) -> list[tuple[list[str], str | None]]:
        t = t.strip()
        brace = t.find("{")
        if brace >= 0:
            head = [s for s in t[:brace].replace(" ", "").split("::") if s]
            inner = t[brace + 1 : t.rfind("}")]
            result = []
            for part in split_top(inner):
                result.extend(expand(prefix + head, part))
            return result
        alias = None
        if " as " in t:
            t, alias = (s.strip() for s in t.split(" as ", 1))
        segments = [s for s in t.replace(" ", "").split("::") if s]
        if segments == ["self"]:
            return [(prefix, alias)]
        return [(prefix + segments, alias)]

    if tree.startswith("::"):
        return []  # an extern crate
    return expand([], tree)


# --- the crate -------------------------------------------------------------------


@dataclass
class Crate:
    root: Path
    files: dict[Module, Path] = field(default_factory=dict)  # file modules
    modules: set[Module] = field(default_factory=set)  # file and inline modules
    children: dict[Module, set[str]] = field(default_factory=lambda: defaultdict(set))
    bodies: list[Body] = field(default_factory=list)


def child_file(parent_file: Path, parent: Module, name: str) -> Path | None:
    """Where `mod name;` in `parent_file` (module `parent`) is."""
    if parent_file.name in ("lib.rs", "main.rs", "mod.rs") or not parent:
        folder = parent_file.parent
    else:
        folder = parent_file.with_suffix("")
    for candidate in (folder / f"{name}.rs", folder / name / "mod.rs"):
        if candidate.is_file():
            return candidate
    return None


def load_crate(src: Path, root: Path) -> Crate:
    crate = Crate(root=root)
    todo: list[tuple[Module, Path]] = [((), root)]
    while todo:
        module, path = todo.pop()
        crate.files[module] = path
        scan = scan_file(path.read_text(encoding="utf-8"), module, path)
        for body in scan.bodies:
            crate.modules.add(body.module)
            if body.module:
                crate.children[body.module[:-1]].add(body.module[-1])
            crate.bodies.append(body)
        for child, test_only in scan.file_children:
            if test_only:
                continue
            found = child_file(path, module, child[-1])
            if found is None:
                where = path.relative_to(src)
                print(f"warning: no file for `mod {child[-1]};` in {where}", file=sys.stderr)
                continue
            crate.modules.add(child)
            crate.children[module].add(child[-1])
            todo.append((child, found))
    return crate


@dataclass(frozen=True)
class Ref:
    """`file` (of module `source`) refers to `name` in module `target`."""

    source: Module
    target: Module
    name: str
    file: Path


def resolve(
    crate: Crate, here: Module, segments: list[str], aliases: dict[str, Module]
) -> tuple[Module, str] | None:
    """The module a path written in module `here` lands in, and the first name
    after it (`self` for the module itself); None outside this crate."""
    if not segments:
        return None
    first, rest = segments[0], segments[1:]
    if first == "crate":
        base: Module = ()
    elif first in ("self", "super"):
        base = here
        rest = segments
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest = rest[1:]
    elif first in crate.children.get(here, ()):
        base = here + (first,)
    elif first in aliases:
        base = aliases[first]
    else:
        return None  # std, an extern crate, a local item
    while rest and base + (rest[0],) in crate.modules:
        base, rest = base + (rest[0],), rest[1:]
    return base, (rest[0] if rest else "self")


def references(crate: Crate) -> list[Ref]:
    refs: list[Ref] = []
    for body in crate.bodies:
        code = VISIBILITY_IN.sub("", body.code)
        aliases: dict[str, Module] = {}
        for m in USE_DECL.finditer(code):
            for segments, alias in use_paths(m.group(1)):
                if segments and segments[-1] == "*":
                    segments = segments[:-1]
                found = resolve(crate, body.module, segments, aliases)
                if found is None:
                    continue
                target, name = found
                refs.append(Ref(body.module, target, name, body.file))
                if name == "self":
                    aliases[alias or segments[-1]] = target
        code = USE_DECL.sub(" ", code)
        for m in PATH_IN_CODE.finditer(code):
            segments = [m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()]
            starts = ("crate", "super", "self", *aliases, *crate.children.get(body.module, ()))
            if segments[0] not in starts:
                continue
            found = resolve(crate, body.module, segments, aliases)
            if found is not None:
                refs.append(Ref(body.module, found[0], found[1], body.file))
    return refs


# --- cycles ------------------------------------------------------------------------


def tarjan(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of two or more nodes, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        # Iterative, so deep graphs do not hit the recursion limit.
        nonlocal counter
        work = [(v, iter(sorted(edges.get(v, ()))))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return sorted(result, key=lambda c: (-len(c), c))


def shortest_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first node."""
    inside = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, ()) & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return [start]


@dataclass
class Graph:
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (from, to) -> {name: {file, …}}
    names: dict[tuple[str, str], dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )

    def add(self, a: str, b: str, name: str, file: str) -> None:
        if a != b:
            self.edges[a].add(b)
            self.names[(a, b)][name].add(file)


def module_name(module: Module) -> str:
    return "::".join(module) if module else "crate"


def report(title: str, noun: str, graph: Graph, nodes: list[str], folders: set[str], out) -> int:
    """Prints the cycles of `graph` (of `noun`s); how many there are."""
    components = tarjan(nodes, graph.edges)
    for number, component in enumerate(components, 1):
        cycle = shortest_cycle(component, graph.edges)
        members = ", ".join(component)
        print(f"{title} cycle {number} of {len(components)} ({len(component)} {noun}): {members}", file=out)
        print(f"  e.g. {' -> '.join(cycle)}", file=out)
        print("  edges inside it (what the first module uses of the second):", file=out)
        inside = set(component)
        for a in component:
            for b in sorted(graph.edges.get(a, ()) & inside):
                names = graph.names[(a, b)]
                if len(names) > 1:  # `use crate::b::{self, …}`: the rest says more
                    names = {k: v for k, v in names.items() if k != "self"}
                parts = []
                for name in sorted(names):
                    label = "(the module itself)" if name == "self" else name
                    if a in folders:  # a folder: say which of its files
                        label += f" [{', '.join(sorted(names[name]))}]"
                    parts.append(label)
                print(f"    {a} -> {b}: {', '.join(parts)}", file=out)
    return len(components)


def check(src: Path, out=sys.stdout) -> int:
    """Prints the report for the crates in `src`; the exit status."""
    cycles = 0
    roots = [p for p in (src / "lib.rs", src / "main.rs") if p.is_file()]
    if not roots:
        print(f"no lib.rs or main.rs in {src}", file=out)
        return 2
    seen: set[Path] = set()
    for root in roots:
        crate = load_crate(src, root)
        seen.update(crate.files.values())
        refs = references(crate)
        # The crate root is left out: it declares every module, and its
        # re-exports and items are the crate's face, not a layer.
        top_nodes = sorted({module_name(m[:1]) for m in crate.modules if m})
        folders = {m[0] for m, f in crate.files.items() if m and f.name == "mod.rs"}
        folders |= {m[0] for m in crate.files if len(m) > 1}
        top = Graph()
        per_folder: dict[str, Graph] = defaultdict(Graph)
        for r in refs:
            rel = str(r.file.relative_to(src))
            # The name as seen from the top-level module: `kafka::run` for
            # `crate::source::kafka::run`, `kafka` for the module itself.
            inner = r.target[1:] + (() if r.name == "self" else (r.name,))
            label = "::".join(inner) if inner else "self"
            if r.source and r.target:
                top.add(module_name(r.source[:1]), module_name(r.target[:1]), label, rel)
            if r.source[:1] == r.target[:1] and r.source and r.source[0] in folders:
                a, b = file_of(crate, r.source, src), file_of(crate, r.target, src)
                per_folder[r.source[0]].add(a, b, r.name, rel)
        if len(crate.files) == 1:
            print(f"{root.relative_to(src)}: no modules of its own", file=out)
            continue
        edges = sum(len(v) for v in top.edges.values())
        print(
            f"{root.relative_to(src)}: {len(crate.files)} files, "
            f"{len(top_nodes)} top-level modules, {edges} edges between them",
            file=out,
        )
        found = report("module", "modules", top, top_nodes, folders, out)
        cycles += found
        for folder in sorted(per_folder):
            graph = per_folder[folder]
            nodes = sorted(set(graph.edges) | {b for v in graph.edges.values() for b in v})
            report(f"(informative) file-level in {folder}/:", "files", graph, nodes, set(), out)
        if not found:
            print("no cycle among the top-level modules", file=out)
    unreached = sorted(str(p.relative_to(src)) for p in src.rglob("*.rs") if p not in seen)
    if unreached:
        print(f"not part of any crate (no `mod` declares them): {', '.join(unreached)}", file=out)
    return 1 if cycles else 0


def file_of(crate: Crate, module: Module, src: Path) -> str:
    """The file that holds `module` (an inline module: its file's)."""
    while module not in crate.files:
        module = module[:-1]
    return str(crate.files[module].relative_to(src))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "runtime" / "src"
    parser.add_argument(
        "src", nargs="?", default=str(default), help="the crate's src folder (default: runtime/src)"
    )
    args = parser.parse_args(argv)
    return check(Path(args.src))


if __name__ == "__main__":
    sys.exit(main())
