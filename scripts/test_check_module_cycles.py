"""Tests of check_module_cycles.py on small crates written to a temp folder.

    python3 -m unittest scripts/test_check_module_cycles.py
"""

import io
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_module_cycles as cmc  # noqa: E402


def crate(files: dict[str, str]) -> Path:
    """A src folder holding `files` (path -> Rust source), removed at exit."""
    tmp = tempfile.TemporaryDirectory()
    unittest.addModuleCleanup(tmp.cleanup)
    src = Path(tmp.name) / "src"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return src


def run(src: Path) -> tuple[int, str]:
    out = io.StringIO()
    status = cmc.check(src, out)
    return status, out.getvalue()


class Cycles(unittest.TestCase):
    def test_a_three_module_cycle_fails_and_names_what_each_edge_imports(self):
        src = crate(
            {
                "lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n",
                "a.rs": "use crate::b::Thing;\npub struct X;\n",
                "b.rs": "pub struct Thing;\npub fn f() { crate::c::g(); }\n",
                "c.rs": "use crate::a::{self, X as Y};\npub fn g() { let _ = a::other(); }\n",
                # Uses the cycle, is not part of it.
                "d.rs": "use crate::a::X;\n",
            }
        )
        status, out = run(src)
        self.assertEqual(status, 1, out)
        self.assertIn("module cycle 1 of 1 (3 modules): a, b, c\n", out)
        self.assertIn("  e.g. a -> b -> c -> a\n", out)
        self.assertIn("    a -> b: Thing\n", out)
        self.assertIn("    b -> c: g\n", out)
        # `self` is left out where the alias says more: `a::other`.
        self.assertIn("    c -> a: X, other\n", out)
        self.assertNotIn("d ->", out)

    def test_a_chain_without_cycle_passes(self):
        src = crate(
            {
                "lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
                "a.rs": "use crate::b::Thing;\n",
                "b.rs": "pub struct Thing;\npub fn f() { crate::c::g(); }\n",
                "c.rs": "pub fn g() {}\n",
            }
        )
        status, out = run(src)
        self.assertEqual(status, 0, out)
        self.assertIn("lib.rs: 4 files, 3 top-level modules, 2 edges between them\n", out)
        self.assertIn("no cycle among the top-level modules\n", out)
        self.assertNotIn("cycle 1", out)

    def test_comments_strings_and_unit_tests_are_not_imports(self):
        src = crate(
            {
                "lib.rs": "pub mod a;\npub mod b;\n",
                "a.rs": "use crate::b::Thing;\n",
                "b.rs": """
                    //! See [`crate::a::X`].
                    pub struct Thing; // not crate::a::X
                    /* crate::a::X /* nested */ crate::a::X */
                    pub const S: &str = "crate::a::X";
                    pub const R: &str = r#"use crate::a::X;"#;
                    pub fn f<'a>(s: &'a str) -> char { let _ = s; 'c' }
                    #[cfg(test)]
                    mod tests {
                        use crate::a::X;
                    }
                    #[cfg(test)]
                    mod more_tests;
                """,
                # Not compiled outside tests: not read.
                "b/more_tests.rs": "use crate::a::X;\n",
            }
        )
        status, out = run(src)
        self.assertEqual(status, 0, out)
        self.assertIn("1 edges between them", out)

    def test_a_folder_is_one_module_and_its_file_cycles_are_informative(self):
        src = crate(
            {
                "lib.rs": "pub mod a;\npub mod folder;\n",
                "a.rs": "pub struct X;\n",
                "folder/mod.rs": "mod inner;\npub use inner::Y;\npub struct Z;\n",
                "folder/inner.rs": "use super::Z;\nuse super::super::a::X;\npub struct Y;\n",
            }
        )
        status, out = run(src)
        self.assertEqual(status, 0, out)
        self.assertIn("lib.rs: 4 files, 2 top-level modules, 1 edges between them\n", out)
        self.assertIn(
            "(informative) file-level in folder/: cycle 1 of 1 (2 files): "
            "folder/inner.rs, folder/mod.rs\n",
            out,
        )
        self.assertIn("    folder/inner.rs -> folder/mod.rs: Z\n", out)
        self.assertIn("    folder/mod.rs -> folder/inner.rs: Y\n", out)

        # A module using the folder's file closes a cycle with the folder; the
        # edge names the file of the folder that imports.
        (src / "a.rs").write_text(
            "pub struct X;\npub fn f() -> crate::folder::inner::Y { todo!() }\n"
        )
        status, out = run(src)
        self.assertEqual(status, 1, out)
        self.assertIn("module cycle 1 of 1 (2 modules): a, folder\n", out)
        self.assertIn("    a -> folder: inner::Y\n", out)
        self.assertIn("    folder -> a: X [folder/inner.rs]\n", out)

    def test_the_binary_is_its_own_crate(self):
        src = crate(
            {
                "lib.rs": "pub mod a;\n",
                "a.rs": "pub struct X;\n",
                # `crate::` in the binary's files is the binary: cli -> a
                # is an edge there, not in the library. The root uses `cli`
                # and `cli` the root: no cycle (the root is left out).
                "main.rs": (
                    "mod cli;\nmod a;\nuse sluice::a::X;\n"
                    "fn main() { cli::run(); }\nfn main_only() {}\n"
                ),
                "cli.rs": "use crate::a::Y;\nuse crate::main_only;\npub fn run() {}\n",
                "stray.rs": "use crate::a::X;\n",
            }
        )
        status, out = run(src)
        self.assertEqual(status, 0, out)
        self.assertIn("lib.rs: 2 files, 1 top-level modules, 0 edges between them\n", out)
        self.assertIn("main.rs: 3 files, 2 top-level modules, 1 edges between them\n", out)
        self.assertIn("not part of any crate (no `mod` declares them): stray.rs\n", out)


class Parts(unittest.TestCase):
    def test_use_trees(self):
        self.assertEqual(
            cmc.use_paths("crate::a::{self, b::{C, D as E}, f::*}"),
            [
                (["crate", "a"], None),
                (["crate", "a", "b", "C"], None),
                (["crate", "a", "b", "D"], "E"),
                (["crate", "a", "f", "*"], None),
            ],
        )
        self.assertEqual(cmc.use_paths("::std::fmt"), [])

    def test_tarjan_finds_each_component_and_ignores_self_loops(self):
        edges = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"e", "c"}, "e": {"e"}}
        self.assertEqual(cmc.tarjan(list("abcde"), edges), [["a", "b"], ["c", "d"]])
        self.assertEqual(cmc.tarjan(list("ab"), {"a": {"b"}}), [])

    def test_strings_and_comments_are_blanked_lines_kept(self):
        text = 'let s = "a\\"b"; // c\nlet r = r#"x"y"#; /* d\n */ let c = \'"\';'
        self.assertEqual(
            cmc.strip_comments_and_strings(text),
            'let s = ""; \nlet r = ""; \n  let c = \' \';',
        )


if __name__ == "__main__":
    unittest.main()
