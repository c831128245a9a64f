//! The book in `docs/` cannot rot: every TOML snippet goes through the real
//! `sluice validate` (or, marked `<!-- toml: partial -->`, through a TOML
//! parser), every `sluice … --help` shown is the binary's own output, every
//! relative link and image names a file (and an anchor a heading) of the book,
//! and `mdbook build docs` passes without a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{plugins_dir, skip, sluice_bin, which};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A fenced code block of a page.
#[derive(Debug)]
struct Block {
    /// The page, as `docs/…` (what a failure names).
    page: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string's first word (`toml`, `text`, `sh`, …; empty when none).
    lang: String,
    /// The inside of an HTML comment on the closest non-blank line above the
    /// fence (`toml: partial`, `sluice help: run`), trimmed.
    marker: Option<String>,
    /// The block's lines, without the fences (and without the indentation of
    /// a fence inside a list item).
    text: String,
}

/// The fenced code blocks of a page (CommonMark fences of ``` or ~~~,
/// possibly indented inside a list item).
fn blocks(page: &str, text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let indent = lines[i].len() - trimmed.len();
        let fence_char = trimmed.chars().next();
        let fence_len = trimmed
            .chars()
            .take_while(|c| Some(*c) == fence_char)
            .count();
        if !matches!(fence_char, Some('`' | '~')) || fence_len < 3 {
            i += 1;
            continue;
        }
        let fence = &trimmed[..fence_len];
        let info = trimmed[fence_len..].trim();
        let lang = info
            .split(|c: char| c.is_whitespace() || c == ',')
            .next()
            .unwrap_or("")
            .to_string();
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| {
                l.trim()
                    .strip_prefix("<!--")
                    .and_then(|l| l.strip_suffix("-->"))
            })
            .map(|m| m.trim().to_string());
        let mut body = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let t = lines[j].trim_start();
            if t.starts_with(fence) && t.trim_end().chars().all(|c| Some(c) == fence_char) {
                break;
            }
            let strip = lines[j].len() - t.len();
            body.push(&lines[j][strip.min(indent)..]);
            j += 1;
        }
        found.push(Block {
            page: page.to_string(),
            line: i + 1,
            lang,
            marker,
            text: body.iter().map(|l| format!("{l}\n")).collect(),
        });
        i = j + 1;
    }
    found
}

/// Every `.md` file under `docs/`, as (`docs/…` name, path), sorted.
fn pages() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let repo = repo();
    let mut paths = Vec::new();
    walk(&repo.join("docs"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&repo).unwrap().to_str().unwrap().to_string();
            (name, p)
        })
        .collect()
}

/// Every code block of the book.
fn all_blocks() -> Vec<Block> {
    pages()
        .iter()
        .flat_map(|(name, path)| blocks(name, &std::fs::read_to_string(path).unwrap()))
        .collect()
}

/// Checks one ```` ```toml ```` block: marked partial, it must parse as TOML;
/// else `sluice validate` must accept it as a config file in a folder that
/// holds the repository's `examples/` and `target/plugins/` (as the
/// repository's root does). The error names `docs/PAGE.md:LINE`, the line in
/// the page that the error is about when `validate` names one.
fn check_toml(block: &Block) -> Result<(), String> {
    let at = format!("{}:{}", block.page, block.line);
    match block.marker.as_deref() {
        Some(m) if m.starts_with("toml: partial") => {
            return toml::from_str::<toml::Table>(&block.text)
                .map(|_| ())
                .map_err(|e| format!("{at}: a partial snippet that is not TOML: {e}"));
        }
        Some(m) if m.starts_with("toml") => {
            return Err(format!(
                "{at}: unknown marker `<!-- {m} -->` (`<!-- toml: partial -->` or none)"
            ));
        }
        _ => {}
    }
    let scratch = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("examples"), scratch.path().join("examples")).unwrap();
    std::fs::create_dir(scratch.path().join("target")).unwrap();
    std::os::unix::fs::symlink(plugins_dir(), scratch.path().join("target/plugins")).unwrap();
    let config = scratch.path().join("sluice.toml");
    std::fs::write(&config, &block.text).unwrap();
    let output = Command::new(sluice_bin())
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `error: /tmp/…/sluice.toml:3:1: …` → the page's line 3 lines below the fence.
    let located = stderr
        .split_once("sluice.toml:")
        .and_then(|(_, rest)| rest.split(':').next()?.parse::<usize>().ok())
        .map(|line| format!("{}:{}", block.page, block.line + line))
        .unwrap_or(at.clone());
    Err(format!(
        "{located}: `sluice validate` refuses the snippet at {at} (mark it `<!-- toml: partial -->` \
         if it is deliberately a part of a config): {}",
        stderr
            .trim()
            .replace(config.to_str().unwrap(), "sluice.toml")
    ))
}

/// Every TOML snippet of the book is a config `sluice validate` accepts, or
/// is marked partial and parses.
#[test]
fn every_toml_snippet_validates() {
    let toml: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| b.lang == "toml")
        .collect();
    let complete = toml
        .iter()
        .filter(|b| b.marker.as_deref().is_none_or(|m| !m.starts_with("toml")))
        .count();
    // The book's snippets known today, so that this test cannot pass by finding none.
    assert!(
        toml.len() >= 40 && complete >= 25,
        "{} snippets, {complete} complete",
        toml.len()
    );
    let failures: Vec<String> = toml.iter().filter_map(|b| check_toml(b).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The snippet check fails on a broken snippet, naming the page's line of
/// the error, and passes a good one: the test above can fail.
#[test]
fn a_broken_snippet_fails_with_its_line() {
    let page = "docs/broken.md";
    let good = "\
[daemon]
plugins_dir = \"target/plugins\"

[sources.flights]
type = \"file\"
path = \"examples/data/flights-2013.ndjson.gz\"

[sinks.out]
type = \"stdout\"

[pipelines.p]
source = \"flights\"
processors = [{ plugin = \"flights_delay.wasm\", config = { min_delay = 15 } }]
sinks = [\"out\"]
";
    let text = format!(
        "# A page\n\nSome words.\n\n```toml\n{good}```\n\n```toml\n{}```\n\n<!-- toml: partial -->\n```toml\n[sinks.x\n```\n",
        good.replace("type = \"stdout\"", "type = \"stdout\"\nbatch_size = 10")
    );
    let found = blocks(page, &text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(check_toml(&found[0]), Ok(()));
    // The misplaced field is on the snippet's line 10, the page's line 10
    // below the fence.
    let err = check_toml(&found[1]).unwrap_err();
    let fence = found[1].line;
    assert!(
        err.starts_with(&format!("docs/broken.md:{}: ", fence + 10))
            && err.contains("unknown field `batch_size`"),
        "{err}"
    );
    assert_eq!(
        text.lines().nth(fence + 10 - 1),
        Some("batch_size = 10"),
        "{err}"
    );
    // A partial snippet is still parsed.
    let err = check_toml(&found[2]).unwrap_err();
    assert!(
        err.starts_with(&format!("docs/broken.md:{}: ", found[2].line)) && err.contains("not TOML"),
        "{err}"
    );
    // A plugin that is not there: refused, with the line of the stage.
    let missing = blocks(
        page,
        &format!(
            "```toml\n{}```\n",
            good.replace("flights_delay", "no_such_plugin")
        ),
    );
    let err = check_toml(&missing[0]).unwrap_err();
    assert!(
        err.starts_with("docs/broken.md:14: ") && err.contains("no_such_plugin"),
        "{err}"
    );
}

/// `sluice ARGS… --help`, as the binary prints it.
fn help_of(command: &str) -> String {
    let output = Command::new(sluice_bin())
        .args(command.split_whitespace())
        .arg("--help")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "sluice {command} --help");
    String::from_utf8(output.stdout).unwrap()
}

/// Every `--help` shown in the book (a block after `<!-- sluice help: CMD -->`)
/// is the binary's, and every command has one.
#[test]
fn every_help_shown_is_the_binarys() {
    let mut shown = BTreeSet::new();
    let mut failures = Vec::new();
    for block in all_blocks() {
        let Some(command) = block
            .marker
            .as_deref()
            .and_then(|m| m.strip_prefix("sluice help:"))
            .map(str::trim)
        else {
            continue;
        };
        let real = help_of(command);
        if block.text.trim_end() != real.trim_end() {
            failures.push(format!(
                "{}:{}: `sluice {command} --help` differs; it is now:\n{real}",
                block.page, block.line
            ));
        }
        shown.insert(command.to_string());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let commands = [
        "",
        "run",
        "validate",
        "checkpoints",
        "top",
        "tap",
        "plugin",
        "plugin new",
        "plugin check",
        "plugin run",
    ];
    let missing: Vec<&&str> = commands.iter().filter(|c| !shown.contains(**c)).collect();
    assert!(missing.is_empty(), "no help shown for {missing:?}");
    // And the binary has no command the book leaves out.
    let top = help_of("");
    let listed: Vec<&str> = top
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for command in listed {
        assert!(shown.contains(command), "`sluice {command}` has no page");
    }
}

/// mdBook's heading ids: lower case, spaces to `-`, only letters, digits,
/// `-` and `_` kept, of the heading's text (code and links as their text); a
/// repeated id gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_code = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_code = !in_code;
        }
        if in_code || !t.starts_with('#') {
            continue;
        }
        let heading = t.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let mut plain = String::new();
        let mut rest = heading.trim();
        // `[text](url)` → text
        while let Some(open) = rest.find('[') {
            plain.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match (after.find("]("), after.find(')')) {
                (Some(close), Some(end)) if close < end => {
                    plain.push_str(&after[..close]);
                    rest = &after[end + 1..];
                }
                _ => {
                    plain.push('[');
                    rest = after;
                }
            }
        }
        plain.push_str(rest);
        let id: String = plain
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_ascii_lowercase())
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let n = seen.entry(id.clone()).or_insert(0);
        ids.insert(if *n == 0 {
            id.clone()
        } else {
            format!("{id}-{n}")
        });
        *n += 1;
    }
    ids
}

/// The `](target)` links and images of a page's text, outside code blocks and
/// code spans, with their line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans (`` `…` `` and ``` `` … `` ```).
        let mut prose = String::new();
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            prose.push_str(&rest[..start]);
            let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
            let after = &rest[start + ticks..];
            match after.find(&"`".repeat(ticks)) {
                Some(end) => rest = &after[end + ticks..],
                None => {
                    rest = after;
                }
            }
        }
        prose.push_str(rest);
        for part in prose.split("](").skip(1) {
            if let Some(end) = part.find(')') {
                found.push((n + 1, part[..end].to_string()));
            }
        }
    }
    found
}

/// Every relative link and image of the book resolves to a file of the book
/// (and an anchor to a heading of that page); every page is in SUMMARY.md.
#[test]
fn every_link_and_image_resolves() {
    let docs = repo().join("docs");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).unwrap();
    let in_summary: BTreeSet<PathBuf> = links(&summary)
        .into_iter()
        .map(|(_, l)| docs.join(l))
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, path) in pages() {
        if name != "docs/SUMMARY.md" && !in_summary.contains(&path) {
            failures.push(format!(
                "{name}: not in docs/SUMMARY.md (mdbook leaves it out)"
            ));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, link) in links(&text) {
            let link = link.split_whitespace().next().unwrap_or("").to_string();
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            let Ok(target) = target.canonicalize() else {
                failures.push(format!("{name}:{line}: `{link}`: no such file"));
                continue;
            };
            if !target.starts_with(&docs) {
                failures.push(format!(
                    "{name}:{line}: `{link}` leaves docs/: the built book does not have it (use a full URL)"
                ));
                continue;
            }
            if !target.is_file() {
                failures.push(format!("{name}:{line}: `{link}`: not a file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_page = target.extension().is_some_and(|e| e == "md");
                if !is_page || !anchors(&std::fs::read_to_string(&target).unwrap()).contains(anchor)
                {
                    failures.push(format!(
                        "{name}:{line}: `{link}`: no heading `#{anchor}` there"
                    ));
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} links found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The link check itself: a broken file, a broken anchor, a link out of the
/// book; links in code are not links.
#[test]
fn the_link_reader_sees_links_and_anchors() {
    let text = "# Top `x`\n\n## The [compile](a.md) cache\n\n## Top x\n\nSee [a](b.md#c) and ![i](../x.png), `[no](code.md)`.\n\n```sh\n[no](code.md)\n```\n";
    assert_eq!(
        links(text),
        vec![
            (3, "a.md".to_string()),
            (7, "b.md#c".to_string()),
            (7, "../x.png".to_string())
        ]
    );
    let ids = anchors(text);
    assert!(ids.contains("top-x") && ids.contains("the-compile-cache") && ids.contains("top-x-1"));
}

/// `mdbook build docs` builds the book without a warning (mdbook itself
/// does not fail on them).
#[test]
fn the_book_builds_without_warnings() {
    let Some(mdbook) = which("mdbook") else {
        skip(
            "docs::the_book_builds_without_warnings",
            "mdbook not on PATH (`cargo xtask setup` installs it)",
        );
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(mdbook)
        .arg("build")
        .arg(repo().join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "mdbook build docs:\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(warnings.is_empty(), "mdbook build docs:\n{log}");
    // The pages and images are there.
    for file in [
        "index.html",
        "quick-start.html",
        "sinks/parquet.html",
        "plugins/stock/README.html",
        "console.png",
    ] {
        assert!(out.path().join(file).is_file(), "{file} not built:\n{log}");
    }
    // The search index (`searchindex-HASH.js`): the one feature installed.
    assert!(
        std::fs::read_dir(out.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("searchindex")),
        "no search index:\n{log}"
    );
}
