//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` and runs each under
//! libFuzzer for a while, on its seeds (`fuzz/corpus/TARGET/`) and the
//! corpus it grew before (`target/fuzz/corpus/TARGET/`).
//!
//! The build uses the stable toolchain and the workspace's `target/` folder,
//! where `cargo xtask test` built the dependencies: only the `sluice` crate
//! (with its `fuzzing` feature, so kept apart from the normal build) and the
//! targets are compiled again, with coverage instrumentation (LLVM's
//! SanitizerCoverage, the flags cargo-fuzz passes). This program adds those
//! flags as cargo's `RUSTC_WRAPPER` ([`rustc_wrapper`]), to those crates
//! only; cargo-fuzz would pass them to every crate in `RUSTFLAGS`, building
//! wasmtime and librdkafka once more. libFuzzer comes from Debian's
//! `libclang-rt-14-dev` (see fuzz/build.rs).
//!
//! A crash fails the run: the input is saved in `target/fuzz/artifacts/TARGET/`
//! and the command that replays it is printed. Inputs of crashes since fixed
//! are kept in `fuzz/regressions/TARGET/` and run first.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// The fuzz targets (`fuzz/fuzz_targets/NAME.rs`).
pub const TARGETS: &[&str] = &[
    "config",
    "decode",
    "guest_output",
    "admin",
    "checkpoint",
    "checkpoint_store",
];

/// How long each target runs by default, and with `--smoke` (CI).
const DEFAULT_SECONDS: u64 = 60;
const SMOKE_SECONDS: u64 = 20;

/// Set in the environment of the build's cargo, to the flags added: this
/// program, as its `RUSTC_WRAPPER`, then adds them. runtime/build.rs and
/// fuzz/build.rs watch it, so that cargo builds those crates again when the
/// flags come, go or change (it does not track a wrapper's doings).
pub const INSTRUMENT_ENV: &str = "SLUICE_FUZZ_INSTRUMENT";

/// SanitizerCoverage as libFuzzer uses it (cargo-fuzz's flags, without
/// `--cfg fuzzing`).
const COVERAGE_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
];

/// Added to the targets' executables: no DWARF, 9 MB each instead of 450 (a
/// panic still says where; backtraces name the functions).
const STRIP_FLAG: &str = "-Cstrip=debuginfo";

/// The value of [`INSTRUMENT_ENV`]: every flag the wrapper adds.
fn instrument_value() -> String {
    format!("{} {STRIP_FLAG}", COVERAGE_FLAGS.join(" "))
}

pub const USAGE: &str = "\
       cargo xtask fuzz [--smoke] [--time SECS] [--build] [TARGET...] [-- LIBFUZZER_ARGS...]
                                    build the fuzz targets (fuzz/) and run each for SECS
                                    (default 60; --smoke: 20, as CI); --build: build only.
                                    Targets: config decode guest_output admin checkpoint
                                    checkpoint_store
       cargo xtask fuzz --checkpoint-seeds
                                    write fuzz/corpus/checkpoint/ anew (fuzz/examples/)";

/// The options of `cargo xtask fuzz`.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// Seconds per target.
    pub seconds: u64,
    /// Build only.
    pub build_only: bool,
    /// Write the checkpoint target's seeds instead of fuzzing.
    pub checkpoint_seeds: bool,
    /// The targets to run, in order.
    pub targets: Vec<String>,
    /// Passed on to libFuzzer.
    pub extra: Vec<OsString>,
}

/// Parses the arguments after `fuzz`.
///
/// # Errors
/// An unknown option or target, or a bad number of seconds.
pub fn parse(args: &[OsString]) -> Result<Options, String> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        build_only: false,
        checkpoint_seeds: false,
        targets: Vec::new(),
        extra: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--smoke") => options.seconds = SMOKE_SECONDS,
            Some("--build") => options.build_only = true,
            Some("--checkpoint-seeds") => options.checkpoint_seeds = true,
            Some("--time") => {
                options.seconds = args
                    .next()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--time needs a number of seconds")?;
            }
            Some("--") => {
                options.extra = args.cloned().collect();
                break;
            }
            Some(t) if TARGETS.contains(&t) => options.targets.push(t.to_string()),
            _ => {
                return Err(format!(
                    "unknown fuzz option or target {arg:?} (targets: {})",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(options)
}

/// `cargo xtask fuzz`.
///
/// # Errors
/// The build failed, or a target crashed (or could not run).
pub fn fuzz(repo: &Path, args: &[OsString]) -> Result<(), String> {
    let options = parse(args)?;
    let started = Instant::now();
    if options.checkpoint_seeds {
        build(repo, &["--example", "checkpoint_seeds"])?;
        return super::run(
            Command::new(repo.join("target/debug/examples/checkpoint_seeds"))
                .arg(repo.join("fuzz/corpus")),
        );
    }
    build(repo, &["--bins"])?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if options.build_only {
        return Ok(());
    }
    let mut failed = Vec::new();
    for target in &options.targets {
        match run(repo, target, &options) {
            Ok(summary) => eprintln!("xtask: fuzz {target}: {summary}"),
            Err(e) => {
                eprintln!("xtask: fuzz {target}: FAILED: {e}");
                failed.push(target.as_str());
            }
        }
    }
    // A closing line in the form test runners print.
    println!(
        "fuzz: {} passed, {} failed",
        options.targets.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets failed: {}", failed.join(", ")))
    }
}

/// Builds `what` (cargo's target selection) of fuzz/ into `target/debug/`,
/// instrumented (see the module's doc).
fn build(repo: &Path, what: &[&str]) -> Result<(), String> {
    let wrapper = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    // The workspace's versions of every dependency (cargo drops the packages
    // fuzz/ does not use): those the tests built.
    let lock = repo.join("fuzz/Cargo.lock");
    std::fs::copy(repo.join("Cargo.lock"), &lock)
        .map_err(|e| format!("{}: {e}", lock.display()))?;
    let mut cmd = super::clean_cargo();
    cmd.current_dir(repo)
        .arg("build")
        .args(what)
        .arg("--manifest-path")
        .arg(repo.join("fuzz/Cargo.toml"))
        .arg("--target-dir")
        .arg(repo.join("target"))
        .env("RUSTC_WRAPPER", wrapper)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env(INSTRUMENT_ENV, instrument_value())
        // The plugins (runtime/build.rs) are not needed here.
        .env("SLUICE_SKIP_PLUGIN_BUILD", "1");
    super::run(&mut cmd)
}

/// Whether `args` (this program's, without its name) are those of a rustc
/// wrapper's call: the compiler's path first, in a build that instruments.
pub fn is_wrapper_call(args: &[OsString]) -> bool {
    std::env::var_os(INSTRUMENT_ENV).is_some_and(|v| !v.is_empty())
        && args
            .first()
            .and_then(|a| Path::new(a).file_stem())
            .is_some_and(|s| s == "rustc")
}

/// Whether a crate compiled with `args`, of package `package`, gets the
/// coverage flags: the fuzz targets' package, and `sluice` with its
/// `fuzzing` feature; never a build script.
pub fn instruments(package: &str, args: &[OsString]) -> bool {
    let has = |wanted: &str| args.iter().any(|a| a == wanted);
    let build_script = args
        .windows(2)
        .any(|w| w[0] == "--crate-name" && w[1] == "build_script_build");
    !build_script
        && (package == "sluice-fuzz" || (package == "sluice" && has("feature=\"fuzzing\"")))
}

/// As cargo's `RUSTC_WRAPPER`: runs the compiler (`args[0]`) with its
/// arguments, adding [`COVERAGE_FLAGS`] where [`instruments`] says.
pub fn rustc_wrapper(args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    if instruments(&package, &args[1..]) {
        cmd.args(COVERAGE_FLAGS);
    }
    if package == "sluice-fuzz"
        && args
            .windows(2)
            .any(|w| w[0] == "--crate-type" && w[1] == "bin")
    {
        cmd.arg(STRIP_FLAG);
    }
    let e = cmd.exec();
    eprintln!("xtask: cannot run {:?}: {e}", args[0]);
    ExitCode::FAILURE
}

/// Runs `target` for `options.seconds`; returns a summary line.
fn run(repo: &Path, target: &str, options: &Options) -> Result<String, String> {
    let binary = repo.join("target/debug").join(target);
    let seeds = repo.join("fuzz/corpus").join(target);
    let work = repo.join("target/fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let logs = work.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Files a target writes (the checkpoint store): in memory where there is /dev/shm.
    let scratch = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm").join(format!("sluice-fuzz-{target}"))
    } else {
        work.join("scratch").join(target)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let _remove = RemovedOnDrop(scratch.clone());
    let libfuzzer = |log: &Path| {
        let mut cmd = Command::new(&binary);
        cmd.current_dir(repo)
            .env("SLUICE_FUZZ_SCRATCH", &scratch)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-timeout=10", "-rss_limit_mb=2048"]);
        let dict = repo.join("fuzz/dict").join(format!("{target}.dict"));
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdout(out).stderr(err);
        Ok::<Command, String>(cmd)
    };
    let replay = |input: &Path| format!("target/debug/{target} {}", input.display());

    // The inputs of crashes fixed before, each run once.
    let regressions = list(&repo.join("fuzz/regressions").join(target));
    if !regressions.is_empty() {
        let log = logs.join(format!("{target}-regressions.log"));
        let status = libfuzzer(&log)?
            .args(&regressions)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !status.success() {
            return Err(format!(
                "a regression input crashes again ({status}); see {}",
                log.display()
            ));
        }
    }

    let log = logs.join(format!("{target}.log"));
    let before = list(&artifacts);
    let status = libfuzzer(&log)?
        .arg(format!("-max_total_time={}", options.seconds))
        .arg("-print_final_stats=1")
        .args(&options.extra)
        .arg(&corpus)
        .arg(&seeds)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let new: Vec<String> = list(&artifacts)
            .into_iter()
            .filter(|a| !before.contains(a))
            .map(|a| replay(&a))
            .collect();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "libFuzzer exited with {status}; log {}:\n{}\nreplay: {}",
            log.display(),
            tail.join("\n"),
            if new.is_empty() {
                "(no input saved)".to_string()
            } else {
                new.join("; ")
            }
        ));
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    Ok(format!(
        "{} executions in {} s, {} inputs in its corpus, no crash{}",
        stat("number_of_executed_units"),
        options.seconds,
        list(&corpus).len(),
        if regressions.is_empty() {
            String::new()
        } else {
            format!(" ({} regression input(s) pass)", regressions.len())
        }
    ))
}

/// A folder removed when this is dropped, however the run ends.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files in `dir` (none if it does not exist), sorted.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn options() {
        let all: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            parse(&os(&["--smoke"])).unwrap(),
            Options {
                seconds: SMOKE_SECONDS,
                build_only: false,
                checkpoint_seeds: false,
                targets: all.clone(),
                extra: Vec::new()
            }
        );
        let o = parse(&os(&["--time", "300", "admin", "config", "--", "-jobs=2"])).unwrap();
        assert_eq!(o.seconds, 300);
        assert_eq!(o.targets, ["admin", "config"]);
        assert_eq!(o.extra, os(&["-jobs=2"]));
        assert!(parse(&os(&["nope"])).is_err());
        assert!(parse(&os(&["--time", "0"])).is_err());
    }

    #[test]
    fn only_sluice_with_fuzzing_and_the_targets_are_instrumented() {
        let lib = os(&["--crate-name", "sluice", "--cfg", "feature=\"fuzzing\""]);
        assert!(instruments("sluice", &lib));
        assert!(instruments(
            "sluice-fuzz",
            &os(&["--crate-name", "config", "fuzz_targets/config.rs"])
        ));
        // The normal build of the runtime, a dependency, a build script.
        assert!(!instruments("sluice", &os(&["--crate-name", "sluice"])));
        assert!(!instruments("wasmtime", &os(&["--crate-name", "wasmtime"])));
        let script = os(&[
            "--crate-name",
            "build_script_build",
            "--cfg",
            "feature=\"fuzzing\"",
        ]);
        assert!(!instruments("sluice", &script));
        assert!(!instruments("sluice-fuzz", &script));
    }

    /// Every target has a source file, a `[[bin]]`, seeds, and no seed is large.
    #[test]
    fn targets_are_declared_and_seeded() {
        let repo = crate::repo();
        let manifest = std::fs::read_to_string(repo.join("fuzz/Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                manifest.contains(&format!(
                    "name = \"{target}\"\npath = \"fuzz_targets/{target}.rs\""
                )),
                "{target}"
            );
            let seeds = list(&repo.join("fuzz/corpus").join(target));
            assert!(!seeds.is_empty(), "{target} has no seed");
            for seed in seeds {
                let len = std::fs::metadata(&seed).unwrap().len();
                // A redb file is 72 KiB at least (mostly zeros).
                assert!(len <= 80 * 1024, "{} is {len} bytes", seed.display());
            }
        }
        let sources = list(&repo.join("fuzz/fuzz_targets"));
        assert_eq!(sources.len(), TARGETS.len(), "{sources:?}");
    }

    /// The fuzz build reuses the dependencies `cargo xtask test` built: it
    /// starts from the workspace's lock file, in which every dependency of
    /// the targets already is, and its profiles are the workspace's.
    #[test]
    fn fuzz_build_shares_the_workspace_dependencies() {
        let repo = crate::repo();
        let read = |p: &str| std::fs::read_to_string(repo.join(p)).unwrap();
        let lock = read("Cargo.lock");
        let manifest = read("fuzz/Cargo.toml");
        let dependencies = manifest
            .split("\n[dependencies]\n")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let names: Vec<&str> = dependencies
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .map(|l| l.split(" = ").next().unwrap())
            .collect();
        assert!(
            names.contains(&"sluice") && names.contains(&"arbitrary"),
            "{names:?}"
        );
        for name in names {
            assert!(
                lock.contains(&format!("\nname = \"{name}\"\n")),
                "{name} (a dependency of fuzz/) is not in Cargo.lock"
            );
        }
        let root = read("Cargo.toml");
        let profiles = &root[root.find("\n[profile.").expect("profiles")..];
        assert!(
            read("fuzz/Cargo.toml").contains(profiles),
            "fuzz/Cargo.toml must end with the workspace's [profile] sections"
        );
    }
}
