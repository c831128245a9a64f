//! `sluice plugin new NAME --lang rust|python|js|c [--kind aggregator|keyed]`: writes a
//! ready-to-build plugin project from the templates in `templates/` (embedded
//! in the binary), with the WIT contract in `wit/plugin.wit` (a keyed
//! processor's, package 0.2.0, in `wit/0.2.0/plugin.wit`).
//!
//! Every processor template is the same small processor ("tag": adds `"tag":
//! <config tag>` to each JSON object, refuses anything else) with a `build.sh`,
//! a README (toolchain, build, `sluice plugin run`, deploy) and a sample
//! `events.ndjson`; `rust-aggregator`, `python-aggregator` and `js-aggregator`
//! (`--kind aggregator`) are a window aggregator (the `n` most frequent values
//! of a field); `rust-keyed`, `python-keyed` and `js-keyed` (`--kind keyed`)
//! are a keyed processor with a state per key (it counts each key's events). In the files, `{{name}}` becomes the plugin name,
//! `{{name_snake}}` the same with `_` for `-`, and (Rust) `{{sdk}}` the
//! `sluice-plugin-sdk` dependency. Python and JavaScript projects also get a
//! copy of their SDK (`sdk/python/sluice_sdk/`, `sdk/js/sluice.js`), embedded
//! here too, so that a new project builds and tests offline.

use std::path::{Path, PathBuf};

/// The WIT contract, written into every project but a keyed one.
pub const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The WIT contract of package 0.2.0 (the `keyed-processor` world), written
/// into a keyed project.
pub const WIT_0_2_0: &str = include_str!("../../../wit/0.2.0/plugin.wit");

/// Languages and their files (path in the project, template text).
pub const TEMPLATES: &[(&str, &[(&str, &str)])] = &[
    (
        "rust",
        &[
            (
                ".cargo/config.toml",
                include_str!("../../../templates/rust/.cargo/config.toml"),
            ),
            (
                ".gitignore",
                include_str!("../../../templates/rust/.gitignore"),
            ),
            (
                "Cargo.toml",
                include_str!("../../../templates/rust/Cargo.toml"),
            ),
            (
                "README.md",
                include_str!("../../../templates/rust/README.md"),
            ),
            ("build.sh", include_str!("../../../templates/rust/build.sh")),
            (
                "events.ndjson",
                include_str!("../../../templates/rust/events.ndjson"),
            ),
            (
                "rust-toolchain.toml",
                include_str!("../../../templates/rust/rust-toolchain.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../templates/rust/src/lib.rs"),
            ),
        ],
    ),
    (
        "rust-aggregator",
        &[
            (
                ".cargo/config.toml",
                include_str!("../../../templates/rust/.cargo/config.toml"),
            ),
            (
                ".gitignore",
                include_str!("../../../templates/rust/.gitignore"),
            ),
            (
                "Cargo.toml",
                include_str!("../../../templates/rust/Cargo.toml"),
            ),
            (
                "README.md",
                include_str!("../../../templates/rust-aggregator/README.md"),
            ),
            ("build.sh", include_str!("../../../templates/rust/build.sh")),
            (
                "events.ndjson",
                include_str!("../../../templates/rust-aggregator/events.ndjson"),
            ),
            (
                "rust-toolchain.toml",
                include_str!("../../../templates/rust/rust-toolchain.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../templates/rust-aggregator/src/lib.rs"),
            ),
        ],
    ),
    (
        "rust-keyed",
        &[
            (
                ".cargo/config.toml",
                include_str!("../../../templates/rust/.cargo/config.toml"),
            ),
            (
                ".gitignore",
                include_str!("../../../templates/rust/.gitignore"),
            ),
            (
                "Cargo.toml",
                include_str!("../../../templates/rust-keyed/Cargo.toml"),
            ),
            (
                "README.md",
                include_str!("../../../templates/rust-keyed/README.md"),
            ),
            ("build.sh", include_str!("../../../templates/rust/build.sh")),
            (
                "events.ndjson",
                include_str!("../../../templates/rust-keyed/events.ndjson"),
            ),
            (
                "rust-toolchain.toml",
                include_str!("../../../templates/rust/rust-toolchain.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../templates/rust-keyed/src/lib.rs"),
            ),
        ],
    ),
    (
        "python",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/python/.gitignore"),
            ),
            (
                "README.md",
                include_str!("../../../templates/python/README.md"),
            ),
            ("app.py", include_str!("../../../templates/python/app.py")),
            (
                "test_app.py",
                include_str!("../../../templates/python/test_app.py"),
            ),
            (
                "build.sh",
                include_str!("../../../templates/python/build.sh"),
            ),
            (
                "events.ndjson",
                include_str!("../../../templates/python/events.ndjson"),
            ),
        ],
    ),
    (
        "python-aggregator",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/python/.gitignore"),
            ),
            (
                "README.md",
                include_str!("../../../templates/python-aggregator/README.md"),
            ),
            (
                "app.py",
                include_str!("../../../templates/python-aggregator/app.py"),
            ),
            (
                "test_app.py",
                include_str!("../../../templates/python-aggregator/test_app.py"),
            ),
            (
                "build.sh",
                include_str!("../../../templates/python-aggregator/build.sh"),
            ),
            (
                "events.ndjson",
                include_str!("../../../templates/python-aggregator/events.ndjson"),
            ),
        ],
    ),
    (
        "python-keyed",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/python/.gitignore"),
            ),
            (
                "README.md",
                include_str!("../../../templates/python-keyed/README.md"),
            ),
            (
                "app.py",
                include_str!("../../../templates/python-keyed/app.py"),
            ),
            (
                "test_app.py",
                include_str!("../../../templates/python-keyed/test_app.py"),
            ),
            (
                "build.sh",
                include_str!("../../../templates/python-keyed/build.sh"),
            ),
            (
                "events.ndjson",
                include_str!("../../../templates/python-keyed/events.ndjson"),
            ),
        ],
    ),
    (
        "js-keyed",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/js/.gitignore"),
            ),
            (
                "README.md",
                include_str!("../../../templates/js-keyed/README.md"),
            ),
            ("app.js", include_str!("../../../templates/js-keyed/app.js")),
            (
                "processor.js",
                include_str!("../../../templates/js-keyed/processor.js"),
            ),
            (
                "processor.test.js",
                include_str!("../../../templates/js-keyed/processor.test.js"),
            ),
            (
                "package.json",
                include_str!("../../../templates/js/package.json"),
            ),
            (
                "build.sh",
                include_str!("../../../templates/js-keyed/build.sh"),
            ),
            (
                "events.ndjson",
                include_str!("../../../templates/js-keyed/events.ndjson"),
            ),
        ],
    ),
    (
        "js-aggregator",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/js/.gitignore"),
            ),
            (
                "README.md",
                include_str!("../../../templates/js-aggregator/README.md"),
            ),
            (
                "app.js",
                include_str!("../../../templates/js-aggregator/app.js"),
            ),
            (
                "aggregator.js",
                include_str!("../../../templates/js-aggregator/aggregator.js"),
            ),
            (
                "aggregator.test.js",
                include_str!("../../../templates/js-aggregator/aggregator.test.js"),
            ),
            (
                "package.json",
                include_str!("../../../templates/js/package.json"),
            ),
            (
                "build.sh",
                include_str!("../../../templates/js-aggregator/build.sh"),
            ),
            (
                "events.ndjson",
                include_str!("../../../templates/js-aggregator/events.ndjson"),
            ),
        ],
    ),
    (
        "js",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/js/.gitignore"),
            ),
            ("README.md", include_str!("../../../templates/js/README.md")),
            ("app.js", include_str!("../../../templates/js/app.js")),
            (
                "processor.js",
                include_str!("../../../templates/js/processor.js"),
            ),
            (
                "processor.test.js",
                include_str!("../../../templates/js/processor.test.js"),
            ),
            (
                "package.json",
                include_str!("../../../templates/js/package.json"),
            ),
            ("build.sh", include_str!("../../../templates/js/build.sh")),
            (
                "events.ndjson",
                include_str!("../../../templates/js/events.ndjson"),
            ),
        ],
    ),
    (
        "c",
        &[
            (
                ".gitignore",
                include_str!("../../../templates/c/.gitignore"),
            ),
            ("README.md", include_str!("../../../templates/c/README.md")),
            ("app.c", include_str!("../../../templates/c/app.c")),
            ("build.sh", include_str!("../../../templates/c/build.sh")),
            (
                "events.ndjson",
                include_str!("../../../templates/c/events.ndjson"),
            ),
        ],
    ),
];

/// The SDK each language's project gets a copy of (path in the project, file),
/// written as it is (no `{{…}}` filling): the project builds and tests offline,
/// with no package to install but the language's toolchain.
pub const SDKS: &[(&str, &[(&str, &str)])] = &[
    (
        "python",
        &[
            (
                "sluice_sdk/__init__.py",
                include_str!("../../../sdk/python/sluice_sdk/__init__.py"),
            ),
            (
                "sluice_sdk/_component.py",
                include_str!("../../../sdk/python/sluice_sdk/_component.py"),
            ),
            (
                "sluice_sdk/_keyed.py",
                include_str!("../../../sdk/python/sluice_sdk/_keyed.py"),
            ),
            (
                "sluice_sdk/py.typed",
                include_str!("../../../sdk/python/sluice_sdk/py.typed"),
            ),
        ],
    ),
    (
        "js",
        &[
            ("sluice.js", include_str!("../../../sdk/js/sluice.js")),
            ("sluice.d.ts", include_str!("../../../sdk/js/sluice.d.ts")),
        ],
    ),
];

/// The languages there are templates for.
pub fn languages() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(l, _)| *l).collect()
}

/// Writes a new project for plugin `name` in `lang` into `dir` (created; it must
/// not exist or be empty). `sdk` is the TOML value of the Rust SDK dependency.
/// Returns the files written.
///
/// # Errors
/// An unknown language, a name that is not `[a-z][a-z0-9_-]*`, a folder that is
/// not empty, or a write error.
pub fn create(name: &str, lang: &str, dir: &Path, sdk: &str) -> anyhow::Result<Vec<PathBuf>> {
    let files = TEMPLATES
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no template for `{lang}` (there are: {})",
                languages().join(", ")
            )
        })?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        anyhow::bail!(
            "plugin name `{name}`: use lower-case letters, digits, `_` and `-`, starting with a letter"
        );
    }
    use anyhow::Context as _;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("{} is not a folder that can be read", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    let snake = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name_snake}}", &snake)
            .replace("{{name}}", name)
            .replace("{{sdk}}", sdk)
    };
    let mut written = Vec::new();
    let mut write = |rel: &str, text: &str| -> anyhow::Result<()> {
        use anyhow::Context as _;
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path);
        Ok(())
    };
    for (rel, text) in files {
        write(rel, &fill(text))?;
    }
    // `python-aggregator` takes the `python` SDK.
    let base = lang.split('-').next().unwrap_or(lang);
    let sdk_files = SDKS
        .iter()
        .filter(|(l, _)| *l == base)
        .flat_map(|(_, f)| *f);
    for (rel, text) in sdk_files {
        write(rel, text)?;
    }
    if lang.ends_with("-keyed") {
        write("wit/0.2.0/plugin.wit", WIT_0_2_0)?;
    } else {
        write("wit/plugin.wit", WIT)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyed project gets the 0.2.0 contract (and not 0.1.0's), its
    /// placeholders filled.
    #[test]
    fn a_keyed_project_gets_the_wit_of_package_0_2_0() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        let written = create("my-counter", "rust-keyed", &project, "{ path = \"sdk\" }").unwrap();
        let wit = std::fs::read_to_string(project.join("wit/0.2.0/plugin.wit")).unwrap();
        assert!(wit.contains("package sluice:plugin@0.2.0;"));
        assert!(!project.join("wit/plugin.wit").exists());
        assert!(written.contains(&project.join("wit/0.2.0/plugin.wit")));
        let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-counter\""), "{cargo}");
        assert!(
            cargo.contains("sluice-plugin-sdk = { path = \"sdk\" }"),
            "{cargo}"
        );
        for path in &written {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                !text.contains("{{"),
                "{}: an unfilled placeholder",
                path.display()
            );
        }
    }

    /// Python and JavaScript projects get the SDK byte for byte (no `{{…}}`
    /// filling), beside the template's files.
    #[test]
    fn python_and_js_projects_get_a_copy_of_their_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (lang, sdk_files) in [
            (
                "python-aggregator",
                &[(
                    "sluice_sdk/__init__.py",
                    "sdk/python/sluice_sdk/__init__.py",
                )][..],
            ),
            ("js-aggregator", &[("sluice.js", "sdk/js/sluice.js")][..]),
            (
                "python",
                &[
                    (
                        "sluice_sdk/__init__.py",
                        "sdk/python/sluice_sdk/__init__.py",
                    ),
                    (
                        "sluice_sdk/_component.py",
                        "sdk/python/sluice_sdk/_component.py",
                    ),
                    ("sluice_sdk/_keyed.py", "sdk/python/sluice_sdk/_keyed.py"),
                    ("sluice_sdk/py.typed", "sdk/python/sluice_sdk/py.typed"),
                ][..],
            ),
            (
                "js",
                &[
                    ("sluice.js", "sdk/js/sluice.js"),
                    ("sluice.d.ts", "sdk/js/sluice.d.ts"),
                ][..],
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("p");
            let written = create("my-plugin", lang, &project, "").unwrap();
            for (rel, source) in sdk_files {
                let copy = std::fs::read(project.join(rel)).unwrap();
                assert_eq!(
                    copy,
                    std::fs::read(root.join(source)).unwrap(),
                    "{lang}: {rel}"
                );
                assert!(written.contains(&project.join(rel)), "{lang}: {rel}");
            }
            for path in &written {
                let text = std::fs::read_to_string(path).unwrap();
                assert!(
                    !text.contains("{{name"),
                    "{}: an unfilled placeholder",
                    path.display()
                );
            }
        }
    }
}
