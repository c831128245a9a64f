//! Links libFuzzer (its `main` runs the targets) from the clang runtime
//! folder (Debian's `libclang-rt-14-dev`, installed by `cargo xtask setup`),
//! or from the archive `SLUICE_LIBFUZZER` names.

use std::path::PathBuf;
use std::process::Command;

const ARCHIVE: &str = "libclang_rt.fuzzer-x86_64.a";

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_LIBFUZZER");
    // As runtime/build.rs: cargo does not track what the wrapper adds.
    println!("cargo:rerun-if-env-changed=SLUICE_FUZZ_INSTRUMENT");
    let archive = match std::env::var_os("SLUICE_LIBFUZZER") {
        Some(path) => PathBuf::from(path),
        None => {
            let dir = Command::new("clang")
                .arg("--print-runtime-dir")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            PathBuf::from(dir).join(ARCHIVE)
        }
    };
    assert!(
        archive.is_file(),
        "libFuzzer not found at {}: install clang and libclang-rt-14-dev (`cargo xtask setup`), \
         or set SLUICE_LIBFUZZER to a libclang_rt.fuzzer archive",
        archive.display()
    );
    let dir = archive.parent().expect("a file has a folder");
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("lib"))
        .and_then(|n| n.strip_suffix(".a"))
        .expect("an archive named libNAME.a");
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static={name}");
    // libFuzzer is C++.
    println!("cargo:rustc-link-lib=stdc++");
}
