//! Decoding a source line into an event: validate the JSON, pull out the key and the
//! event time by JSON pointer (RFC 6901).
//!
//! The line is parsed once, in one pass, without building a tree: the members on
//! the pointers' paths are visited and everything else is skipped with
//! `serde::de::IgnoredAny` (which still checks it is valid JSON). Only the two
//! values found are allocated.

use std::fmt;

mod scan;

use std::borrow::Cow;
use std::ops::Range;

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
pub struct Decoded<'a> {
    /// Key bytes, or `None` when the pointer finds nothing or `null`. An empty
    /// string is a key (it is hashed like any other), as in Kafka. Borrowed
    /// from the line when it is a JSON string without escapes.
    pub key: Option<Cow<'a, [u8]>>,
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
    pub fn decode<'a>(&self, line: &'a [u8]) -> Result<Decoded<'a>, String> {
        self.decode_indexed(line, None)
    }

    /// [`Decoder::decode`], and when `members` is given, the line's top-level
    /// members in it (see [`scan::scan_indexed`]; emptied first, empty when
    /// the scanner did not decide the line alone).
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    pub fn decode_indexed<'a>(
        &self,
        line: &'a [u8],
        mut members: Option<&mut Vec<u16>>,
    ) -> Result<Decoded<'a>, String> {
        if let Some(m) = members.as_deref_mut() {
            m.clear();
        }
        if let Some(decoded) = self.decode_fast(line, members.as_deref_mut()) {
            return decoded;
        }
        if let Some(m) = members {
            m.clear();
        }
        self.decode_serde(line)
    }

    /// [`Decoder::decode`] by the scanner (see `scan`): `None` when the
    /// scanner is unsure (or the line is not JSON) and serde_json decides.
    /// Allocates nothing for a key that is a string without escapes.
    fn decode_fast<'a>(
        &self,
        line: &'a [u8],
        members: Option<&mut Vec<u16>>,
    ) -> Option<Result<Decoded<'a>, String>> {
        std::str::from_utf8(line).ok()?;
        let (k, t) = (self.key.as_ref(), self.timestamp.as_ref());
        // Only the pointers set: with none, or both at the top, the scanner
        // walks the top object alone and can list its members.
        let mut paths: [&[String]; 2] = [&[], &[]];
        let mut n = 0;
        for p in [k, t].into_iter().flatten() {
            paths[n] = &p.0[..];
            n += 1;
        }
        let mut found: [Option<Range<usize>>; 2] = [None, None];
        if !scan::scan_indexed(line, &paths[..n], &mut found[..n], members) {
            return None;
        }
        let (key_at, time_at) = match (k.is_some(), t.is_some()) {
            (true, true) => (found[0].clone(), found[1].clone()),
            (true, false) => (found[0].clone(), None),
            (false, true) => (None, found[0].clone()),
            (false, false) => (None, None),
        };
        let key = match key_at.filter(|_| k.is_some()).map(|r| &line[r]) {
            None | Some(b"null") => None,
            // A string without escapes is its own bytes.
            Some(text) if text[0] == b'"' && !text.contains(&b'\\') => {
                Some(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(text) => key_bytes(serde_json::from_slice(text).ok()?).map(Cow::Owned),
        };
        let timestamp_ms = match time_at.filter(|_| t.is_some()).map(|r| &line[r]) {
            None | Some(b"null") => None,
            Some(text) => {
                let ms = match text {
                    // An integer in range, or a string without escapes.
                    [b'-' | b'0'..=b'9', digits @ ..] if digits.iter().all(u8::is_ascii_digit) => {
                        std::str::from_utf8(text).ok()?.parse().ok().map(Ok)
                    }
                    [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
                        Some(event_time_of_str(std::str::from_utf8(inner).ok()?))
                    }
                    _ => None,
                };
                let ms = match ms {
                    Some(ms) => ms,
                    None => parse_event_time(&serde_json::from_slice(text).ok()?),
                };
                match ms {
                    Ok(ms) => Some(ms),
                    Err(reason) => return Some(Err(reason)),
                }
            }
        };
        Some(Ok(Decoded { key, timestamp_ms }))
    }

    /// [`Decoder::decode`] by serde_json alone, without the scanner: what the
    /// scanner's answers are checked against (tests, the `decode` fuzz
    /// target). Not for other use.
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    #[doc(hidden)]
    pub fn decode_serde(&self, line: &[u8]) -> Result<Decoded<'static>, String> {
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
    pub fn decode_value(&self, value: &Value) -> Result<Decoded<'static>, String> {
        let at = |p: &Option<Pointer>| {
            p.as_ref()
                .and_then(|p| p.0.iter().try_fold(value, |v, token| step(v, token)))
                .cloned()
        };
        Self::decoded(at(&self.key), at(&self.timestamp))
    }

    fn decoded(
        key_value: Option<Value>,
        time_value: Option<Value>,
    ) -> Result<Decoded<'static>, String> {
        let key = key_value.and_then(key_bytes).map(Cow::Owned);
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
    let mut tokens: [&[String]; MAX_POINTERS] = [&[]; MAX_POINTERS];
    for (t, p) in tokens.iter_mut().zip(paths) {
        *t = p.0.as_slice();
    }
    let tokens = &tokens[..paths.len()];
    // The scanner first; serde_json decides where it is unsure, and makes the
    // error message of a line that is not JSON.
    let mut ranges: [Option<Range<usize>>; MAX_POINTERS] = [const { None }; MAX_POINTERS];
    if scan::scan(line, tokens, &mut ranges[..paths.len()]) {
        let mut all = true;
        for (f, r) in found.iter_mut().zip(&ranges) {
            if let Some(r) = r {
                match serde_json::from_slice::<Value>(&line[r.clone()]) {
                    Ok(v) => *f = Some(v),
                    Err(_) => {
                        all = false;
                        break;
                    }
                }
            }
        }
        if all {
            return Ok(());
        }
        for f in found.iter_mut() {
            *f = None;
        }
    }
    extract_serde(text, tokens, found)
}

/// [`extract_into`] by serde_json alone (a walk over the text that skips
/// what no path names with `IgnoredAny`).
fn extract_serde(
    text: &str,
    tokens: &[&[String]],
    found: &mut [Option<Value>],
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Walk {
        paths: tokens,
        active: if tokens.len() == 32 {
            u32::MAX
        } else {
            (1u32 << tokens.len()) - 1
        },
        depth: 0,
        found,
    };
    seed.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// A key's bytes from its JSON value: a string as its text, another value
/// as its JSON text; `null` is no key.
fn key_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

/// The event time a JSON string holds: ms since the Unix epoch as digits, or
/// an RFC 3339 date-time.
fn event_time_of_str(s: &str) -> Result<i64, String> {
    if let Some(ms) = utc_millis(s.as_bytes()) {
        return Ok(ms);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("event time {s:?} is not RFC 3339 nor epoch ms: {e}"))
}

/// The common shapes of an RFC 3339 time in UTC, `YYYY-MM-DDTHH:MM:SSZ` and
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as ms since the Unix epoch, without chrono's
/// general parser (a tenth of the host's decode of a flight). `None` for
/// anything else, which chrono then reads: where this answers, chrono
/// answers the same, a leap second (`:60`) included (a test compares the two
/// on random and mutated times).
fn utc_millis(b: &[u8]) -> Option<i64> {
    if !(b.len() == 20 || (b.len() == 24 && b[19] == b'.'))
        || b[b.len() - 1] != b'Z'
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    #[inline(always)]
    fn digit(c: u8) -> Option<i64> {
        let v = c.wrapping_sub(b'0');
        (v <= 9).then_some(i64::from(v))
    }
    #[inline(always)]
    fn two(b: &[u8], at: usize) -> Option<i64> {
        Some(digit(b[at])? * 10 + digit(b[at + 1])?)
    }
    let (year, month, day) = (two(b, 0)? * 100 + two(b, 2)?, two(b, 5)?, two(b, 8)?);
    let (hour, minute, second) = (two(b, 11)?, two(b, 14)?, two(b, 17)?);
    let ms = if b.len() == 24 {
        two(b, 20)? * 10 + digit(b[22])?
    } else {
        0
    };
    sluice_plugin_sdk::time::utc_ms(year, month, day, hour, minute, second, ms)
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
        Value::String(s) => event_time_of_str(s),
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

impl Walk<'_, '_> {
    /// Stores, for each path of `mask` (which matched `depth` tokens to reach
    /// `value`), what its remaining tokens name inside `value`: a path that
    /// goes through the value another path ends at.
    fn within(&mut self, mask: u32, depth: usize, value: &Value) {
        let mut rest = mask;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let at = self.paths[i][depth..]
                .iter()
                .try_fold(value, |v, token| step(v, token));
            if let (Some(slot), Some(at)) = (self.found.get_mut(i), at) {
                *slot = Some(at.clone());
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(mut self, d: D) -> Result<(), D::Error> {
        // A pointer with no tokens is the whole document.
        let whole = self.active
            & self.paths.iter().enumerate().fold(0, |m, (i, p)| {
                if p.len() == self.depth { m | 1 << i } else { m }
            });
        if whole != 0 {
            let value = Value::deserialize(d)?;
            self.within(self.active & !whole, self.depth, &value);
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

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let (ends, deeper) = self.step(&key);
            if ends != 0 {
                let value: Value = map.next_value()?;
                self.within(deeper, self.depth + 1, &value);
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

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let (ends, deeper) = self.step(&index.to_string());
            let more = if ends != 0 {
                seq.next_element::<Value>()?.map(|v| {
                    self.within(deeper, self.depth + 1, &v);
                    store(self.found, ends, v)
                })
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
    use proptest::prelude::*;

    /// Where the fast path answers, chrono's parser answers the same; it
    /// answers for every valid time of the two shapes (leap seconds aside),
    /// and leaves the rest to chrono.
    #[test]
    fn utc_millis_is_chronos_reading() {
        let chrono_ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_millis())
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut answered = 0;
        for i in 0..200_000 {
            let (y, m, d) = (next(10_000), next(14), next(33));
            let (h, mi, s, ms) = (next(25), next(61), next(62), next(1000));
            let mut text = if i % 2 == 0 {
                format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
            } else {
                format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
            };
            if i % 7 == 0 {
                // One byte changed anywhere.
                let at = next(text.len() as u64) as usize;
                let byte = b"0123456789-:.TZtz +x"[next(20) as usize];
                let mut bytes = text.into_bytes();
                bytes[at] = byte;
                text = String::from_utf8(bytes).unwrap();
            }
            let expected = chrono_ms(&text);
            match utc_millis(text.as_bytes()) {
                Some(ms) => {
                    answered += 1;
                    assert_eq!(Some(ms), expected, "{text}");
                }
                None => assert!(
                    expected.is_none() || text.contains(":60") || i % 7 == 0,
                    "{text}: valid, and the fast path gave up"
                ),
            }
            assert_eq!(
                event_time_of_str(&text).ok(),
                expected.or_else(|| text.parse().ok()),
                "{text}"
            );
        }
        assert!(answered > 50_000, "{answered}");
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.999Z", -1),
            ("2013-01-01T10:17:00.000Z", 1_357_035_420_000),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("0000-03-01T00:00:00Z", -62_162_035_200_000),
        ] {
            assert_eq!(utc_millis(text.as_bytes()), Some(ms), "{text}");
        }
        for text in [
            "1900-02-29T00:00:00Z",
            "2013-04-31T00:00:00Z",
            "2013-01-01T24:00:00Z",
            "2013-01-01T10:17:00.00Z",
            "2013-01-01T10:17:00+00:00",
        ] {
            assert_eq!(utc_millis(text.as_bytes()), None, "{text}");
        }
    }

    fn dec(key: &str, ts: &str) -> Decoder {
        Decoder::new(
            Some(Pointer::parse(key).unwrap()),
            Some(Pointer::parse(ts).unwrap()),
        )
    }

    /// JSON-like text: valid documents built from raw pieces (numbers in
    /// every form, escapes, surrogates, dates), with one byte changed, added
    /// or removed half of the time.
    fn json_like() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            prop::sample::select(vec![
                "0",
                "-0",
                "7",
                "-12",
                "1357035420000",
                "0.5",
                "-1.25e3",
                "1E+2",
                "1e400",
                "18446744073709551615",
                "9300000000000000000",
                "true",
                "false",
                "null",
            ])
            .prop_map(str::to_string),
            prop::sample::select(vec![
                r#""UA""#,
                r#""""#,
                r#""a\"b""#,
                r#""\u0041""#,
                r#""\ud83d\ude00""#,
                r#""\ud800""#,
                r#""2013-01-01T10:17:00.000Z""#,
                r#""2013-01-01T05:17:00-05:00""#,
                r#""5""#,
                r#""yesterday""#,
                r#""é\n""#,
                r#""\/""#,
            ])
            .prop_map(str::to_string),
        ];
        let name = prop::sample::select(vec![
            r#""k""#,
            r#""t""#,
            r#""a""#,
            r#""b""#,
            r#""0""#,
            r#""\u006b""#,
            r#""a/b""#,
        ]);
        let doc = scalar.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((name.clone(), inner), 0..4).prop_map(|m| {
                    let members: Vec<String> =
                        m.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    format!("{{ {} }}", members.join(","))
                }),
            ]
        });
        (
            doc,
            any::<bool>(),
            any::<prop::sample::Index>(),
            prop::sample::select(vec![
                b'"', b'\\', b',', b'}', b']', b'0', b'-', b'.', b' ', b'x', 0x01, b'{', b':',
            ]),
            0u8..3,
        )
            .prop_map(|(text, mutate, at, byte, how)| {
                if !mutate {
                    return text;
                }
                let mut bytes = text.into_bytes();
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
    }

    proptest::proptest! {
        /// Where the scanner answers, it answers what serde_json answers: the
        /// same key and event time (or the same error), the same values.
        #[test]
        fn the_scanner_agrees_with_serde_json(line in json_like()) {
            for (key, time) in [("/k", "/t"), ("/a/0", "/a/1/k"), ("/a", "/a/b"), ("", "/0"), ("/a~1b", "/b/b")] {
                let d = dec(key, time);
                if let Some(fast) = d.decode_fast(line.as_bytes(), None) {
                    proptest::prop_assert_eq!(fast, d.decode_serde(line.as_bytes()), "{} {} {}", line, key, time);
                }
                let (p, q) = (Pointer::parse(key).unwrap(), Pointer::parse(time).unwrap());
                let mut fast = [None, None];
                let mut slow = [None, None];
                let fast_result = extract_into(line.as_bytes(), &[&p, &q], &mut fast);
                let slow_result = extract_serde(&line, &[&p.0, &q.0], &mut slow);
                proptest::prop_assert_eq!(&fast_result, &slow_result, "{}", line);
                if fast_result.is_ok() {
                    proptest::prop_assert_eq!(&fast, &slow, "{}", line);
                }
            }
        }
    }

    #[test]
    fn the_scanner_answers_for_ordinary_lines() {
        // The fast path is taken (not serde_json behind it) for the lines a
        // pipeline sees: a flights record, numbers, escapes off the way.
        let d = dec("/carrier", "/event_time");
        for line in [
            &br#"{"year":2013,"carrier":"UA","dep_delay":-2.5,"event_time":"2013-01-01T10:17:00.000Z","tailnum":null}"#[..],
            br#"{"carrier":"A\"A","event_time":1357035420000,"note":"caf\u00e9 \n"}"#,
        ] {
            let fast = d.decode_fast(line, None).expect("the scanner answers");
            assert_eq!(fast, d.decode_serde(line));
            assert_eq!(fast.unwrap().timestamp_ms, Some(1_357_035_420_000));
        }
    }

    #[test]
    fn a_path_through_the_value_another_path_ends_at_is_found() {
        let d = dec("/a", "/a/t");
        let line = br#"{"a":{"t":5}}"#;
        assert_eq!(d.decode_serde(line).unwrap().timestamp_ms, Some(5));
        assert_eq!(d.decode(line).unwrap().timestamp_ms, Some(5));
        assert_eq!(d.decode(line).unwrap().key.unwrap().as_ref(), br#"{"t":5}"#);
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
                key: Some(b"x".to_vec().into()),
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
                key: Some(b"15".to_vec().into()),
                timestamp_ms: Some(1_357_035_420_000)
            }
        );
        assert_eq!(
            d.decode(br#"{"k":{"b":1},"t":"2013-01-01T05:17:00-05:00"}"#)
                .unwrap(),
            Decoded {
                key: Some(br#"{"b":1}"#.to_vec().into()),
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
        assert_eq!(
            same.decode(br#"{"t":"5"}"#).unwrap().key.unwrap().as_ref(),
            b"5"
        );
        let key_only = Decoder::new(Some(Pointer::parse("/k").unwrap()), None);
        assert_eq!(
            key_only
                .decode(br#"{"k":""}"#)
                .unwrap()
                .key
                .unwrap()
                .as_ref(),
            b"",
            "an empty key is a key"
        );
        // Escaped tokens.
        let esc = dec("/a~1b", "/m~0n");
        assert_eq!(
            esc.decode(br#"{"a/b":"K","m~n":7}"#)
                .unwrap()
                .key
                .unwrap()
                .as_ref(),
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
