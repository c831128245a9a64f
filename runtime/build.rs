//! Builds the example and stock plugins (`plugins/`, a workspace of its own)
//! for `wasm32-wasip2` and copies the components to `target/plugins/` (the
//! stock ones to `target/plugins/stock/`), where the example configs, the
//! integration tests and a `sluice` run from this tree find them. The same idea as
//! wasmtime's `crates/test-programs/artifacts/build.rs`.
//!
//! Set `SLUICE_SKIP_PLUGIN_BUILD=1` to skip it (packaging the daemon alone).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let out_dir = target_dir.join("plugins");
    println!(
        "cargo:rustc-env=SLUICE_WASMTIME_VERSION={}",
        locked_version(&root.join("Cargo.lock"), "wasmtime")
    );
    println!("cargo:rustc-env=SLUICE_PLUGINS_DIR={}", out_dir.display());
    println!("cargo:rerun-if-env-changed=SLUICE_SKIP_PLUGIN_BUILD");
    // `cargo xtask fuzz` adds coverage instrumentation through a rustc
    // wrapper, which cargo does not track: rebuild when it comes or goes.
    println!("cargo:rerun-if-env-changed=SLUICE_FUZZ_INSTRUMENT");
    for watched in ["plugins", "plugin-sdk", "wit"] {
        rerun_if_changed(&root.join(watched));
    }
    if env::var_os("SLUICE_SKIP_PLUGIN_BUILD").is_some_and(|v| v == "1") {
        return;
    }

    ensure_target();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Run from plugins/ so that plugins/.cargo/config.toml applies.
    cmd.current_dir(root.join("plugins"))
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir.join("plugins-build"));
    // Do not leak the outer build's settings (clippy's wrapper, host flags,
    // coverage instrumentation, the jobserver of a finished parent) into the guests.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the plugins");
    assert!(status.success(), "building the plugins in plugins/ failed");

    let stock_dir = out_dir.join(STOCK);
    std::fs::create_dir_all(&stock_dir).unwrap();
    let built = target_dir
        .join("plugins-build")
        .join(TARGET)
        .join("release");
    for entry in std::fs::read_dir(&built).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".wasm"))
        else {
            continue;
        };
        // The stock plugins (crates `stock-NAME`) go to stock/NAME.wasm, the
        // folder `plugin = "stock/NAME.wasm"` is resolved in (see
        // runtime/src/stock.rs); the example plugins to the top.
        let dest = match name.strip_prefix("stock_") {
            Some(stock) => stock_dir.join(stock),
            None => out_dir.join(name),
        };
        // Write to a temporary name and rename, so a daemon watching the folder
        // never sees a half-copied file.
        let tmp = dest.with_extension("wasm.tmp");
        std::fs::copy(&path, &tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }
}

/// The stock plugins' folder under the plugins folder.
const STOCK: &str = "stock";

/// The version of `package` in `lock` (a Cargo.lock), or `unknown`.
fn locked_version(lock: &Path, package: &str) -> String {
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let wanted = format!("name = \"{package}\"");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == wanted
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = "))
        {
            return version.trim_matches('"').to_string();
        }
    }
    "unknown".into()
}

/// rustup installs the targets of rust-toolchain.toml with a new toolchain, but
/// not on a toolchain already installed: add it when it is missing.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot
        .map(|s| Path::new(&s).join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if !installed {
        println!(
            "cargo:warning=installing the {TARGET} target with rustup (needed to build the plugins)"
        );
        let ok = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`rustup target add {TARGET}` failed: install the target, then build again"
        );
    }
}

fn rerun_if_changed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
