//! The dead-letter queue: records that could not be processed, with why.
//!
//! Each dead-lettered record becomes one JSON line on the pipeline's
//! `dead_letter` sink:
//!
//! ```json
//! {"pipeline":"delays","stage":"source","reason":"invalid JSON: …","partition":null,
//!  "plugin":null,"plugin_version":null,"key":null,"timestamp_ms":null,"original":"{not json"}
//! ```
//!
//! `stage` is `source` (the line could not be decoded) or `INDEX:PLUGIN` of the
//! processor that refused or failed it. `original` holds the bytes the stage
//! received, as a string when they are UTF-8, else base64 in `original_base64`.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_plugin_sdk::Batch;

use crate::sink::SinkHandle;

/// One dead-lettered record.
#[derive(Debug, Clone)]
pub struct DeadRecord<'a> {
    /// `source` or `INDEX:PLUGIN`.
    pub stage: &'a str,
    /// Plugin name and version, for a processor stage.
    pub plugin: Option<(&'a str, &'a str)>,
    /// Partition worker, when known.
    pub partition: Option<usize>,
    /// Why.
    pub reason: &'a str,
    /// Key bytes (empty: none).
    pub key: &'a [u8],
    /// Event time, when known.
    pub timestamp_ms: Option<i64>,
    /// The bytes the stage received.
    pub original: &'a [u8],
}

/// Where a pipeline's dead letters go.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pipeline: String,
    sink: Option<SinkHandle>,
    /// The pipeline's taps (see [`crate::obs::tap`]): the dead letters are
    /// its `dead_letter` point, and its workers find the hub here.
    tap: Arc<crate::obs::tap::Hub>,
}

fn bytes_field(obj: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj.insert(name.into(), Value::String(s.into())),
        Err(_) => obj.insert(
            format!("{name}_base64"),
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    };
}

impl DeadLetter {
    /// Dead letters of `pipeline`, written to `sink` (or, without one, logged and
    /// dropped).
    pub fn new(pipeline: &str, sink: Option<SinkHandle>) -> Self {
        DeadLetter {
            pipeline: pipeline.to_string(),
            sink,
            tap: crate::obs::tap::hub(pipeline),
        }
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The pipeline's taps.
    pub fn tap(&self) -> &crate::obs::tap::Hub {
        &self.tap
    }

    /// The dead-letter sink, if the pipeline has one.
    pub fn sink(&self) -> Option<&SinkHandle> {
        self.sink.as_ref()
    }

    /// Writes `records` to the dead-letter sink as one batch.
    ///
    /// # Errors
    /// The dead-letter sink has stopped.
    pub fn send(&self, records: &[DeadRecord<'_>]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let watched = self.tap.watched();
        if self.sink.is_none() {
            // No dead-letter sink: the log is the record of what was not processed.
            for r in records {
                tracing::warn!(
                    pipeline = %self.pipeline,
                    stage = r.stage,
                    reason = r.reason,
                    "record not processed (no dead_letter sink configured): {}",
                    String::from_utf8_lossy(&r.original[..r.original.len().min(1024)])
                );
            }
            if !watched {
                return Ok(());
            }
        }
        let mut batch = Batch::with_capacity(records.len(), records.len() * 256);
        let mut buf = Vec::with_capacity(256);
        for r in records {
            let mut obj = json!({
                "pipeline": self.pipeline,
                "stage": r.stage,
                "reason": r.reason,
                "partition": r.partition,
                "plugin": r.plugin.map(|p| p.0),
                "plugin_version": r.plugin.map(|p| p.1),
                "timestamp_ms": r.timestamp_ms,
            });
            let map = obj.as_object_mut().expect("an object");
            if r.key.is_empty() {
                map.insert("key".into(), Value::Null);
            } else {
                bytes_field(map, "key", r.key);
            }
            bytes_field(map, "original", r.original);
            buf.clear();
            serde_json::to_writer(&mut buf, &obj)?;
            batch.push(
                (!r.key.is_empty()).then_some(r.key),
                &buf,
                r.timestamp_ms.unwrap_or_else(now_ms),
            );
        }
        if watched {
            let seen = crate::obs::tap::Seen {
                pipeline: &self.pipeline,
                at: "dead_letter",
                ..Default::default()
            };
            self.tap
                .offer(&crate::obs::tap::Point::DeadLetter, seen, &batch);
        }
        match &self.sink {
            Some(sink) => sink.send(Arc::new(batch)),
            None => Ok(()),
        }
    }
}

/// Now, ms since the Unix epoch: a dead-letter record's Kafka timestamp when
/// the refused record had no event time.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
