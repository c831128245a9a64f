//! The systemd service as installed by the book's by-hand steps
//! (docs/operations/service.md), without
//! systemd as PID 1: `dist/systemd/sluice.service`'s `ExecStartPre=` and
//! `ExecStart=` lines run as systemd would run them on a fresh install — as an
//! unprivileged user of the `DynamicUser` range, with `UMask=0077`, the
//! `CONFIGURATION_DIRECTORY` and an empty, 0700 `STATE_DIRECTORY` it owns,
//! `NOTIFY_SOCKET` — over `dist/sluice.toml` with `/etc/sluice` and
//! `/var/lib/sluice` moved into a scratch root. (`systemd::the_unit_file_verifies`
//! runs `systemd-analyze verify` on the unit.)

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A uid and gid of systemd's `DynamicUser` range (61184–65519).
const DYNAMIC_UID: u32 = 61184;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The values of `key=` lines of `unit` (e.g. `ExecStart`), in order, each
/// split into words with `${NAME}` replaced from `env`.
fn exec_lines(unit: &str, key: &str, env: &HashMap<&str, String>) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|line| {
            line.split_whitespace()
                .map(|word| {
                    env.iter().fold(word.to_string(), |w, (name, value)| {
                        w.replace(&format!("${{{name}}}"), value)
                    })
                })
                .collect()
        })
        .collect()
}

/// `argv` as the unit runs it: as [`DYNAMIC_UID`], no groups, no new
/// privileges, `UMask=0077`, with `env` only (and `PATH`).
fn as_the_unit(argv: &[String], env: &HashMap<&str, String>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={DYNAMIC_UID}"),
        format!("--regid={DYNAMIC_UID}"),
        "--clear-groups".into(),
        "--no-new-privs".into(),
        "sh".into(),
        "-c".into(),
        "umask 0077 && exec \"$@\"".into(),
        "sh".into(),
    ])
    .args(argv)
    .env_clear()
    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
    .env("RUST_LOG", "info")
    .envs(env);
    cmd
}

#[test]
fn the_unit_starts_on_a_fresh_install_and_serves() {
    let unit = std::fs::read_to_string(repo().join("dist/systemd/sluice.service")).unwrap();
    let is_root = real_uid() == 0;
    if !is_root || which("setpriv").is_none() {
        return skip(
            "service::the_unit_starts_on_a_fresh_install_and_serves",
            "needs root and setpriv (util-linux) to run as the unit's dynamic user",
        );
    }
    // The fresh install (the book's docs/operations/service.md, by hand), under a scratch root.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc = r.join("etc/sluice");
    std::fs::create_dir_all(etc.join("plugins")).unwrap();
    let config = std::fs::read_to_string(repo().join("dist/sluice.toml"))
        .unwrap()
        .replace("/etc/sluice", etc.to_str().unwrap())
        .replace(
            "/var/lib/sluice",
            r.join("var/lib/sluice").to_str().unwrap(),
        );
    std::fs::write(etc.join("sluice.toml"), config).unwrap();
    std::fs::copy(
        plugins_dir().join("identity.wasm"),
        etc.join("plugins/identity.wasm"),
    )
    .unwrap();
    // StateDirectory=sluice, StateDirectoryMode=0700: made by systemd, empty,
    // owned by the dynamic user.
    let state = r.join("var/lib/sluice");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(DYNAMIC_UID), Some(DYNAMIC_UID)).unwrap();
    let notify = r.join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let env: HashMap<&str, String> = [
        ("CONFIGURATION_DIRECTORY", etc.to_str().unwrap().to_string()),
        ("STATE_DIRECTORY", state.to_str().unwrap().to_string()),
        ("NOTIFY_SOCKET", notify.to_str().unwrap().to_string()),
    ]
    .into();
    let bin = |argv: Vec<String>| -> Vec<String> {
        argv.into_iter()
            .map(|w| {
                if w == "/usr/bin/sluice" {
                    sluice_bin().to_string()
                } else {
                    w
                }
            })
            .collect()
    };
    for pre in exec_lines(&unit, "ExecStartPre", &env) {
        let output = as_the_unit(&bin(pre.clone()), &env).output().unwrap();
        assert!(
            output.status.success(),
            "ExecStartPre {pre:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let start = exec_lines(&unit, "ExecStart", &env);
    assert_eq!(start.len(), 1, "{start:?}");
    let mut daemon = Running::start(as_the_unit(&bin(start[0].clone()), &env));

    // Type=notify: READY=1, while the daemon runs.
    let begin = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            break;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            let output = daemon.finish();
            panic!(
                "the service exited ({status}) before READY=1 — with Restart=on-failure \
                 systemd would start it again and again:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "no READY=1:\n{}",
            daemon.log.join("\n")
        );
    }
    // A program that may write the state folder (here root) feeds it; the
    // record comes out in the state folder, written by the service's user.
    let input = state.join("input.ndjson");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(&mut file, b"{\"hello\":\"service\"}\n").unwrap();
    let output_file = state.join("output.ndjson");
    let begin = Instant::now();
    while std::fs::read_to_string(&output_file).unwrap_or_default() != "{\"hello\":\"service\"}\n" {
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "output: {:?}\n{}",
            std::fs::read_to_string(&output_file),
            daemon.log.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(&output_file).unwrap();
    assert_eq!(meta.uid(), DYNAMIC_UID);
    assert_eq!(meta.mode() & 0o777, 0o600, "UMask=0077");
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "main", "in"), 1);
    assert_eq!(count(&output, "main", "out"), 1);
}

/// This process's real uid (0: root), from `/proc/self/status`.
fn real_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap()
}

/// The names of the sections of the ELF file `bytes` (64-bit, little-endian).
pub(crate) fn elf_sections(bytes: &[u8]) -> Vec<String> {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names_at = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = names_at + u32_at(header(i));
            let end = start + bytes[start..].iter().position(|b| *b == 0).unwrap();
            String::from_utf8_lossy(&bytes[start..end]).into_owned()
        })
        .collect()
}

/// The book's by-hand install lines (docs/operations/service.md), run into a
/// scratch root: they install the unit, the config and the plugin it names
/// as the tree has them, the stock plugins where the binary finds them, and
/// a binary without debug sections.
#[test]
fn the_book_install_steps_install_a_stripped_binary_and_what_the_unit_needs() {
    let page = std::fs::read_to_string(repo().join("docs/operations/service.md")).unwrap();
    let block = page
        .split("\n## By hand\n")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the book's by-hand install steps");
    let root = tempfile::tempdir().unwrap();
    // What every system has.
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    let installs: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("install "))
        .collect();
    assert_eq!(installs.len(), 5, "{block}");
    // The stock plugins the glob names, as a shell would expand it.
    let mut stock: Vec<String> = std::fs::read_dir(plugins_dir().join("stock"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    stock.sort();
    assert_eq!(stock.len(), 5, "{stock:?}");
    for line in installs {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .flat_map(|a| match a {
                "target/release/sluice" => vec![sluice_bin().to_string()],
                "target/plugins/identity.wasm" => vec![
                    plugins_dir()
                        .join("identity.wasm")
                        .to_str()
                        .unwrap()
                        .to_string(),
                ],
                "target/plugins/stock/*.wasm" => stock.clone(),
                a if a.starts_with('/') => vec![format!("{}{a}", root.path().display())],
                a if a.starts_with("dist/") => vec![repo().join(a).to_str().unwrap().to_string()],
                a => vec![a.to_string()],
            })
            .collect();
        let status = Command::new("install")
            .args(&args)
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(status.success(), "{line}");
    }
    let r = root.path();
    for (installed, source) in [
        (
            "etc/systemd/system/sluice.service",
            repo().join("dist/systemd/sluice.service"),
        ),
        ("etc/sluice/sluice.toml", repo().join("dist/sluice.toml")),
        (
            "etc/sluice/plugins/identity.wasm",
            plugins_dir().join("identity.wasm"),
        ),
        (
            "usr/lib/sluice/stock/jq.wasm",
            plugins_dir().join("stock/jq.wasm"),
        ),
        (
            "usr/lib/sluice/stock/sample.wasm",
            plugins_dir().join("stock/sample.wasm"),
        ),
    ] {
        assert_eq!(
            std::fs::read(r.join(installed)).unwrap(),
            std::fs::read(source).unwrap(),
            "{installed}"
        );
    }
    // The binary under test has debug sections (a debug build); the installed
    // one none, and it still runs.
    let built = elf_sections(&std::fs::read(sluice_bin()).unwrap());
    assert!(built.iter().any(|s| s == ".debug_info"), "{built:?}");
    let bin = r.join("usr/bin/sluice");
    let sections = elf_sections(&std::fs::read(&bin).unwrap());
    // (.debug_gdb_scripts is not debug information: a loaded section naming
    // gdb's pretty-printers, kept by strip.)
    let debug: Vec<&String> = sections
        .iter()
        .filter(|s| s.starts_with(".debug") && *s != ".debug_gdb_scripts")
        .collect();
    assert!(debug.is_empty(), "installed with {debug:?}");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert_exit(&version, 0);
    // It finds the stock plugins where they were installed.
    let check = Command::new(&bin)
        .args(["plugin", "check", "stock/sample.wasm", "--config", "n=2"])
        .current_dir(r)
        .env_remove("SLUICE_STOCK_DIR")
        .output()
        .unwrap();
    assert_exit(&check, 0);
    let installed = r
        .join("usr/lib/sluice/stock/sample.wasm")
        .canonicalize()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains(&installed.display().to_string()), "{text}");
}
