//! Keyed processors on Kafka (issue 19): `examples/keyed` — the `plane_gaps`
//! plugin over the flights keyed by tail number — reading a 4-partition
//! topic with three daemons in one consumer group, one of them killed with
//! SIGKILL mid-run. Each Kafka partition's keyed state (every plane's last
//! departure, its idle timer, the partition's watermark) lives in the
//! partition's changelog record with its offset, and moves to the daemon
//! that is assigned the partition; the output is checked against the
//! ground truth computed here from the input by the documented rules
//! (`keyed::expected`, with the Kafka partitions as the partitions).
//!
//! What is asserted, from the documented guarantee (docs/concepts/keyed-state.md,
//! "Kafka"): the state is exactly-once (a restored state has seen exactly
//! the records before its offset), the output at-least-once (what the killed
//! daemon wrote after its last checkpoint is written again, identical, by
//! the daemon that takes its partitions over). So:
//! - the distinct output records are exactly the ground truth's: a lost
//!   state would give a departure `minutes_since_prev: null` or a wrong
//!   gap, or an idle record at the wrong time (or none), none of which is in
//!   the ground truth; a state transition applied twice would give a gap of
//!   0 — also not in it;
//! - each plane's records, with repeats of records already seen removed,
//!   come in the ground truth's order for that plane;
//! - the only repeats are whole records the killed daemon had written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde_json::Value;

use crate::kafka::{Broker, start_and_kill_one};
use crate::keyed::{canonical, expected_in_order};
use crate::support::*;

/// Partitions of the input topic.
const PARTITIONS: usize = 4;

/// Kafka's default partitioner for a keyed record (the Java client's, and
/// librdkafka's `murmur2_random`): `toPositive(murmur2(key)) % partitions`.
fn partition_of(key: &str) -> usize {
    (sluice::source::router::murmur2(key.as_bytes()) & 0x7fff_ffff) as usize % PARTITIONS
}

/// One cancelled "flight" per Kafka partition, dated 2014-06: the plugin
/// passes it unchanged and sets no timer, and it moves its partition's
/// watermark past every 2013 timer, so every idle record is written (a
/// Kafka input has no end to fire them at). Its key is one that Kafka's
/// partitioner puts on that partition.
fn flush_lines() -> Vec<String> {
    (0..PARTITIONS)
        .map(|p| {
            let key = (0..)
                .map(|i| format!("FLUSH{p}-{i}"))
                .find(|k| partition_of(k) == p)
                .unwrap();
            format!(
                r#"{{"tailnum":"{key}","cancelled":true,"event_time":"2014-06-0{}T00:00:00Z"}}"#,
                p + 1
            )
        })
        .collect()
}

/// A record to produce: an explicit partition (`None`: Kafka's partitioner
/// picks it from the key), its key, its value.
type Produced = (Option<i32>, Option<String>, String);

/// The records to produce, in order: (explicit partition for a record
/// without a tail number — round-robin, as `keyed::expected` routes them —
/// or `None`: Kafka's partitioner picks it from the key; key; line), and
/// the number each partition must end up with.
fn records(lines: &[String]) -> (Vec<Produced>, Vec<i64>) {
    let mut ends = vec![0i64; PARTITIONS];
    let mut next_keyless = 0;
    let records = lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["tailnum"].as_str() {
                Some(k) => {
                    ends[partition_of(k)] += 1;
                    (None, Some(k.to_string()), line.clone())
                }
                None => {
                    let p = next_keyless;
                    next_keyless = (p + 1) % PARTITIONS;
                    ends[p] += 1;
                    (Some(p as i32), None, line.clone())
                }
            }
        })
        .collect();
    (records, ends)
}

/// Produces `records` to topic `flights` in chunks of `chunk`, `pause`
/// apart, on a thread (load that goes on while daemons join and die); a
/// keyed record's partition is chosen by librdkafka's `murmur2_random`
/// partitioner, Kafka's default.
fn produce_slowly(
    broker: &Broker,
    records: Vec<Produced>,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    let addr = broker.addr.clone();
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .create()
            .unwrap();
        for part in records.chunks(chunk) {
            for (partition, key, value) in part {
                let mut record = BaseRecord::<str, str>::to("flights").payload(value.as_str());
                if let Some(p) = partition {
                    record = record.partition(*p);
                }
                if let Some(k) = key {
                    record = record.key(k.as_str());
                }
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

/// `examples/keyed`'s pipeline reading topic `flights` of `input` in group
/// `group`, writing topic `planes` of `output`.
fn config(input: &Broker, output: &Broker, group: &str) -> String {
    format!(
        r#"
[daemon]
plugins_dir = "@PLUGINS@"
state_dir = "state"
admin = "off"

[sources.flights]
type = "kafka"
brokers = "{input}"
topics = ["flights"]
group_id = "{group}"
format = "json"
key = "/tailnum"
timestamp = "/event_time"
# A member that dies is noticed within seconds (tests only).
properties = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 500, "fetch.wait.max.ms" = 50 }}

[sinks.planes]
type = "kafka"
brokers = "{output}"
topic = "planes"
properties = {{ "linger.ms" = 5 }}

[sinks.no_tailnum]
type = "file"
path = "out/no-tailnum.ndjson"

[pipelines.planes]
source = "flights"
partitions = 2
batch = {{ max_records = 4096, interval = "100ms" }}
processors = [
  {{ plugin = "plane_gaps.wasm", config = {{ idle_minutes = 10080 }}, watermark = "0s" }},
]
sinks = ["planes"]
dead_letter = "no_tailnum"
checkpoint = {{ interval = "500ms" }}
"#,
        input = input.addr,
        output = output.addr,
    )
}

/// The plane a record is about (departures and idle records alike).
fn plane(record: &Value) -> String {
    record["tailnum"].as_str().unwrap_or_default().to_string()
}

#[test]
fn three_daemons_one_killed_keep_every_planes_state() {
    const N: usize = 60_000;
    let test = "three_daemons_one_killed_keep_every_planes_state";
    let Some(input) = Broker::start(test) else {
        return;
    };
    let output = Broker::start(test).unwrap();
    input.create_topic("flights", PARTITIONS as i32);
    output.create_topic("planes", 1);
    let mut lines = flights_lines(N);
    lines.extend(flush_lines());
    // The ground truth: the Kafka partitions are the partitions.
    let (want_in_order, keyless) = expected_in_order(&lines, PARTITIONS);
    let want: HashSet<String> = want_in_order.iter().map(canonical).collect();
    assert_eq!(
        want.len(),
        want_in_order.len(),
        "every output record differs"
    );
    let mut want_by_plane: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &want_in_order {
        want_by_plane
            .entry(plane(r))
            .or_default()
            .push(canonical(r));
    }
    let (records, ends) = records(&lines);
    // About 15 s of load.
    let producer = produce_slowly(&input, records, 100, Duration::from_millis(25));
    let scratches: Vec<Scratch> = (0..3)
        .map(|_| Scratch::new(&config(&input, &output, "planes")))
        .collect();
    let daemons = start_and_kill_one(&scratches);
    let at_kill = input.committed("planes", "flights");
    eprintln!("killed at committed offsets {at_kill:?} of {ends:?}");
    assert_ne!(at_kill, ends, "the kill landed while records flowed");
    producer.join().unwrap();

    // Every distinct record of the ground truth comes (or 180 s pass).
    let mut seen = HashSet::new();
    let got = output.read_until("planes", Duration::from_secs(180), |(_, v)| {
        let record: Value = serde_json::from_str(v).unwrap();
        let c = canonical(&record);
        if want.contains(&c) {
            seen.insert(c);
        }
        seen.len() == want.len()
    });
    // Every offset is committed: librdkafka's partitioner put each plane
    // where Kafka's default partitioner (the ground truth's) says.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut committed = input.committed("planes", "flights");
    while committed != ends && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        committed = input.committed("planes", "flights");
    }
    let mut logs = Vec::new();
    for daemon in daemons {
        daemon.signal("TERM");
        let out = daemon.finish();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        logs.push(log);
    }
    assert_eq!(committed, ends, "committed offsets");

    // The records read back, canonical, in topic order.
    let got: Vec<Value> = got
        .iter()
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .collect();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut got_by_plane: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &got {
        let c = canonical(r);
        let n = count.entry(c.clone()).or_default();
        *n += 1;
        if *n == 1 {
            got_by_plane.entry(plane(r)).or_default().push(c);
        }
    }
    let duplicates: usize = count.values().map(|n| n - 1).sum();
    let unexpected: Vec<&String> = count.keys().filter(|c| !want.contains(*c)).collect();
    let missing = want.iter().filter(|c| !count.contains_key(*c)).count();
    eprintln!(
        "{} records read, {} distinct, {} expected; {duplicates} written twice after the kill; {missing} missing, {} unexpected",
        got.len(),
        count.len(),
        want.len(),
        unexpected.len()
    );
    assert!(
        unexpected.is_empty() && missing == 0,
        "{missing} missing, {} unexpected, e.g. {:?}",
        unexpected.len(),
        unexpected.first()
    );
    for (plane, want) in &want_by_plane {
        assert_eq!(
            got_by_plane.get(plane),
            Some(want),
            "plane {plane}: its records, repeats removed"
        );
    }
    // The state moved: a survivor took a partition over with its planes.
    assert!(
        logs.iter().any(|log| log.lines().any(
            |l| l.contains("state restored from the changelog") && !l.contains("keyed_keys=0 ")
        )),
        "no partition was taken over with keyed state:\n{}",
        logs.join("\n")
    );
    eprintln!("{keyless} flights without a tail number (dead-lettered, not checked here)");
}

/// A partition state larger than a Kafka record (3 MB here, librdkafka's
/// `message.max.bytes` is 1 MB) goes through the real broker's changelog in
/// parts, and comes back whole; a later state goes to the other set of
/// parts, and a small one in one record again.
#[test]
fn a_state_larger_than_a_kafka_record_goes_through_the_changelog_in_parts() {
    use sluice::checkpoint::changelog::{Changelog, TaskState};
    use sluice::checkpoint::{B64, KeyedSnapshot};
    let test = "a_state_larger_than_a_kafka_record_goes_through_the_changelog_in_parts";
    let Some(broker) = Broker::start(test) else {
        return;
    };
    let state = |offset: i64, keys: usize| TaskState {
        offset,
        keyed: BTreeMap::from([(
            "keyed plane_gaps".to_string(),
            KeyedSnapshot {
                max_ts: Some(offset),
                entries: (0..keys)
                    .map(|k| {
                        (
                            B64(format!("N{k:06}").into_bytes()),
                            B64(vec![b'x'; 32]),
                            k as i64,
                        )
                    })
                    .collect(),
                event_timers: (0..keys)
                    .map(|k| (k as i64, B64(format!("N{k:06}").into_bytes())))
                    .collect(),
                processing_timers: Vec::new(),
            },
        )]),
        ..TaskState::default()
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &broker.addr);
    let changelog = Changelog::open(&config, "big-changelog").unwrap();
    let keys = vec!["p/flights/0".to_string(), "p/flights/1".to_string()];
    let timeout = Duration::from_secs(60);
    for (round, keys_in_state) in [(1, 30_000), (2, 40_000), (3, 10)] {
        let big = state(round * 1_000, keys_in_state);
        let small = state(round, 1);
        let bytes = serde_json::to_vec(&big).unwrap().len();
        changelog
            .write(
                &[
                    (keys[0].clone(), big.clone()),
                    (keys[1].clone(), small.clone()),
                ],
                timeout,
            )
            .unwrap();
        // Another daemon's reader, as one taking the partitions over.
        let reader = Changelog::open(&config, "big-changelog").unwrap();
        let read = reader.read(&keys, timeout).unwrap();
        eprintln!("round {round}: a state of {bytes} bytes");
        assert_eq!(
            serde_json::to_string(&read[&keys[0]]).unwrap(),
            serde_json::to_string(&big).unwrap(),
            "round {round}"
        );
        assert_eq!(
            serde_json::to_string(&read[&keys[1]]).unwrap(),
            serde_json::to_string(&small).unwrap()
        );
    }
}

/// A reload cannot add a keyed processor to a running Kafka pipeline (or
/// take its last one away): the source tags records with their partition
/// and moves keyed state through the changelog only when the chain it
/// started with is keyed. The reload is refused, naming why, and the
/// running config stays.
#[test]
fn a_reload_that_makes_a_kafka_pipeline_keyed_is_refused() {
    let test = "a_reload_that_makes_a_kafka_pipeline_keyed_is_refused";
    let Some(input) = Broker::start(test) else {
        return;
    };
    let output = Broker::start(test).unwrap();
    input.create_topic("flights", PARTITIONS as i32);
    output.create_topic("planes", 1);
    let keyed = config(&input, &output, "reload");
    let plain = keyed.replace(
        r#"{ plugin = "plane_gaps.wasm", config = { idle_minutes = 10080 }, watermark = "0s" }"#,
        r#"{ plugin = "identity.wasm" }"#,
    );
    assert_ne!(plain, keyed);
    let scratch = Scratch::new(&plain);
    let mut daemon = Running::start(scratch.command("run"));
    daemon.wait_for("Kafka consumer started");
    scratch.write_config(&keyed);
    daemon.signal("HUP");
    daemon.wait_for("config reload refused");
    daemon.signal("TERM");
    let out = daemon.finish();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines().any(|l| l.contains("config reload refused")
            && l.contains("keyed processors on a Kafka source")
            && l.contains("needs a restart")),
        "{log}"
    );
}
