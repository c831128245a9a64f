//! Taps: a sample of the records passing one point of a pipeline, streamed
//! to whoever asks (`GET /tap` of the admin API, `sluice tap`), as Vector's
//! `vector tap` does for its components.
//!
//! The points ([`Point`]) of a pipeline: `source` (records as decoded, before
//! the first stage), `N` or `N:PLUGIN` (what stage N of the chain output),
//! `window` (the window operator's rows), `sink:NAME` (what is handed to that
//! sink) and `dead_letter` (the dead-letter records, with their reasons).
//!
//! Each record seen becomes one JSON line:
//!
//! ```json
//! {"pipeline":"hourly","at":"0:flights_delay","partition":1,"timestamp_ms":1357035420000,
//!  "event_time":"2013-01-01T10:17:00.000Z","key":"UA","plugin_version":"20b451d4aaca","value":{…}}
//! ```
//!
//! `value` is the record itself when it is JSON, else `value_text` (UTF-8) or
//! `value_base64`. `partition` is null where records of every partition meet
//! (the window, the sinks, the dead letters); `plugin_version` is set at a
//! stage.
//!
//! Cost: a pipeline nobody taps pays one relaxed atomic load per batch and
//! point ([`Hub::watched`]). A tap is bounded: every `sample`-th record, at
//! most `max_records` records and `max_bytes` bytes a second, a queue of
//! [`QUEUE_LINES`] lines to the client; what does not fit is not shown,
//! never waited for: a tap never slows the pipeline down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sluice_plugin_sdk::Batch;

/// Lines queued to a tap's client; past it, records are not shown.
pub const QUEUE_LINES: usize = 1024;
/// The default and largest records shown a second.
pub const DEFAULT_MAX_RECORDS: u64 = 100;
/// The largest `max_records` a tap may ask.
pub const LIMIT_MAX_RECORDS: u64 = 10_000;
/// The default bytes of lines a second.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// A point of a pipeline where records can be tapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// The records as decoded, before the first stage.
    Source,
    /// What stage N (from 0) output.
    Stage(usize),
    /// The window operator's rows.
    Window,
    /// What is handed to the sink of this name.
    Sink(String),
    /// The dead-letter records.
    DeadLetter,
}

impl Point {
    /// Reads `source`, `N`, `N:PLUGIN`, `window`, `sink:NAME`, `dead_letter`.
    ///
    /// # Errors
    /// None of those, as a sentence.
    pub fn parse(text: &str) -> Result<Point, String> {
        Ok(match text {
            "source" => Point::Source,
            "window" => Point::Window,
            "dead_letter" | "dead-letter" => Point::DeadLetter,
            _ => {
                if let Some(name) = text.strip_prefix("sink:") {
                    Point::Sink(name.to_string())
                } else {
                    let index = text.split(':').next().unwrap_or_default();
                    Point::Stage(index.parse().map_err(|_| {
                        format!(
                            "{text:?} is not a tap point: source, N or N:PLUGIN (a stage, from 0), window, sink:NAME, dead_letter"
                        )
                    })?)
                }
            }
        })
    }
}

/// What a tap asks for.
#[derive(Debug, Clone)]
pub struct TapRequest {
    /// Where.
    pub point: Point,
    /// Only this partition's records (where there are partitions).
    pub partition: Option<usize>,
    /// Every N-th record (1: all).
    pub sample: u64,
    /// End after this many lines.
    pub limit: Option<u64>,
    /// At most this many records a second.
    pub max_records: u64,
    /// At most this many bytes of lines a second.
    pub max_bytes: u64,
}

/// A pipeline's points, as the daemon built them: what a tap may name.
#[derive(Debug, Clone, Default)]
pub struct Points {
    /// The stages' labels (`0:flights_delay`, …).
    pub stages: Vec<String>,
    /// Whether the pipeline has windows.
    pub window: bool,
    /// Its sinks' names.
    pub sinks: Vec<String>,
    /// Whether it has a dead-letter sink.
    pub dead_letter: bool,
}

impl Points {
    /// Every point, as `GET /tap` names them.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["source".to_string()];
        names.extend(self.stages.iter().cloned());
        if self.window {
            names.push("window".into());
        }
        names.extend(self.sinks.iter().map(|s| format!("sink:{s}")));
        names.push("dead_letter".into());
        names
    }

    /// Checks that `point` (as `text` named it) exists in the pipeline.
    ///
    /// # Errors
    /// It does not: the message lists those that do.
    pub fn check(&self, point: &Point, text: &str) -> Result<(), String> {
        let ok = match point {
            Point::Source | Point::DeadLetter => true,
            Point::Stage(n) => self.stages.get(*n).is_some_and(|label| {
                // `N:PLUGIN` must name the stage's plugin.
                !text.contains(':') || label == text
            }),
            Point::Window => self.window,
            Point::Sink(name) => self.sinks.contains(name),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "the pipeline has no point {text:?}; its points: {}",
                self.names().join(", ")
            ))
        }
    }
}

/// One client's tap.
#[derive(Debug)]
struct Subscriber {
    request: TapRequest,
    tx: flume::Sender<Result<Vec<u8>, Infallible>>,
    /// Records seen at the point (for `sample`).
    seen: AtomicU64,
    /// Lines sent (or about to be: a slot is taken before the send, so that
    /// partitions sending at once never pass the limit).
    sent: AtomicU64,
    /// This second's (start, records, bytes).
    budget: Mutex<(Instant, u64, u64)>,
}

/// The taps of one pipeline.
#[derive(Debug, Default)]
pub struct Hub {
    watchers: AtomicUsize,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    points: Mutex<Points>,
}

static HUBS: LazyLock<Mutex<HashMap<String, Arc<Hub>>>> = LazyLock::new(Default::default);

/// The tap hub of `pipeline` (made on first use; one per name for the
/// process, so that a restarted pipeline keeps its taps).
pub fn hub(pipeline: &str) -> Arc<Hub> {
    HUBS.lock()
        .expect("taps lock")
        .entry(pipeline.to_string())
        .or_default()
        .clone()
}

/// What a tapped record is shown with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen<'a> {
    /// The pipeline.
    pub pipeline: &'a str,
    /// The point's name (`source`, `0:flights_delay`, `window`, …).
    pub at: &'a str,
    /// The partition, where there is one.
    pub partition: Option<usize>,
    /// The plugin version, at a stage.
    pub plugin_version: Option<&'a str>,
}

impl Hub {
    /// Whether anyone taps this pipeline now: callers test this before
    /// [`Hub::offer`] (one relaxed load), so that an untapped pipeline pays
    /// nothing more.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Sets the pipeline's points (at its start).
    pub fn set_points(&self, points: Points) {
        *self.points.lock().expect("taps lock") = points;
    }

    /// The pipeline's points.
    pub fn points(&self) -> Points {
        self.points.lock().expect("taps lock").clone()
    }

    /// Starts a tap: its lines come on the receiver, which ends when the
    /// tap's `limit` is reached; dropping the receiver ends the tap.
    pub fn subscribe(&self, request: TapRequest) -> flume::Receiver<Result<Vec<u8>, Infallible>> {
        let (tx, rx) = flume::bounded(QUEUE_LINES);
        let subscriber = Arc::new(Subscriber {
            request,
            tx,
            seen: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            budget: Mutex::new((Instant::now(), 0, 0)),
        });
        let mut subscribers = self.subscribers.lock().expect("taps lock");
        subscribers.push(subscriber);
        self.watchers.store(subscribers.len(), Ordering::Relaxed);
        rx
    }

    /// Shows the records of `batch`, seen at `point`, to the taps on it.
    pub fn offer(&self, point: &Point, seen: Seen<'_>, batch: &Batch) {
        let subscribers: Vec<Arc<Subscriber>> = {
            let all = self.subscribers.lock().expect("taps lock");
            all.iter()
                .filter(|s| {
                    s.request.point == *point
                        && (s.request.partition.is_none()
                            || seen.partition.is_none()
                            || s.request.partition == seen.partition)
                })
                .cloned()
                .collect()
        };
        let mut ended = Vec::new();
        for s in &subscribers {
            if !s.take(seen, batch) {
                ended.push(s.clone());
            }
        }
        if !ended.is_empty() {
            self.remove(&ended);
        }
    }

    fn remove(&self, ended: &[Arc<Subscriber>]) {
        let mut all = self.subscribers.lock().expect("taps lock");
        all.retain(|s| !ended.iter().any(|e| Arc::ptr_eq(e, s)));
        self.watchers.store(all.len(), Ordering::Relaxed);
    }

    /// Ends the taps whose client went away (the admin API calls it at each
    /// new tap, so that taps of a pipeline with no traffic go too).
    pub fn prune(&self) {
        let ended: Vec<Arc<Subscriber>> = (self.subscribers.lock().expect("taps lock").iter())
            .filter(|s| s.tx.is_disconnected())
            .cloned()
            .collect();
        if !ended.is_empty() {
            self.remove(&ended);
        }
    }
}

impl Subscriber {
    /// Takes what it wants of `batch`; false once the tap is over (its
    /// limit reached or its client gone).
    fn take(&self, seen: Seen<'_>, batch: &Batch) -> bool {
        let sample = self.request.sample.max(1);
        let len = batch.len();
        for (i, event) in batch.into_iter().enumerate() {
            let n = self.seen.fetch_add(1, Ordering::Relaxed);
            if !n.is_multiple_of(sample) {
                continue;
            }
            if !self.budget_open() {
                // This second's budget is spent: the rest of the batch is
                // only counted (for the sampling), not formatted — a record
                // is turned into its line only when it can be sent.
                self.seen.fetch_add((len - i - 1) as u64, Ordering::Relaxed);
                return true;
            }
            let line = line(seen, &event);
            if !self.within_budget(line.len() as u64) {
                continue;
            }
            let slot = self.sent.fetch_add(1, Ordering::Relaxed);
            let limit = self.request.limit.unwrap_or(u64::MAX);
            if slot >= limit {
                return false;
            }
            match self.tx.try_send(Ok(line)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(_)) => {
                    self.sent.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                Err(flume::TrySendError::Disconnected(_)) => return false,
            }
            if slot + 1 >= limit {
                return false;
            }
        }
        true
    }

    /// Whether this second's budget has room for one more record (the
    /// byte budget is checked once the line is made).
    fn budget_open(&self) -> bool {
        let mut budget = self.budget.lock().expect("tap budget");
        if budget.0.elapsed() >= Duration::from_secs(1) {
            *budget = (Instant::now(), 0, 0);
        }
        budget.1 < self.request.max_records && budget.2 < self.request.max_bytes
    }

    fn within_budget(&self, bytes: u64) -> bool {
        let mut budget = self.budget.lock().expect("tap budget");
        if budget.0.elapsed() >= Duration::from_secs(1) {
            *budget = (Instant::now(), 0, 0);
        }
        if budget.1 + 1 > self.request.max_records || budget.2 + bytes > self.request.max_bytes {
            // The second is spent: a line that does not fit closes it, so
            // that `budget_open` stops the formatting of more lines until
            // the next second (a sliver of bytes left would not do).
            budget.2 = self.request.max_bytes;
            return false;
        }
        budget.1 += 1;
        budget.2 += bytes;
        true
    }
}

/// The JSON line of one tapped record.
fn line(seen: Seen<'_>, event: &sluice_plugin_sdk::Event<'_>) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    obj.insert("pipeline".into(), seen.pipeline.into());
    obj.insert("at".into(), seen.at.into());
    obj.insert("partition".into(), seen.partition.into());
    let ts = event.timestamp_ms();
    obj.insert("timestamp_ms".into(), ts.into());
    if let Some(t) = chrono::DateTime::from_timestamp_millis(ts) {
        obj.insert(
            "event_time".into(),
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
    }
    obj.insert(
        "key".into(),
        event
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .into(),
    );
    if let Some(v) = seen.plugin_version {
        obj.insert("plugin_version".into(), v.into());
    }
    let value = event.value();
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(v) => obj.insert("value".into(), v),
        Err(_) => match std::str::from_utf8(value) {
            Ok(text) => obj.insert("value_text".into(), text.into()),
            Err(_) => obj.insert(
                "value_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .into(),
            ),
        },
    };
    let mut line = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            b.push(
                Some(b"k"),
                format!("{{\"n\":{i}}}").as_bytes(),
                1_000 * i as i64,
            );
        }
        b
    }

    fn request(point: Point) -> TapRequest {
        TapRequest {
            point,
            partition: None,
            sample: 1,
            limit: None,
            max_records: 1_000,
            max_bytes: 1 << 20,
        }
    }

    fn lines(rx: &flume::Receiver<Result<Vec<u8>, Infallible>>) -> Vec<serde_json::Value> {
        rx.try_iter()
            .map(|l| serde_json::from_slice(&l.unwrap()).unwrap())
            .collect()
    }

    const AT: Seen<'static> = Seen {
        pipeline: "p",
        at: "source",
        partition: Some(1),
        plugin_version: None,
    };

    #[test]
    fn points_parse_and_check() {
        assert_eq!(Point::parse("source"), Ok(Point::Source));
        assert_eq!(Point::parse("2:flights_delay"), Ok(Point::Stage(2)));
        assert_eq!(Point::parse("sink:out"), Ok(Point::Sink("out".into())));
        assert!(Point::parse("somewhere").is_err());
        let points = Points {
            stages: vec!["0:flights_delay".into()],
            window: false,
            sinks: vec!["out".into()],
            dead_letter: true,
        };
        assert!(points.check(&Point::Stage(0), "0").is_ok());
        assert!(points.check(&Point::Stage(0), "0:flights_delay").is_ok());
        let e = points.check(&Point::Stage(0), "0:other").unwrap_err();
        assert!(
            e.contains("source, 0:flights_delay, sink:out, dead_letter"),
            "{e}"
        );
        assert!(points.check(&Point::Window, "window").is_err());
        assert!(points.check(&Point::Sink("x".into()), "sink:x").is_err());
    }

    #[test]
    fn nobody_watching_costs_a_load_and_shows_nothing() {
        let hub = Hub::default();
        assert!(!hub.watched());
        let rx = hub.subscribe(request(Point::Source));
        assert!(hub.watched());
        // Another point's records are not shown.
        hub.offer(&Point::Window, AT, &batch(3));
        assert!(lines(&rx).is_empty());
        hub.offer(&Point::Source, AT, &batch(3));
        let got = lines(&rx);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2]["value"], serde_json::json!({"n": 2}));
        assert_eq!(got[2]["key"], "k");
        assert_eq!(got[2]["partition"], 1);
        assert_eq!(got[2]["event_time"], "1970-01-01T00:00:02.000Z");
        drop(rx);
        hub.prune();
        assert!(!hub.watched());
    }

    #[test]
    fn sample_limit_and_rate_bound_a_tap() {
        let hub = Hub::default();
        let rx = hub.subscribe(TapRequest {
            sample: 10,
            limit: Some(4),
            ..request(Point::Source)
        });
        hub.offer(&Point::Source, AT, &batch(100));
        let got = lines(&rx);
        let ns: Vec<i64> = got
            .iter()
            .map(|l| l["value"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [0, 10, 20, 30]);
        // The limit reached, the tap ended: its sender is gone.
        assert!(!hub.watched());
        assert!(rx.is_disconnected());

        let rx = hub.subscribe(TapRequest {
            max_records: 5,
            ..request(Point::Source)
        });
        hub.offer(&Point::Source, AT, &batch(50));
        assert_eq!(lines(&rx).len(), 5);
        // Another partition's tap sees nothing of partition 1.
        let other = hub.subscribe(TapRequest {
            partition: Some(0),
            ..request(Point::Source)
        });
        hub.offer(&Point::Source, AT, &batch(5));
        assert!(lines(&other).is_empty());
    }

    #[test]
    fn a_line_past_the_byte_budget_closes_the_second() {
        // Small, big, small: the big one does not fit and closes the
        // second, so the last small one (which would fit) is not even made.
        let mut b = Batch::default();
        b.push(None, br#"{"n":0}"#, 0);
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(500));
        b.push(None, big.as_bytes(), 0);
        b.push(None, br#"{"n":2}"#, 0);
        let small = line(AT, &b.get(0).unwrap()).len() as u64;
        let hub = Hub::default();
        let rx = hub.subscribe(TapRequest {
            max_bytes: small * 5 / 2,
            ..request(Point::Source)
        });
        hub.offer(&Point::Source, AT, &b);
        let got = lines(&rx);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["value"]["n"], 0);
    }

    #[test]
    fn values_that_are_not_json_are_text_or_base64() {
        let hub = Hub::default();
        let rx = hub.subscribe(request(Point::Source));
        let mut b = Batch::default();
        b.push(None, b"plain text", 0);
        b.push(None, &[0xff, 0xfe], 0);
        hub.offer(&Point::Source, AT, &b);
        let got = lines(&rx);
        assert_eq!(got[0]["value_text"], "plain text");
        assert_eq!(got[1]["value_base64"], "//4=");
        assert_eq!(got[0]["key"], serde_json::Value::Null);
    }
}
