//! The `postgres` sink against a real PostgreSQL: a throwaway cluster made by
//! `initdb` in a temporary folder and started by `pg_ctl` on a free port on
//! 127.0.0.1, as the `postgres` account (the server refuses root), stopped at
//! the end. No mock.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A PostgreSQL cluster of one test.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// `/usr/lib/postgresql/VERSION/bin` of the newest version installed.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl Pg {
    /// Makes and starts a cluster (`None`, after a skip, without PostgreSQL
    /// or when not root).
    pub fn start(test: &str) -> Option<Pg> {
        let Some(bin) = pg_bin() else {
            skip(
                test,
                "PostgreSQL is not installed (`cargo xtask setup` installs it)",
            );
            return None;
        };
        if !rustix::process::geteuid().is_root() {
            skip(
                test,
                "the PostgreSQL cluster is run as `postgres`: needs root",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown to postgres");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg { dir, bin, port };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs as `postgres`; panics with its
    /// output unless it succeeds.
    fn as_postgres(&self, program: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_prepared_transactions=16",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                self.dir.path().join("log").to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (`fast`: open transactions are rolled back).
    pub fn down(&self) {
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// The connection string of the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A client.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A sink table of `[sinks.db]` for the config builder.
fn pg_sink(config: Config, pg: &Pg, rest: &str) -> Config {
    config
        .sink("db", "postgres")
        .set_str("url", &pg.url())
        .set("table", "\"t\"")
        .set("columns", rest)
}

/// The flights windows job (`update` mode: every change of a window is
/// written again) into an `upsert` table, with `kill -9` five times during
/// the run and a restart each time: the table then equals the windows
/// computed here from the flights — none missing, none twice, none wrong.
#[test]
fn windows_into_postgres_survive_five_kill_9() {
    const TEST: &str = "postgres::windows_into_postgres_survive_five_kill_9";
    let Some(pg) = Pg::start(TEST) else { return };
    let n = 120_000;
    let config = pg_sink(
        Config::new()
            .file_source("in", "in.ndjson")
            .key("/carrier")
            .timestamp("/event_time"),
        &pg,
        "{ key = \"/key\", window_start = \"/window_start\", window_end = \"/window_end\", \
         delayed = \"/delayed\", avg_dep_delay = \"/avg_dep_delay\", max_dep_delay = \"/max_dep_delay\", \
         dep_delay_quantiles = \"/dep_delay_quantiles\" }",
    )
    .set_str("mode", "upsert")
    .set("key", "[\"key\", \"window_start\"]")
    .set(
        "create_table",
        "{ key = \"text\", window_start = \"text\", window_end = \"text\", delayed = \"bigint\", \
         avg_dep_delay = \"double precision\", max_dep_delay = \"bigint\", dep_delay_quantiles = \"jsonb\" }",
    )
    .pipeline("p", "in", &["db"])
    .partitions(2)
    .batch(r#"{ max_records = 500, interval = "10ms" }"#)
    .processor(r#"{ plugin = "flights_delay.wasm", config = { min_delay = 15 } }"#)
    .window(r#"{ kind = "tumbling", size = "1h", watermark = "10m", output_mode = "update" }"#)
    .aggregate(
crate::windows::HOURLY_AGGREGATES,
    )
    .checkpoint("100ms")
    .build();
    let scratch = Scratch::new(&config);
    scratch.write("in.ndjson", &(flights_lines(n).join("\n") + "\n"));

    let mut client = pg.client();
    let rows_now = |client: &mut postgres::Client| -> i64 {
        client
            .query_one("SELECT count(*) FROM t", &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    let mut kills = 0;
    for round in 0..5 {
        let before = rows_now(&mut client);
        let mut daemon = Running::start(scratch.command("run"));
        daemon.wait_for("pipeline started");
        // Kill once some rows have come since the start (or after 3 s).
        let deadline = Instant::now() + Duration::from_millis(3000);
        while rows_now(&mut client) <= before + 20 * (round + 1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50 * round as u64));
        if daemon.child.try_wait().unwrap().is_none() {
            daemon.signal("KILL");
            kills += 1;
        }
        let _ = daemon.finish();
    }
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    let output = scratch.run();
    assert_exit(&output, 0);

    let got: Vec<Value> = client
        .query(
            "SELECT key, window_start, window_end, delayed, avg_dep_delay, max_dep_delay, \
             dep_delay_quantiles::text FROM t ORDER BY window_start, key",
            &[],
        )
        .unwrap()
        .iter()
        .map(window_row)
        .collect();
    let want = hourly_windows_in_order(n);
    crate::windows::assert_rows(&got, &want);
}

/// A window row read back as (key, window_start, window_end, delayed,
/// avg_dep_delay, max_dep_delay, dep_delay_quantiles as text), as the
/// windows tests' ground truth shapes it.
fn window_row(r: &postgres::Row) -> Value {
    json!({
        "key": r.get::<_, String>(0),
        "window_start": r.get::<_, String>(1),
        "window_end": r.get::<_, String>(2),
        "delayed": r.get::<_, i64>(3),
        "avg_dep_delay": r.get::<_, f64>(4),
        "max_dep_delay": r.get::<_, i64>(5),
        "dep_delay_quantiles": serde_json::from_str::<Value>(&r.get::<_, String>(6)).unwrap(),
    })
}

/// The ground truth of the first `n` flights' hourly windows, ordered as the
/// queries above order the table (window start, then key).
fn hourly_windows_in_order(n: usize) -> Vec<Value> {
    let mut want = crate::windows::hourly_windows(n);
    want.sort_by(|a, b| {
        (a["window_start"].as_str(), a["key"].as_str())
            .cmp(&(b["window_start"].as_str(), b["key"].as_str()))
    });
    want
}

/// PostgreSQL stopped for 20 s mid-run: the sink retries with back-off (the
/// daemon stays up, the log and `/sinks` say so), and once the server is back
/// every record is in the table, each once.
#[test]
fn postgres_down_for_20_s_loses_nothing() {
    const TEST: &str = "postgres::postgres_down_for_20_s_loses_nothing";
    let Some(pg) = Pg::start(TEST) else { return };
    let config = pg_sink(
        Config::new()
            .admin()
            .file_source("in", "in.ndjson")
            .follow(),
        &pg,
        "{ n = \"/n\", tag = \"/tag\" }",
    )
    .set("create_table", "{ n = \"bigint\", tag = \"text\" }")
    .pipeline("p", "in", &["db"])
    .batch(r#"{ max_records = 100, interval = "10ms" }"#)
    .build();
    let scratch = Scratch::new(&config);
    let lines = |from: usize, to: usize| -> Vec<String> {
        (from..to)
            .map(|n| format!("{{\"n\":{n},\"tag\":\"t{}\"}}", n % 7))
            .collect()
    };
    scratch.write("in.ndjson", &(lines(0, 5_000).join("\n") + "\n"));
    let mut daemon = Running::start(scratch.command("run"));
    let addr = daemon.admin_addr();
    // 0 until the sink has made the table.
    let count = |pg: &Pg| -> i64 {
        pg.client()
            .query_one("SELECT count(*) FROM t", &[])
            .map_or(0, |r| r.get(0))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg) < 5_000 {
        assert!(
            Instant::now() < deadline,
            "the first 5,000 rows did not come"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    pg.down();
    scratch.append_lines("in.ndjson", &lines(5_000, 10_000));
    daemon.wait_for("cannot write");
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    let (_, sinks) = http(&addr, "GET", "/sinks");
    let sinks: Value = serde_json::from_str(&sinks).unwrap();
    assert_eq!(sinks[0]["blocked"], true, "{sinks}");
    assert!(sinks[0]["write_retries"].as_u64().unwrap() > 0, "{sinks}");

    pg.up();
    daemon.wait_for("the sink writes again");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pg) < 10_000 {
        assert!(
            Instant::now() < deadline,
            "the rest did not come: {}",
            count(&pg)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let ns: Vec<i64> = pg
        .client()
        .query("SELECT n FROM t ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ns, (0..10_000).collect::<Vec<i64>>());
    assert_eq!(count_summary(&output), 10_000);
}

/// `append` with `exactly_once` (two-phase commit at checkpoints), `kill -9`
/// five times mid-run: every input record is a row exactly once. The same
/// job without `exactly_once` is run too, to show the kills land where they
/// make duplicates (at-least-once).
#[test]
fn append_exactly_once_survives_five_kill_9() {
    const TEST: &str = "postgres::append_exactly_once_survives_five_kill_9";
    let Some(pg) = Pg::start(TEST) else { return };
    let n: i64 = 60_000;
    let input: String = (0..n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "p".repeat(50)))
        .collect();
    let run = |table: &str, exactly_once: bool| -> Vec<i64> {
        let config = Config::new()
            .file_source("in", "in.ndjson")
            .sink("db", "postgres")
            .set_str("url", &pg.url())
            .set_str("table", table)
            .set("columns", "{ n = \"/n\" }")
            .set("create_table", "{ n = \"bigint\" }")
            .set("exactly_once", exactly_once)
            .pipeline("p", "in", &["db"])
            .partitions(2)
            .batch(r#"{ max_records = 200, interval = "5ms" }"#)
            .plugin("identity.wasm")
            .checkpoint("150ms")
            .build();
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", &input);
        let mut client = pg.client();
        let rows = |client: &mut postgres::Client| -> i64 {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .map_or(0, |r| r.get(0))
        };
        for round in 1..=5 {
            let mut daemon = Running::start(scratch.command("run"));
            daemon.wait_for("pipeline started");
            let target = n * round / 7;
            let deadline = Instant::now() + Duration::from_secs(20);
            while rows(&mut client) < target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            daemon.signal("KILL");
            let _ = daemon.finish();
        }
        let output = scratch.run();
        assert_exit(&output, 0);
        client
            .query(&format!("SELECT n FROM {table} ORDER BY n"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let want: Vec<i64> = (0..n).collect();
    assert_eq!(run("once", true), want);
    let prepared: i64 = pg
        .client()
        .query_one("SELECT count(*) FROM pg_prepared_xacts", &[])
        .unwrap()
        .get(0);
    assert_eq!(prepared, 0, "prepared transactions left over");
    // The control: at-least-once, every record there, some twice.
    let plain = run("plain", false);
    let mut distinct = plain.clone();
    distinct.dedup();
    assert_eq!(distinct, want);
    assert!(
        plain.len() > want.len(),
        "the kills made no duplicate without exactly_once"
    );
}

/// `exactly_once` needs a checkpointed pipeline of its own.
#[test]
fn exactly_once_needs_a_checkpointed_pipeline_of_its_own() {
    let base = |extra: &str, second: bool| {
        let mut c = Config::new()
            .file_source("in", "in.ndjson")
            .sink("db", "postgres")
            .set_str(
                "url",
                "host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=1",
            )
            .set_str("table", "t")
            .set("columns", "{ n = \"/n\" }")
            .set("create_table", "{ n = \"bigint\" }")
            .set("exactly_once", true)
            .pipeline("p", "in", &["db"]);
        if !extra.is_empty() {
            c = c.checkpoint(extra);
        }
        if second {
            c = c.pipeline("q", "in", &["db"]).checkpoint("1s");
        }
        c.build()
    };
    for (config, want) in [
        (base("", false), "pipeline `p` has none (add `checkpoint"),
        (base("1s", true), "2 pipelines use it (p, q)"),
    ] {
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", "");
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = line_of(&config, "[sinks.db]");
        assert!(
            stderr.contains(&format!("sluice.toml:{line}:")) && stderr.contains(want),
            "{stderr}"
        );
    }
}

fn count_summary(output: &std::process::Output) -> u64 {
    count(output, "p", "out")
}

/// A table or column that does not exist is a config error located at the
/// sink's `table` (`validate`, before anything runs).
#[test]
fn a_missing_table_or_column_is_a_located_config_error() {
    const TEST: &str = "postgres::a_missing_table_or_column_is_a_located_config_error";
    let Some(pg) = Pg::start(TEST) else { return };
    pg.client()
        .batch_execute("CREATE TABLE present (n bigint)")
        .unwrap();
    let no_db = pg.url().replace("dbname=postgres", "dbname=nosuchdb");
    for (url, table, want) in [
        (
            pg.url(),
            "nope",
            "table nope does not exist in database \"postgres\"",
        ),
        (
            pg.url(),
            "present",
            "table present has no column tag (it has: n)",
        ),
        // The server answers and refuses: a config error too, at `url`.
        (no_db, "present", "database \"nosuchdb\" does not exist"),
    ] {
        let config = Config::new()
            .file_source("in", "in.ndjson")
            .sink("db", "postgres")
            .set_str("url", &url)
            .set_str("table", table)
            .set("columns", "{ n = \"/n\", tag = \"/tag\" }")
            .pipeline("p", "in", &["db"])
            .build();
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", "");
        let output = scratch.command("validate").output().unwrap();
        assert_exit(&output, 2);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = line_of(
            &config,
            if url == pg.url() {
                "table = "
            } else {
                "url = "
            },
        );
        assert!(
            stderr.contains(&format!("sluice.toml:{line}:")) && stderr.contains(want),
            "{stderr}"
        );
    }
}

/// Two records of one key in one batch, the key written differently (`"1"`
/// and `1` into an integer key): one row, the later record's.
#[test]
fn an_upsert_batch_with_one_key_twice_keeps_the_last() {
    const TEST: &str = "postgres::an_upsert_batch_with_one_key_twice_keeps_the_last";
    let Some(pg) = Pg::start(TEST) else { return };
    let config = pg_sink(
        Config::new().file_source("in", "in.ndjson"),
        &pg,
        "{ k = \"/k\", v = \"/v\" }",
    )
    .set_str("mode", "upsert")
    .set("key", "[\"k\"]")
    .set("create_table", "{ k = \"bigint\", v = \"bigint\" }")
    .pipeline("p", "in", &["db"])
    .batch(r#"{ max_records = 100, interval = "1s" }"#)
    .build();
    let scratch = Scratch::new(&config);
    scratch.write(
        "in.ndjson",
        "{\"k\":\"1\",\"v\":1}\n{\"k\":1,\"v\":2}\n{\"k\":2,\"v\":3}\n",
    );
    let output = scratch.run();
    assert_exit(&output, 0);
    let rows: Vec<(i64, i64)> = pg
        .client()
        .query("SELECT k, v FROM t ORDER BY k", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, 2), (2, 3)]);
}

/// Rows the server refuses for their data — a `CHECK` and a `NOT NULL`
/// constraint (SQLSTATE class 23), a value out of the column type's range
/// (class 22) — go to the dead-letter sink with the server's message, and
/// every other row of their batches is written; with `exactly_once` too
/// (where the refusal would otherwise abort the open transaction). The bad
/// records are chosen here by the table's rules, not by what sluice did.
#[test]
fn rows_the_database_refuses_are_dead_lettered_and_the_rest_written() {
    const TEST: &str = "postgres::rows_the_database_refuses_are_dead_lettered_and_the_rest_written";
    let Some(pg) = Pg::start(TEST) else { return };
    // Every 7th record has a negative n (CHECK), every 11th none (NOT NULL),
    // every 13th an s out of smallint's range (22003).
    let n = 3_000i64;
    let record = |i: i64| -> (String, bool) {
        let v = if i % 7 == 0 { -i } else { i };
        let s = if i % 13 == 0 { 40_000 } else { i % 100 };
        let line = if i % 11 == 0 {
            format!("{{\"i\":{i},\"s\":{s}}}")
        } else {
            format!("{{\"i\":{i},\"n\":{v},\"s\":{s}}}")
        };
        (line, i % 7 == 0 || i % 11 == 0 || i % 13 == 0)
    };
    let input: String = (1..=n).map(|i| record(i).0 + "\n").collect();
    let bad: Vec<i64> = (1..=n).filter(|&i| record(i).1).collect();
    let good: Vec<i64> = (1..=n).filter(|&i| !record(i).1).collect();
    for (table, exactly_once) in [("refusing", false), ("refusing_once", true)] {
        pg.client()
            .batch_execute(&format!(
                "CREATE TABLE {table} (i bigint PRIMARY KEY, n bigint NOT NULL CHECK (n >= 0), s smallint)"
            ))
            .unwrap();
        let mut config = Config::new()
            .file_source("in", "in.ndjson")
            .file_sink("dlq", "dlq.ndjson")
            .sink("db", "postgres")
            .set_str("url", &pg.url())
            .set_str("table", table)
            .set("columns", "{ i = \"/i\", n = \"/n\", s = \"/s\" }")
            .set("exactly_once", exactly_once)
            .pipeline("p", "in", &["db"])
            .dead_letter("dlq")
            .batch(r#"{ max_records = 250, interval = "5ms" }"#)
            .plugin("identity.wasm");
        if exactly_once {
            config = config.checkpoint("100ms");
        }
        let config = config.build();
        let scratch = Scratch::new(&config);
        scratch.write("in.ndjson", &input);
        let output = scratch.run();
        assert_exit(&output, 0);
        let rows: Vec<i64> = pg
            .client()
            .query(&format!("SELECT i FROM {table} ORDER BY i"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rows, good, "{table}: the rows written");
        let dead = scratch.read_json("dlq.ndjson");
        let mut dead_i: Vec<i64> = dead
            .iter()
            .map(|d| {
                let original: serde_json::Value =
                    serde_json::from_str(d["original"].as_str().unwrap()).unwrap();
                original["i"].as_i64().unwrap()
            })
            .collect();
        dead_i.sort_unstable();
        assert_eq!(dead_i, bad, "{table}: the dead letters");
        for d in &dead {
            let i = serde_json::from_str::<serde_json::Value>(d["original"].as_str().unwrap())
                .unwrap()["i"]
                .as_i64()
                .unwrap();
            let reason = d["reason"].as_str().unwrap();
            assert_eq!(d["stage"], "sink:db");
            // The server's own words: the first rule the row breaks.
            let want = if i % 13 == 0 {
                "SQLSTATE 22003"
            } else if i % 11 == 0 {
                "SQLSTATE 23502"
            } else {
                "SQLSTATE 23514"
            };
            assert!(reason.contains(want), "record {i}: {reason}");
        }
        assert_eq!(count(&output, "p", "out"), good.len() as u64);
        assert_eq!(
            count(&output, "p", "rejected"),
            bad.len() as u64,
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `examples/postgres/sluice.toml`, pointed at a server started here, on the
/// whole flights file: the table holds every window of the main job, each
/// once, with the values computed here from the NDJSON (`timestamptz`
/// columns read back in UTC).
#[test]
fn the_postgres_example_fills_its_table() {
    const TEST: &str = "postgres::the_postgres_example_fills_its_table";
    let Some(pg) = Pg::start(TEST) else { return };
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/postgres/sluice.toml"),
    )
    .unwrap();
    let config = example
        .replace(
            "\"${CARGO_TARGET_DIR:-../../target}/plugins\"",
            "\"@PLUGINS@\"",
        )
        .replace("\"../../target/state-postgres\"", "\"state\"")
        .replace(
            "\"../data/flights-2013.ndjson.gz\"",
            &format!("{:?}", flights_gz()),
        )
        .replace("\"../../target/postgres-out/", "\"out/")
        .replace(
            "\"host=127.0.0.1 port=5432 user=sluice dbname=flights\"",
            &format!("{:?}", pg.url()),
        );
    assert!(
        config.contains("@PLUGINS@") && config.contains(&pg.url()),
        "example config changed shape"
    );
    let scratch = Scratch::new(&config);
    let output = scratch.run();
    assert_exit(&output, 0);
    assert_eq!(count(&output, "hourly", "in"), 336_776);
    let got: Vec<Value> = pg
        .client()
        .query(
            "SELECT carrier, \
               to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               to_char(window_end AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               delayed, avg_dep_delay, max_dep_delay, dep_delay_quantiles::text \
             FROM flights_hourly ORDER BY window_start, carrier",
            &[],
        )
        .unwrap()
        .iter()
        .map(window_row)
        .collect();
    let want = hourly_windows_in_order(usize::MAX);
    assert_eq!(want.len(), 32_839);
    crate::windows::assert_rows(&got, &want);
    assert!(scratch.read_lines("out/dead-letter.ndjson").is_empty());
}
