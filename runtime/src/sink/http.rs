//! The `http` sink: each batch is POSTed to a URL, as newline-delimited JSON
//! or as one JSON array, in bodies of at most `max_body_bytes`.
//!
//! ```toml
//! [sinks.api]
//! type = "http"
//! url = "https://ingest.example.com/v1/events"
//! encoding = "ndjson"                 # ndjson (default) | json_array
//! headers = { "X-Source" = "sluice" }  # optional
//! bearer_token_file = "secrets/token" # optional: `Authorization: Bearer …`, read at each request
//! ca_file = "secrets/ca.pem"          # optional: trust this CA instead of Mozilla's roots
//! timeout = "30s"                     # a whole request: connect, send, answer
//! max_body_bytes = "4MiB"             # a batch larger than this is cut into several requests
//! ```
//!
//! What each answer does (the classes of RFC 9110 §15):
//! - **2xx**: delivered;
//! - **408, 429, 5xx**, or no answer (connection refused or dropped, a
//!   timeout, a TLS failure): sent again, the same body with the same
//!   `Idempotency-Key`, after an exponential back-off with jitter (100 ms
//!   doubling to 5 s, each wait drawn between half and all of it: "equal
//!   jitter"), or after the wait a `Retry-After` header asks for (seconds or
//!   an HTTP-date, RFC 9110 §10.2.3; at most 10 minutes) if longer. Meanwhile
//!   the sink's queue fills and the pipelines wait (backpressure); nothing is
//!   dropped. Once the daemon stops, it gives up after 30 s;
//! - **any other status** (400, 401, 404, 413, 422, a 3xx: redirects are not
//!   followed): the body's records are refused, and go to the pipeline's
//!   dead-letter sink with the status and the first KiB of the answer; the
//!   sink goes on with the next body.
//!
//! Every request carries an `Idempotency-Key` header (the IETF HTTPAPI
//! draft "The Idempotency-Key HTTP Header Field"): `SINK-RUN-SEQ`, where RUN
//! is fixed for the daemon's run and SEQ counts the bodies; a body sent again
//! carries the key it was first sent with, so a receiver that keeps the keys
//! it has seen can drop a repeat. Delivery is at-least-once: a body whose
//! answer was lost (a dropped connection, a timeout) is sent again, and after
//! a crash a checkpointed pipeline sends again what followed its last
//! checkpoint (under new keys).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_plugin_sdk::Batch;
use toml::Spanned;

use super::{Built, Output, Refused, Resume, Retry, RetryAfter, SinkSpec};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "http"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the records are POSTed: an `http://` or `https://` URL.
    pub url: Option<Spanned<String>>,
    /// `ndjson` (default: `Content-Type: application/x-ndjson`, one record a
    /// line) or `json_array` (`application/json`, the records as one array;
    /// each record must be a JSON value).
    #[serde(default)]
    pub encoding: Encoding,
    /// Headers added to every request (name → value).
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    /// A file holding a bearer token (its first line), relative to the
    /// config file, read at each request (so a rotated token is used at
    /// once): `Authorization: Bearer TOKEN` (RFC 6750).
    pub bearer_token_file: Option<Spanned<PathBuf>>,
    /// A PEM file of the CA certificates to trust for an `https://` URL,
    /// instead of Mozilla's roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// The longest one request may take, answer included. Default 30s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::de_duration"
    )]
    pub timeout: Duration,
    /// The largest body, bytes (or a size such as `"4MiB"`): a batch larger
    /// than this is sent in several requests. A single record larger than
    /// this is sent alone. Default 4 MiB.
    #[serde(
        default = "default_max_body",
        deserialize_with = "crate::config::de_size"
    )]
    pub max_body_bytes: u64,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_body() -> u64 {
    4 << 20
}

/// How a body holds its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One record a line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of the records (`application/json`).
    JsonArray,
}

impl super::SinkConfig for HttpConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        let url = self.url.as_ref().ok_or_else(|| {
            cx.error_at(
                "url",
                format!("sink `{}`: an http sink needs `url`", cx.name),
            )
        })?;
        crate::http_client::check_url(url.get_ref()).map_err(|e| cx.config.error(url.span(), e))?;
        let mut headers = Vec::new();
        if let Some(table) = &self.headers {
            for (name, value) in table.get_ref() {
                let bad = |why: String| cx.config.error(table.span(), why);
                ureq::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("{name:?} is not a header name")))?;
                ureq::http::HeaderValue::from_str(value)
                    .map_err(|_| bad(format!("header {name}: {value:?} is not a header value")))?;
                let lower = name.to_ascii_lowercase();
                if ["content-type", "content-length", "idempotency-key", "host"]
                    .contains(&lower.as_str())
                {
                    return Err(bad(format!("header {name} is the sink's own to set")));
                }
                if lower == "authorization" && self.bearer_token_file.is_some() {
                    return Err(bad(
                        "an Authorization header and `bearer_token_file`: give one".into(),
                    ));
                }
                headers.push((name.clone(), value.clone()));
            }
        }
        let readable = |file: &Spanned<PathBuf>| {
            let path = crate::config::resolve(cx.base, file.get_ref());
            std::fs::metadata(&path).map_err(|e| {
                cx.config
                    .error(file.span(), format!("cannot read {}: {e}", path.display()))
            })?;
            Ok::<_, ConfigError>(path)
        };
        let bearer_token_file = self.bearer_token_file.as_ref().map(readable).transpose()?;
        let ca_file = match &self.ca_file {
            Some(file) => {
                let path = readable(file)?;
                crate::http_client::read_certificates(&path)
                    .map_err(|e| cx.config.error(file.span(), format!("{e:#}")))?;
                Some(path)
            }
            None => None,
        };
        Ok(Built {
            spec: SinkSpec(Arc::new(HttpSink {
                url: url.get_ref().clone(),
                encoding: self.encoding,
                headers,
                bearer_token_file,
                ca_file,
                timeout: self.timeout,
                max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            })),
            claims: Vec::new(),
        })
    }
}

/// An http sink, built. Its `Debug` text is its identity (header values
/// shown as a hash: they may hold secrets).
#[derive(Clone)]
pub struct HttpSink {
    url: String,
    encoding: Encoding,
    headers: Vec<(String, String)>,
    bearer_token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    timeout: Duration,
    max_body_bytes: usize,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = (self.headers.iter())
            .map(|(n, v)| {
                (
                    n.as_str(),
                    crate::wasm::plugin::content_version(v.as_bytes()),
                )
            })
            .collect();
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("encoding", &self.encoding)
            .field("headers", &headers)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl super::Sink for HttpSink {
    fn open(&self, name: &str, _resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        let agent = crate::http_client::agent(self.timeout, self.ca_file.as_deref())
            .with_context(|| format!("sink `{name}`"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Box::new(HttpOutput {
            sink: self.clone(),
            agent,
            run: format!("{:x}{:05x}", now.as_millis(), std::process::id()),
            name: name.to_string(),
            next_seq: 0,
            sent: None,
            refused: Vec::new(),
            body: Vec::new(),
        }))
    }
}

/// Where the sink is in a batch that failed part way (and is written again).
#[derive(Debug, Clone, Copy)]
struct InProgress {
    /// The batch's records before this one are delivered (or refused).
    next_record: usize,
    /// The sequence number of the body that starts at `next_record`.
    seq: u64,
}

/// An http sink's client.
struct HttpOutput {
    sink: HttpSink,
    agent: ureq::Agent,
    /// This run's part of the idempotency keys.
    run: String,
    name: String,
    /// The sequence number of the next new body.
    next_seq: u64,
    /// Set while a batch is part way: the write that failed is tried again
    /// with the same batch, from where it stopped, with the same keys.
    sent: Option<InProgress>,
    refused: Vec<Refused>,
    body: Vec<u8>,
}

/// What a request came to.
enum Answer {
    Delivered,
    /// Refused for good: the records go to the dead-letter sink.
    Refused(String),
}

impl HttpOutput {
    /// Fills `body` from `batch[from..]` up to `max_body_bytes` (at least one
    /// record); the index after the last record taken.
    fn fill(&mut self, batch: &Batch, from: usize) -> usize {
        self.body.clear();
        let array = self.sink.encoding == Encoding::JsonArray;
        if array {
            self.body.push(b'[');
        }
        let mut next = from;
        while let Some(event) = batch.get(next) {
            let value = event.value();
            // The record and its line break or comma, and an array's `]`.
            let extra = value.len() + 1 + usize::from(array);
            if next > from && self.body.len() + extra > self.sink.max_body_bytes {
                break;
            }
            if array && next > from {
                self.body.push(b',');
            }
            self.body.extend_from_slice(value);
            if !array {
                self.body.push(b'\n');
            }
            next += 1;
        }
        if array {
            self.body.push(b']');
        }
        next
    }

    /// POSTs `body` once.
    ///
    /// # Errors
    /// A status or failure worth another try, marked [`Retry`] (with
    /// [`RetryAfter`] when the server said how long to wait).
    fn post(&self, key: &str) -> anyhow::Result<Answer> {
        let content_type = match self.sink.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
        };
        let mut request = self
            .agent
            .post(&self.sink.url)
            .header("Content-Type", content_type)
            .header("Idempotency-Key", key);
        for (name, value) in &self.sink.headers {
            request = request.header(name, value);
        }
        if let Some(path) = &self.sink.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))
                .context(Retry("the bearer token cannot be read"))?;
            let token = token.lines().next().unwrap_or_default().trim();
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = match request.send(&self.body[..]) {
            Ok(response) => response,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("POST {}", self.sink.url))
                    .context(Retry("the HTTP request failed")));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Delivered);
        }
        let after = crate::http_client::retry_after(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            std::time::SystemTime::now(),
        );
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text[..text.len().min(1024)]);
        let text = text.trim();
        let what = format!("POST {} answered {status}: {text}", self.sink.url);
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            let mut e = anyhow::anyhow!(what);
            if let Some(after) = after {
                e = e.context(RetryAfter(after.min(MAX_RETRY_AFTER)));
            }
            return Err(e.context(Retry("the HTTP server asks to try again")));
        }
        Ok(Answer::Refused(format!("HTTP {status}: {text}")))
    }
}

/// The longest `Retry-After` wait honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl Output for HttpOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let InProgress {
            mut next_record,
            mut seq,
        } = self.sent.take().unwrap_or(InProgress {
            next_record: 0,
            seq: self.next_seq,
        });
        if next_record == 0 {
            self.refused.clear();
        }
        while next_record < batch.len() {
            let end = self.fill(batch, next_record);
            let key = format!("{}-{}-{seq}", self.name, self.run);
            match self.post(&key) {
                Ok(Answer::Delivered) => {}
                Ok(Answer::Refused(reason)) => {
                    tracing::warn!(
                        sink = %self.name,
                        records = end - next_record,
                        "{reason}: the records go to the dead-letter sink"
                    );
                    self.refused.extend((next_record..end).map(|index| Refused {
                        index,
                        reason: reason.clone(),
                    }));
                }
                Err(e) => {
                    // Tried again from this body, under this key.
                    self.sent = Some(InProgress { next_record, seq });
                    return Err(e);
                }
            }
            next_record = end;
            seq += 1;
        }
        self.next_seq = seq;
        Ok(())
    }

    fn take_refused(&mut self) -> Vec<Refused> {
        std::mem::take(&mut self.refused)
    }

    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        // Each body was answered before the write returned.
        Ok(None)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(encoding: Encoding, max_body_bytes: usize) -> HttpOutput {
        let sink = HttpSink {
            url: "http://127.0.0.1:1/".into(),
            encoding,
            headers: Vec::new(),
            bearer_token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
            max_body_bytes,
        };
        HttpOutput {
            agent: crate::http_client::agent(sink.timeout, None).unwrap(),
            sink,
            run: "r".into(),
            name: "s".into(),
            next_seq: 0,
            sent: None,
            refused: Vec::new(),
            body: Vec::new(),
        }
    }

    fn batch(values: &[&str]) -> Batch {
        let mut b = Batch::default();
        for v in values {
            b.push(None, v.as_bytes(), 0);
        }
        b
    }

    #[test]
    fn bodies_are_cut_at_max_body_bytes() {
        let b = batch(&["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]);
        // 8 bytes a line: two lines fit 16.
        let mut out = output(Encoding::Ndjson, 16);
        assert_eq!(out.fill(&b, 0), 2);
        assert_eq!(out.body, b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(out.fill(&b, 2), 3);
        assert_eq!(out.body, b"{\"a\":3}\n");
        // A record larger than the limit goes alone.
        let mut out = output(Encoding::Ndjson, 4);
        assert_eq!(out.fill(&b, 0), 1);
        let mut out = output(Encoding::JsonArray, 1 << 20);
        assert_eq!(out.fill(&b, 0), 3);
        let parsed: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(parsed, serde_json::json!([{"a":1},{"a":2},{"a":3}]));
    }

    #[test]
    fn a_failed_body_keeps_its_key_and_place() {
        // Nothing listens on port 1: every request fails, and is retried
        // from the same record under the same sequence number.
        let b = batch(&["1", "2"]);
        let mut out = output(Encoding::Ndjson, 1);
        let e = out.write_batch(&b).unwrap_err();
        assert!(super::super::is_transient(&e), "{e:#}");
        let InProgress { next_record, seq } = out.sent.unwrap();
        assert_eq!((next_record, seq), (0, 0));
        assert_eq!(out.next_seq, 0);
    }
}
