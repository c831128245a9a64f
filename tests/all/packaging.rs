//! The `.deb` (cargo-deb, `[package.metadata.deb]` in runtime/Cargo.toml):
//! built from the debug binary this test run already has (`--no-build
//! --profile dev`: a release build would add minutes to CI), unpacked with
//! `dpkg -x` into a scratch root, and checked file by file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::support::*;

#[test]
fn the_deb_installs_binary_unit_config_and_plugins() {
    let (Some(_), Some(_)) = (which("cargo-deb"), which("dpkg-deb")) else {
        return skip(
            "the_deb_installs_binary_unit_config_and_plugins",
            "no cargo-deb or dpkg-deb on PATH (cargo install cargo-deb)",
        );
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = tempfile::tempdir().unwrap();
    let deb = scratch.path().join("sluice.deb");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&repo)
        .args([
            "deb",
            "-p",
            "sluice",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
            "-Z",
            "gz",
        ])
        .arg("--output")
        .arg(&deb)
        .output()
        .unwrap();
    assert_exit(&output, 0);

    let root = scratch.path().join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());

    // The binary: executable, and the one this test run built.
    let bin = root.join("usr/bin/sluice");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(sluice_bin()).unwrap()
    );
    // The unit, the default config, the plugins folder with the plugin the
    // config names, the docs: copies of the tree's files.
    for (installed, source) in [
        (
            "lib/systemd/system/sluice.service",
            repo.join("dist/systemd/sluice.service"),
        ),
        ("etc/sluice/sluice.toml", repo.join("dist/sluice.toml")),
        (
            "etc/sluice/plugins/README",
            repo.join("dist/plugins/README"),
        ),
        (
            "etc/sluice/plugins/identity.wasm",
            plugins_dir().join("identity.wasm"),
        ),
        ("usr/share/doc/sluice/README.md", repo.join("README.md")),
        (
            "usr/lib/sluice/stock/jq.wasm",
            plugins_dir().join("stock/jq.wasm"),
        ),
        (
            "usr/lib/sluice/stock/fields.wasm",
            plugins_dir().join("stock/fields.wasm"),
        ),
        (
            "usr/lib/sluice/stock/parse.wasm",
            plugins_dir().join("stock/parse.wasm"),
        ),
        (
            "usr/lib/sluice/stock/mask.wasm",
            plugins_dir().join("stock/mask.wasm"),
        ),
        (
            "usr/lib/sluice/stock/sample.wasm",
            plugins_dir().join("stock/sample.wasm"),
        ),
    ] {
        let installed_path = root.join(installed);
        assert_eq!(
            std::fs::read(&installed_path).unwrap_or_else(|e| panic!("{installed}: {e}")),
            std::fs::read(&source).unwrap(),
            "{installed}"
        );
        assert_eq!(
            std::fs::metadata(&installed_path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644,
            "{installed}"
        );
    }

    // Everything under /etc is a conffile (kept on upgrade when edited, as
    // Debian policy wants); the package is named sluice, at the workspace
    // version.
    let control = scratch.path().join("control");
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .status()
        .unwrap();
    assert!(status.success());
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    let mut conffiles: Vec<_> = conffiles.lines().collect();
    conffiles.sort_unstable();
    assert_eq!(
        conffiles,
        [
            "/etc/sluice/plugins/README",
            "/etc/sluice/plugins/identity.wasm",
            "/etc/sluice/sluice.toml"
        ]
    );
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.lines().any(|l| l == "Package: sluice"), "{fields}");
    assert!(
        fields
            .lines()
            .any(|l| l == format!("Version: {}-1", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );

    // Without --no-strip (as `cargo deb -p sluice` runs), the packaged binary
    // has no debug information.
    let stripped = scratch.path().join("stripped.deb");
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&repo)
        .args([
            "deb",
            "-p",
            "sluice",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-Z",
            "gz",
        ])
        .arg("--output")
        .arg(&stripped)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stripped_root = scratch.path().join("stripped-root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&stripped)
        .arg(&stripped_root)
        .status()
        .unwrap();
    assert!(status.success());
    let sections =
        crate::service::elf_sections(&std::fs::read(stripped_root.join("usr/bin/sluice")).unwrap());
    assert!(
        !sections
            .iter()
            .any(|s| s == ".debug_info" || s == ".debug_line"),
        "{sections:?}"
    );

    // The packaged config and plugin work together: validate resolves the
    // plugin from the (relocated) plugins folder and compiles it.
    let config = std::fs::read_to_string(root.join("etc/sluice/sluice.toml"))
        .unwrap()
        .replace("/etc/sluice", root.join("etc/sluice").to_str().unwrap())
        .replace("/var/lib/sluice", scratch.path().to_str().unwrap());
    std::fs::write(scratch.path().join("input.ndjson"), "").unwrap();
    let relocated = scratch.path().join("sluice.toml");
    std::fs::write(&relocated, config).unwrap();
    let output = Command::new(&bin)
        .arg("validate")
        .arg("--config")
        .arg(&relocated)
        .output()
        .unwrap();
    assert_exit(&output, 0);

    // The installed binary finds the installed stock plugins
    // (usr/bin/../lib/sluice/stock), not the build's: the stock folder of
    // this tree is out of its reach, and the plugins folder has none.
    let with_stock = std::fs::read_to_string(&relocated).unwrap().replace(
        "processors = [ { plugin = \"identity.wasm\" } ]",
        "processors = [ { plugin = \"stock/jq.wasm\", config = { program = \".\" } } ]",
    );
    assert!(
        with_stock.contains("stock/jq.wasm"),
        "the packaged config changed shape"
    );
    std::fs::write(&relocated, with_stock).unwrap();
    let output = Command::new(&bin)
        .arg("validate")
        .arg("--config")
        .arg(&relocated)
        .env_remove("SLUICE_STOCK_DIR")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let output = Command::new(&bin)
        .args(["plugin", "check", "stock/jq.wasm", "--config", "program=."])
        .current_dir(scratch.path())
        .env_remove("SLUICE_STOCK_DIR")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let installed = root
        .join("usr/lib/sluice/stock/jq.wasm")
        .canonicalize()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&installed.display().to_string()),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
