//! Decoding a source line into an event: validate the JSON, pull out the key and the
//! event time by JSON pointer (RFC 6901).
//!
//! The line is parsed once, in one pass, without building a tree: the members on
//! the pointers' paths are visited and everything else is skipped with
//! `serde::de::IgnoredAny` (which still checks it is valid JSON). Only the two
//! values found are allocated.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A parsed JSON pointer: its reference tokens, unescaped (`~1` → `/`, `~0` → `~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

impl Pointer {
    /// Parses a pointer such as `/carrier` or `/a~1b/0`.
    ///
    /// # Errors
    /// A non-empty pointer that does not start with `/` (RFC 6901 §3).
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer(Vec::new()));
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("JSON pointer {text:?} must start with `/` (RFC 6901)"))?;
        Ok(Pointer(
            rest.split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        ))
    }
}

impl fmt::Display for Pointer {
    /// The pointer as written (RFC 6901), e.g. `/a~1b/0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.0 {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

impl Pointer {
    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.0
    }

    /// The last reference token (`dep_delay` of `/a/dep_delay`), if any.
    pub fn last(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }
}

/// What the source wants from each line.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    key: Option<Pointer>,
    timestamp: Option<Pointer>,
}

/// A decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Key bytes, or `None` when the pointer finds nothing or `null`. An empty
    /// string is a key (it is hashed like any other), as in Kafka.
    pub key: Option<Vec<u8>>,
    /// Event time (ms since the Unix epoch), or `None` when the record has none.
    pub timestamp_ms: Option<i64>,
}

impl Decoder {
    /// A decoder extracting the key and the event time at these pointers.
    pub fn new(key: Option<Pointer>, timestamp: Option<Pointer>) -> Self {
        Decoder { key, timestamp }
    }

    /// The key pointer, if set.
    pub fn key_pointer(&self) -> Option<&Pointer> {
        self.key.as_ref()
    }

    /// Whether a key pointer is set (else a Kafka source takes the Kafka key).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Whether an event-time pointer is set (else a Kafka source takes the
    /// Kafka timestamp).
    pub fn has_timestamp(&self) -> bool {
        self.timestamp.is_some()
    }

    /// Validates `line` as one JSON value and extracts the key and event time.
    ///
    /// # Errors
    /// A reason for the dead-letter sink: the JSON error with its column, or an
    /// event time that is neither an RFC 3339 string nor a number.
    pub fn decode(&self, line: &[u8]) -> Result<Decoded, String> {
        let mut paths: Vec<&Pointer> = Vec::with_capacity(2);
        if let Some(k) = &self.key {
            paths.push(k);
        }
        if let Some(t) = &self.timestamp {
            paths.push(t);
        }
        let mut found = [None, None];
        extract_into(line, &paths, &mut found[..paths.len()])?;
        let [first, second] = found;
        let (key_value, time_value) = match (&self.key, &self.timestamp) {
            (Some(_), _) => (first, second),
            (None, _) => (None, first),
        };
        Self::decoded(key_value, time_value)
    }

    /// Extracts the key and event time from a JSON value already built (a
    /// CSV row or a syslog message turned into an object), as
    /// [`Decoder::decode`] does from a line.
    ///
    /// # Errors
    /// An event time that is neither an RFC 3339 string nor a number.
    pub fn decode_value(&self, value: &Value) -> Result<Decoded, String> {
        let at = |p: &Option<Pointer>| {
            p.as_ref()
                .and_then(|p| p.0.iter().try_fold(value, |v, token| step(v, token)))
                .cloned()
        };
        Self::decoded(at(&self.key), at(&self.timestamp))
    }

    fn decoded(key_value: Option<Value>, time_value: Option<Value>) -> Result<Decoded, String> {
        let key = match key_value {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.into_bytes()),
            Some(other) => Some(other.to_string().into_bytes()),
        };
        let timestamp_ms = match time_value {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_event_time(&v)?),
        };
        Ok(Decoded { key, timestamp_ms })
    }
}

/// The member or element `token` names in `value` (RFC 6901 §4).
fn step<'v>(value: &'v Value, token: &str) -> Option<&'v Value> {
    match value {
        Value::Object(m) => m.get(token),
        // An index in decimal without leading zeros, as `extract_into` matches it.
        Value::Array(a) => token
            .parse::<usize>()
            .ok()
            .filter(|i| i.to_string() == token)
            .and_then(|i| a.get(i)),
        _ => None,
    }
}

/// Most pointers one [`extract_into`] call follows.
pub const MAX_POINTERS: usize = 32;

/// Validates `line` as one JSON value and stores the value at each of `paths`
/// (at most [`MAX_POINTERS`]) in `found` (`None` where a path finds nothing),
/// in one pass.
///
/// # Errors
/// The JSON error with its column, or "not UTF-8".
pub fn extract_into(
    line: &[u8],
    paths: &[&Pointer],
    found: &mut [Option<Value>],
) -> Result<(), String> {
    assert!(paths.len() <= MAX_POINTERS && found.len() == paths.len());
    for f in found.iter_mut() {
        *f = None;
    }
    // JSON text is UTF-8 (RFC 8259 §8.1). Checked up front: serde_json checks
    // the strings it decodes, not the ones it skips.
    let text = std::str::from_utf8(line).map_err(|e| format!("invalid JSON: not UTF-8: {e}"))?;
    let tokens: Vec<&[String]> = paths.iter().map(|p| p.0.as_slice()).collect();
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Walk {
        paths: &tokens,
        active: if paths.len() == 32 {
            u32::MAX
        } else {
            (1u32 << paths.len()) - 1
        },
        depth: 0,
        found,
    };
    seed.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// An event time from a JSON value: a number of milliseconds since the Unix epoch
/// (a string of digits too), or an RFC 3339 date-time (`2013-01-01T10:17:00.000Z`,
/// `2013-01-01T05:17:00-05:00`).
///
/// # Errors
/// Any other value, with the value in the message.
pub fn parse_event_time(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| {
                format!("event time {n} is out of range (epoch ms as a 64-bit integer)")
            }),
        Value::String(s) => {
            if let Ok(ms) = s.parse::<i64>() {
                return Ok(ms);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("event time {s:?} is not RFC 3339 nor epoch ms: {e}"))
        }
        other => Err(format!("event time {other} is not RFC 3339 nor epoch ms")),
    }
}

/// Visits one JSON value, capturing the values at the active paths' ends.
struct Walk<'a, 'p> {
    paths: &'a [&'p [String]],
    /// Bit i set: path i matched every token so far.
    active: u32,
    depth: usize,
    found: &'a mut [Option<Value>],
}

impl Walk<'_, '_> {
    /// The paths still active after matching `token` at this depth: (those that
    /// end here, those that go deeper).
    fn step(&self, token: &str) -> (u32, u32) {
        let (mut ends, mut deeper) = (0, 0);
        for (i, path) in self.paths.iter().enumerate() {
            if self.active & (1 << i) != 0 && path.get(self.depth).is_some_and(|t| t == token) {
                if path.len() == self.depth + 1 {
                    ends |= 1 << i;
                } else {
                    deeper |= 1 << i;
                }
            }
        }
        (ends, deeper)
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // A pointer with no tokens is the whole document.
        let whole = self.active
            & self.paths.iter().enumerate().fold(0, |m, (i, p)| {
                if p.len() == self.depth { m | 1 << i } else { m }
            });
        if whole != 0 {
            let value = Value::deserialize(d)?;
            store(self.found, whole, value);
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

/// Stores `value` in every slot of `mask` (cloned for all but the last).
fn store(found: &mut [Option<Value>], mask: u32, value: Value) {
    let mut rest = mask;
    let mut value = Some(value);
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        let v = if rest == 0 {
            value.take()
        } else {
            value.clone()
        };
        if let Some(slot) = found.get_mut(i) {
            *slot = v;
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let (ends, deeper) = self.step(&key);
            if ends != 0 {
                let value: Value = map.next_value()?;
                store(self.found, ends, value);
            } else if deeper != 0 {
                map.next_value_seed(Walk {
                    paths: self.paths,
                    active: deeper,
                    depth: self.depth + 1,
                    found: self.found,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let (ends, deeper) = self.step(&index.to_string());
            let more = if ends != 0 {
                seq.next_element::<Value>()?
                    .map(|v| store(self.found, ends, v))
            } else if deeper != 0 {
                seq.next_element_seed(Walk {
                    paths: self.paths,
                    active: deeper,
                    depth: self.depth + 1,
                    found: self.found,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(key: &str, ts: &str) -> Decoder {
        Decoder::new(
            Some(Pointer::parse(key).unwrap()),
            Some(Pointer::parse(ts).unwrap()),
        )
    }

    #[test]
    fn decode_value_finds_what_decode_finds() {
        let d = dec("/a/1/k", "/t");
        let line = br#"{"a":[0,{"k":"x"}],"t":"2024-01-01T00:00:00Z"}"#;
        let value: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(d.decode_value(&value).unwrap(), d.decode(line).unwrap());
        assert_eq!(
            d.decode_value(&value).unwrap(),
            Decoded {
                key: Some(b"x".to_vec()),
                timestamp_ms: Some(1_704_067_200_000)
            }
        );
        let d = dec("/a/01/k", "/none");
        assert_eq!(
            d.decode_value(&value).unwrap(),
            Decoded {
                key: None,
                timestamp_ms: None
            }
        );
    }

    #[test]
    fn extracts_key_and_time_at_any_depth() {
        let d = dec("/a/b", "/t/1");
        let got = d
            .decode(br#"{"x":[1,{"y":2}],"a":{"z":null,"b":"UA"},"t":["no","2013-01-01T10:17:00.000Z"]}"#)
            .unwrap();
        assert_eq!(got.key.as_deref(), Some(&b"UA"[..]));
        assert_eq!(got.timestamp_ms, Some(1_357_035_420_000));
    }

    #[test]
    fn numbers_objects_and_absent_values() {
        let d = dec("/k", "/t");
        assert_eq!(
            d.decode(br#"{"k":15,"t":1357035420000}"#).unwrap(),
            Decoded {
                key: Some(b"15".to_vec()),
                timestamp_ms: Some(1_357_035_420_000)
            }
        );
        assert_eq!(
            d.decode(br#"{"k":{"b":1},"t":"2013-01-01T05:17:00-05:00"}"#)
                .unwrap(),
            Decoded {
                key: Some(br#"{"b":1}"#.to_vec()),
                timestamp_ms: Some(1_357_035_420_000)
            }
        );
        assert_eq!(
            d.decode(br#"{"k":null}"#).unwrap(),
            Decoded {
                key: None,
                timestamp_ms: None
            }
        );
        // Same pointer for both.
        let same = dec("/t", "/t");
        assert_eq!(same.decode(br#"{"t":"5"}"#).unwrap().timestamp_ms, Some(5));
        assert_eq!(same.decode(br#"{"t":"5"}"#).unwrap().key.unwrap(), b"5");
        let key_only = Decoder::new(Some(Pointer::parse("/k").unwrap()), None);
        assert_eq!(
            key_only.decode(br#"{"k":""}"#).unwrap().key.unwrap(),
            b"",
            "an empty key is a key"
        );
        // Escaped tokens.
        let esc = dec("/a~1b", "/m~0n");
        assert_eq!(
            esc.decode(br#"{"a/b":"K","m~n":7}"#).unwrap().key.unwrap(),
            b"K"
        );
    }

    #[test]
    fn invalid_json_and_bad_times_are_errors() {
        let d = dec("/k", "/t");
        assert!(
            d.decode(br#"{"k":"a","t":1"#)
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert!(d.decode(br#"{"k":"a"} trailing"#).is_err());
        assert!(
            d.decode(br#"{"skip":[1,2,}"#).is_err(),
            "skipped members are validated too"
        );
        assert!(
            d.decode(br#"{"t":"yesterday"}"#)
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(d.decode(br#"{"t":true}"#).is_err());
        assert!(Pointer::parse("carrier").is_err());
        assert!(
            d.decode(b"{\"k\":\"a\",\"skipped\":\"\xff\xfe\"}")
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(
            d.decode(br#"{"t":1e300}"#)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            d.decode(br#"{"t":18446744073709551615}"#)
                .unwrap_err()
                .contains("out of range")
        );
        let time_only = Decoder::new(None, Some(Pointer::parse("/t").unwrap()));
        assert_eq!(
            time_only.decode(br#"{"t":9}"#).unwrap().timestamp_ms,
            Some(9)
        );
    }
}
