//! Helpers: a scratch folder with a config, the `sluice` binary, summaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `sluice` binary under test.
pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// Where runtime/build.rs put the example plugins.
pub fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("SLUICE_PLUGINS_DIR"))
}

/// The bundled flights (gzip NDJSON).
pub fn flights_gz() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/flights-2013.ndjson.gz")
}

/// The first `n` lines of the flights, decompressed.
pub fn flights_lines(n: usize) -> Vec<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(flights_gz()).unwrap();
    std::io::BufReader::new(flates(file))
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

fn flates(file: std::fs::File) -> flate2::read::MultiGzDecoder<std::fs::File> {
    flate2::read::MultiGzDecoder::new(file)
}

/// A `sluice.toml`, built table by table. Keys set after a table is opened go
/// into that table, as in the TOML it writes:
///
/// ```ignore
/// let toml = Config::new()
///     .file_source("in", "in.ndjson").follow()
///     .file_sink("out", "out.ndjson")
///     .pipeline("p", "in", &["out"]).plugin("identity.wasm")
///     .build();
/// ```
///
/// `[daemon]` comes first, with `plugins_dir = "@PLUGINS@"` (see
/// [`Scratch::new`]) and `admin = "off"`; the other tables follow in the order
/// they were opened. Values given as `raw` are TOML as written (`"1h"` with its
/// quotes, `{ max_records = 10 }`, `4`).
#[derive(Clone, Debug)]
pub struct Config {
    /// (header, keys as (key, TOML value)), `[daemon]` first.
    tables: Vec<(String, Vec<(String, String)>)>,
    /// The table that keys go into.
    current: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// `[daemon]` with the test plugins and no admin API.
    pub fn new() -> Self {
        let config = Config {
            tables: vec![("daemon".to_string(), Vec::new())],
            current: 0,
        };
        config
            .set_str("plugins_dir", "@PLUGINS@")
            .set_str("admin", "off")
    }

    /// Opens the table `[header]` (e.g. `daemon.telemetry`); if it is there
    /// already, keys go into it again (to change a key of a copy).
    pub fn table(mut self, header: &str) -> Self {
        match self.tables.iter().position(|(h, _)| h == header) {
            Some(i) => self.current = i,
            None => {
                self.tables.push((header.to_string(), Vec::new()));
                self.current = self.tables.len() - 1;
            }
        }
        self
    }

    /// Leaves out the table `[header]` (which must be there).
    pub fn remove(mut self, header: &str) -> Self {
        let i = self
            .tables
            .iter()
            .position(|(h, _)| h == header)
            .unwrap_or_else(|| panic!("no [{header}] to remove"));
        assert_ne!(i, 0, "[daemon] stays");
        self.tables.remove(i);
        self.current = 0;
        self
    }

    /// `key = raw` in the current table, in place of an earlier value.
    pub fn set(mut self, key: &str, raw: impl std::fmt::Display) -> Self {
        let keys = &mut self.tables[self.current].1;
        let value = raw.to_string();
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => keys.push((key.to_string(), value)),
        }
        self
    }

    /// `key = "value"` in the current table.
    pub fn set_str(self, key: &str, value: &str) -> Self {
        self.set(key, toml_string(value))
    }

    /// Leaves `key` out of the current table.
    pub fn unset(mut self, key: &str) -> Self {
        self.tables[self.current].1.retain(|(k, _)| k != key);
        self
    }

    /// `key = raw` in `[daemon]`; the current table stays.
    pub fn daemon(mut self, key: &str, raw: impl std::fmt::Display) -> Self {
        let current = std::mem::replace(&mut self.current, 0);
        self = self.set(key, raw);
        self.current = current;
        self
    }

    /// The admin API on a free loopback port (see [`Running::admin_addr`]).
    pub fn admin(self) -> Self {
        self.daemon("admin", toml_string("127.0.0.1:0"))
    }

    /// `[sources.NAME]` of `type = kind`.
    pub fn source(self, name: &str, kind: &str) -> Self {
        self.table(&format!("sources.{name}")).set_str("type", kind)
    }

    /// `[sources.NAME]` reading the file `path`.
    pub fn file_source(self, name: &str, path: &str) -> Self {
        self.source(name, "file").set_str("path", path)
    }

    /// `[sinks.NAME]` of `type = kind`.
    pub fn sink(self, name: &str, kind: &str) -> Self {
        self.table(&format!("sinks.{name}")).set_str("type", kind)
    }

    /// `[sinks.NAME]` writing the file `path`.
    pub fn file_sink(self, name: &str, path: &str) -> Self {
        self.sink(name, "file").set_str("path", path)
    }

    /// `[pipelines.NAME]` from `source` to `sinks`.
    pub fn pipeline(self, name: &str, source: &str, sinks: &[&str]) -> Self {
        let sinks: Vec<String> = sinks.iter().map(|s| toml_string(s)).collect();
        self.table(&format!("pipelines.{name}"))
            .set_str("source", source)
            .set("sinks", format!("[{}]", sinks.join(", ")))
    }

    /// A file source: `follow = true`.
    pub fn follow(self) -> Self {
        self.set("follow", true)
    }

    /// A file sink: `truncate = true`.
    pub fn truncate(self) -> Self {
        self.set("truncate", true)
    }

    /// A source: `key = "pointer"`.
    pub fn key(self, pointer: &str) -> Self {
        self.set_str("key", pointer)
    }

    /// A source: `timestamp = "pointer"`.
    pub fn timestamp(self, pointer: &str) -> Self {
        self.set_str("timestamp", pointer)
    }

    /// A pipeline: `partitions = n`.
    pub fn partitions(self, n: usize) -> Self {
        self.set("partitions", n)
    }

    /// A pipeline: `batch = raw`, e.g. `{ max_records = 10, interval = "10ms" }`.
    pub fn batch(self, raw: &str) -> Self {
        self.set("batch", raw)
    }

    /// A pipeline: one more processor, `raw` being its inline table, e.g.
    /// `{ plugin = "misbehave.wasm", config = { mode = "loop" } }`.
    pub fn processor(self, raw: &str) -> Self {
        let list = self.tables[self.current]
            .1
            .iter()
            .find(|(k, _)| k == "processors")
            .map(|(_, v)| v.clone());
        let list = match list {
            // Written by this method: `[...]`.
            Some(list) => format!("{}, {raw}]", &list[..list.len() - 1]),
            None => format!("[{raw}]"),
        };
        self.set("processors", list)
    }

    /// A pipeline: one more processor, the plugin `file` with its defaults.
    pub fn plugin(self, file: &str) -> Self {
        self.processor(&format!("{{ plugin = {} }}", toml_string(file)))
    }

    /// A pipeline: `window = raw`, e.g. `{ kind = "tumbling", size = "1h" }`.
    pub fn window(self, raw: &str) -> Self {
        self.set("window", raw)
    }

    /// A pipeline: `aggregate = raw`, e.g. `[{ op = "count" }]`.
    pub fn aggregate(self, raw: &str) -> Self {
        self.set("aggregate", raw)
    }

    /// A pipeline: `dead_letter = "sink"`.
    pub fn dead_letter(self, sink: &str) -> Self {
        self.set_str("dead_letter", sink)
    }

    /// A pipeline: `on_error = "policy"`.
    pub fn on_error(self, policy: &str) -> Self {
        self.set_str("on_error", policy)
    }

    /// A pipeline: `checkpoint = { interval = "interval" }`.
    pub fn checkpoint(self, interval: &str) -> Self {
        self.set(
            "checkpoint",
            format!("{{ interval = {} }}", toml_string(interval)),
        )
    }

    /// The TOML text, for [`Scratch::new`].
    pub fn build(&self) -> String {
        let mut out = String::new();
        for (header, keys) in &self.tables {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{header}]\n"));
            for (key, value) in keys {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        out
    }
}

/// `s` as a TOML basic string, quoted.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The 1-based number of the one line of `text` that contains `needle`: where
/// an error about that line must point.
pub fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} on lines {lines:?} of:\n{text}");
    lines[0]
}

/// A daemon with its admin API on a free port and one pipeline `p`: the
/// followed `in.ndjson` through the identity plugin to `out.ndjson`.
pub fn identity_following_with_admin() -> Config {
    Config::new()
        .admin()
        .file_source("in", "in.ndjson")
        .follow()
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out"])
        .batch(r#"{ max_records = 10, interval = "10ms" }"#)
        .plugin("identity.wasm")
}

/// A scratch folder holding `sluice.toml`; the daemon runs with it as cwd.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A folder with `sluice.toml` = `config`, where `@PLUGINS@` is replaced by the
    /// plugins folder.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config.replace("@PLUGINS@", plugins_dir().to_str().unwrap());
        std::fs::write(dir.path().join("sluice.toml"), config).unwrap();
        Scratch { dir }
    }

    /// Replaces `sluice.toml` (as [`Scratch::new`] writes it).
    pub fn write_config(&self, config: &str) {
        let config = config.replace("@PLUGINS@", plugins_dir().to_str().unwrap());
        let tmp = self.path(".sluice.toml.new");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(tmp, self.path("sluice.toml")).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).unwrap();
    }

    /// The lines of the file `name`, each parsed as JSON.
    pub fn read_json(&self, name: &str) -> Vec<serde_json::Value> {
        self.read_lines(name)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Appends `lines`, each newline-terminated, to the file `name`.
    pub fn append_lines(&self, name: &str, lines: &[String]) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(name))
            .unwrap();
        file.write_all((lines.join("\n") + "\n").as_bytes())
            .unwrap();
    }

    pub fn read_lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A `sluice SUBCOMMAND --config sluice.toml` command, run in the folder.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(sluice_bin());
        cmd.current_dir(self.dir.path())
            .args([subcommand, "--config", "sluice.toml"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Waits (up to 60 s) until the file `name` has at least `n` lines.
    pub fn wait_for_lines(&self, name: &str, n: usize) {
        let start = std::time::Instant::now();
        while self.read_lines(name).len() < n {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "waited for {n} lines in {name}, have {}",
                self.read_lines(name).len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Runs `sluice run` to completion.
    pub fn run(&self) -> Output {
        self.command("run").output().unwrap()
    }
}

/// The summary lines (`sluice: pipeline=P in=… out=…`) of a run, by pipeline.
pub fn summaries(stderr: &[u8]) -> HashMap<String, HashMap<String, String>> {
    let text = String::from_utf8_lossy(stderr);
    let mut all = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("sluice: ") else {
            continue;
        };
        let fields: HashMap<String, String> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(p) = fields.get("pipeline") {
            all.insert(p.clone(), fields);
        }
    }
    all
}

/// A counter of the summary of `pipeline`.
pub fn count(output: &Output, pipeline: &str, field: &str) -> u64 {
    let all = summaries(&output.stderr);
    let Some(s) = all.get(pipeline) else {
        panic!(
            "no summary for pipeline {pipeline}; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    };
    s[field].parse().unwrap()
}

/// Panics with the daemon's stderr unless it exited with `code`.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running daemon whose stderr is read as it comes; killed if the test
/// panics before [`Running::finish`].
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The stderr lines seen so far.
    pub log: Vec<String>,
}

impl Running {
    /// Starts `command` with stderr piped.
    pub fn start(mut command: Command) -> Self {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits (up to 60 s) for a stderr line containing `what`.
    pub fn wait_for(&mut self, what: &str) {
        while !self.log.iter().any(|l| l.contains(what)) {
            match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no `{what}` in the log:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Waits (up to 60 s) until `n` stderr lines contain `what`.
    pub fn wait_for_count(&mut self, what: &str, n: usize) {
        while self.count(what) < n {
            match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "fewer than {n} `{what}` in the log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Reads stderr lines until one satisfies `found` (true) or the daemon
    /// exits (false); panics after 60 s of silence.
    pub fn wait_until_or_exit(&mut self, mut found: impl FnMut(&str) -> bool) -> bool {
        loop {
            match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) => {
                    let hit = found(&line);
                    self.log.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(_) => panic!("nothing awaited in the log:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Waits (polling) until the daemon exits; panics with `what` if it
    /// still runs after `limit`.
    pub fn exits_within(&mut self, limit: std::time::Duration, what: &str) {
        let start = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < limit, "no exit within {limit:?}: {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits for the admin API's log line; its address (`127.0.0.1:PORT`).
    pub fn admin_addr(&mut self) -> String {
        const LISTENING: &str = "admin API listening on ";
        self.wait_for(LISTENING);
        self.log
            .iter()
            .find_map(|l| l.split(LISTENING).nth(1))
            .unwrap()
            .trim()
            .to_string()
    }

    /// How many stderr lines seen so far contain `what`.
    pub fn count(&self, what: &str) -> usize {
        self.log.iter().filter(|l| l.contains(what)).count()
    }

    /// Sends `signal` (e.g. `"TERM"`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the status and the whole log as stderr.
    pub fn finish(mut self) -> std::process::Output {
        let status = self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: (std::mem::take(&mut self.log).join("\n") + "\n").into_bytes(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where `name` is on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether a missing tool must fail its test: `SLUICE_REQUIRE_TOOLCHAINS` set
/// to anything but empty or `0` (`cargo xtask test` sets it, after installing
/// them all).
pub fn toolchains_required() -> bool {
    std::env::var_os("SLUICE_REQUIRE_TOOLCHAINS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips a test that needs a tool this machine lacks — or fails it when
/// [`toolchains_required`]. A skipped test still shows as `ok` in the
/// harness's list (it has no "skipped" outcome), so the reason goes straight to
/// the process's stderr, which the harness does not capture, and into
/// `target/skipped-tests.txt` (or the file `SLUICE_SKIPPED_TESTS` names).
pub fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let line = format!("SKIPPED {test}: {reason}");
    assert!(
        !toolchains_required(),
        "{line}, and SLUICE_REQUIRE_TOOLCHAINS is set: a missing tool fails its test \
         (`cargo xtask test` installs them all)"
    );
    // Not `eprintln!`: the harness captures that, and shows nothing of a test
    // that returns.
    let _ = writeln!(
        std::io::stderr(),
        "{line} (not run; `cargo xtask test` installs what it needs)"
    );
    let log = std::env::var_os("SLUICE_SKIPPED_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/skipped-tests.txt")
        });
    let mut old = std::fs::read_to_string(&log).unwrap_or_default();
    if !old.contains(&line) {
        old.push_str(&line);
        old.push('\n');
        let _ = std::fs::write(log, old);
    }
}

/// One HTTP/1.1 request to `addr` (`HOST:PORT`); (status, body). A chunked
/// body is decoded.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    try_http(addr, method, path).unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`http`], with connection and protocol errors returned.
pub fn try_http(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Error, Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    // An API that does not answer fails the test instead of hanging it.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::other(format!("not an HTTP response: {response:?}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut decoded = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).map_err(Error::other)?;
        if size == 0 || after.len() < size {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after.get(size + 2..).unwrap_or_default();
    }
    Ok((status, decoded))
}

#[test]
fn the_config_builder_writes_tables_in_order_with_keys_where_set() {
    let config = Config::new()
        .file_source("in", "in.ndjson")
        .follow()
        .key("/k")
        .file_sink("out", "out.ndjson")
        .pipeline("p", "in", &["out", "dlq"])
        .plugin("identity.wasm")
        .processor(r#"{ plugin = "tag.wasm", config = { v = "a" } }"#)
        .dead_letter("dlq")
        .table("daemon.telemetry")
        .set_str("otlp_endpoint", "http://127.0.0.1:1")
        .admin()
        .set("export_interval", "\"1h\"");
    assert_eq!(
        config.build(),
        r#"[daemon]
plugins_dir = "@PLUGINS@"
admin = "127.0.0.1:0"

[sources.in]
type = "file"
path = "in.ndjson"
follow = true
key = "/k"

[sinks.out]
type = "file"
path = "out.ndjson"

[pipelines.p]
source = "in"
sinks = ["out", "dlq"]
processors = [{ plugin = "identity.wasm" }, { plugin = "tag.wasm", config = { v = "a" } }]
dead_letter = "dlq"

[daemon.telemetry]
otlp_endpoint = "http://127.0.0.1:1"
export_interval = "1h"
"#
    );
    // A table opened again takes keys again; one removed is gone.
    let edited = config
        .table("sources.in")
        .set("follow", false)
        .unset("key")
        .remove("daemon.telemetry")
        .build();
    assert!(
        edited.contains("[sources.in]\ntype = \"file\"\npath = \"in.ndjson\"\nfollow = false\n\n"),
        "{edited}"
    );
    assert!(!edited.contains("telemetry"), "{edited}");
    assert_eq!(line_of(&edited, "dead_letter"), 18);
}

#[test]
fn toml_strings_are_escaped() {
    assert_eq!(toml_string("a\"b\\c\nd\te"), r#""a\"b\\c\nd\u0009e""#);
    let parsed: toml::Value =
        toml::from_str(&format!("v = {}", toml_string("a\"b\\c\nd\te"))).unwrap();
    assert_eq!(parsed["v"].as_str(), Some("a\"b\\c\nd\te"));
}

/// Makes a named pipe (FIFO) at `path`, mode 0600.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}
