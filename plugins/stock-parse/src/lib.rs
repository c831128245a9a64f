//! The `parse` stock plugin: a text line (or a string field of a JSON
//! record) to a JSON object with typed fields, by a regex with named groups
//! or a named pattern. Lines that do not match are rejected with the reason,
//! into the dead-letter sink. Reference: `docs/plugins/stock/parse.md`.
//!
//! Config:
//! - `pattern`: `combined` (Apache/nginx combined log; fields after the user
//!   agent are ignored), `common` (the Common Log Format) or `kv`
//!   (`key=value` pairs, values bare or double-quoted); or
//! - `regex`: a regular expression (Rust `regex` syntax) whose named groups
//!   are the fields, e.g. `^(?P<level>\w+) (?P<took_ms>\d+)ms (?P<msg>.*)$`;
//! - `types`: a table of field → type: `string` (default), `int`, `float`,
//!   `bool`, `timestamp:clf`, `timestamp:rfc3339`, `timestamp:unix`
//!   (seconds), `timestamp:unix_ms`; a timestamp becomes RFC 3339 UTC with
//!   milliseconds. Given over a pattern's own types;
//! - `nulls`: texts that mean "no value" and become `null`; default `["-"]`
//!   for `combined` and `common`, none otherwise;
//! - `event_time`: a `timestamp` field whose time becomes the event's time;
//! - `field`: a JSON pointer: parse this string of a JSON record and add the
//!   fields to the record's top level (default: the whole event is the line).
//!
//! A group that did not take part in the match is left out. A value its type
//! does not read (`int` "12a") rejects the record with the field and the text.

use std::borrow::Cow;

use regex::Regex;
use sluice_plugin_sdk::{Batch, Config, Event, Output, Processor, export_processor};
use stock_common::doc::{self, Doc, Node, Scratch};
use stock_common::pointer::Pointer;
use stock_common::settings;

mod time;

/// The type a field's text is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// As it is.
    String,
    /// A signed 64-bit integer.
    Int,
    /// A finite float.
    Float,
    /// `true` or `false`.
    Bool,
    /// A time, in one of the [`time::Format`]s.
    Timestamp(time::Format),
}

impl Type {
    fn parse(text: &str) -> Result<Type, String> {
        Ok(match text {
            "string" => Type::String,
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "timestamp:clf" => Type::Timestamp(time::Format::Clf),
            "timestamp:rfc3339" => Type::Timestamp(time::Format::Rfc3339),
            "timestamp:unix" => Type::Timestamp(time::Format::UnixSeconds),
            "timestamp:unix_ms" => Type::Timestamp(time::Format::UnixMillis),
            other => {
                return Err(format!(
                    "`{other}` is not a type: use string, int, float, bool, timestamp:clf, \
                     timestamp:rfc3339, timestamp:unix or timestamp:unix_ms"
                ));
            }
        })
    }
}

/// How lines are split into fields.
enum Splitter {
    Regex(Regex),
    KeyValue,
}

/// The `combined` pattern (Apache's and nginx's default access log).
pub const COMBINED: &str = concat!(
    r#"^(?P<remote_addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "#,
    r#""(?P<request>(?P<method>[A-Za-z]+) (?P<path>[^ "]+) (?P<protocol>HTTP/[0-9.]+)|(?:[^"\\]|\\.)*)" "#,
    r#"(?P<status>\d{3}) (?P<bytes>\d+|-) "#,
    r#""(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<user_agent>(?:[^"\\]|\\.)*)"(?: .*)?$"#,
);

/// The `common` pattern (the Common Log Format).
pub const COMMON: &str = concat!(
    r#"^(?P<remote_addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "#,
    r#""(?P<request>(?P<method>[A-Za-z]+) (?P<path>[^ "]+) (?P<protocol>HTTP/[0-9.]+)|(?:[^"\\]|\\.)*)" "#,
    r#"(?P<status>\d{3}) (?P<bytes>\d+|-)$"#,
);

/// The types `combined` and `common` give their fields.
const LOG_TYPES: [(&str, Type); 3] = [
    ("status", Type::Int),
    ("bytes", Type::Int),
    ("time", Type::Timestamp(time::Format::Clf)),
];

/// The configured parser.
pub struct Parse {
    splitter: Splitter,
    /// What the config calls it, for reasons.
    name: String,
    types: Vec<(String, Type)>,
    nulls: Vec<String>,
    event_time: Option<String>,
    field: Option<Pointer>,
}

impl Processor for Parse {
    fn configure(config: &Config) -> Result<Self, String> {
        settings::only(
            config,
            &["pattern", "regex", "types", "nulls", "event_time", "field"],
        )?;
        let (splitter, name, mut types, default_nulls) = match (
            config.get("pattern"),
            config.get("regex"),
        ) {
            (Some(_), Some(_)) => {
                return Err("give `pattern` or `regex`, not both".into());
            }
            (None, None) => {
                return Err(
                    "config `pattern` (combined, common, kv) or `regex` is required".into(),
                );
            }
            (Some(p), None) => {
                let (splitter, typed, nulls) = match p {
                    "combined" => (Splitter::Regex(compile(COMBINED)?), &LOG_TYPES[..], true),
                    "common" => (Splitter::Regex(compile(COMMON)?), &LOG_TYPES[..], true),
                    "kv" => (Splitter::KeyValue, &[][..], false),
                    other => {
                        return Err(format!(
                            "config `pattern`: `{other}` is not a pattern: use combined, common or kv, or give a `regex`"
                        ));
                    }
                };
                let types = typed.iter().map(|(n, t)| (n.to_string(), *t)).collect();
                let nulls = if nulls {
                    vec!["-".to_string()]
                } else {
                    Vec::new()
                };
                (splitter, format!("pattern `{p}`"), types, nulls)
            }
            (None, Some(r)) => {
                let re = compile(r)?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(
                        "config `regex`: it has no named group (?P<name>…): no field to output"
                            .into(),
                    );
                }
                (
                    Splitter::Regex(re),
                    "the regex".to_string(),
                    Vec::new(),
                    Vec::new(),
                )
            }
        };
        for (name, value) in settings::table(config, "types")? {
            let stock_common::toml::Value::String(text) = value else {
                return Err(format!(
                    "config `types`: `{name}` must be a type name (a string)"
                ));
            };
            let ty = Type::parse(&text).map_err(|e| format!("config `types`: `{name}`: {e}"))?;
            if let Splitter::Regex(re) = &splitter
                && !re.capture_names().flatten().any(|n| n == name)
            {
                return Err(format!(
                    "config `types`: `{name}` is not a named group of {}",
                    match config.get("pattern") {
                        Some(p) => format!("pattern `{p}`"),
                        None => "the regex".into(),
                    }
                ));
            }
            types.retain(|(n, _)| *n != name);
            types.push((name, ty));
        }
        let nulls = match config.get("nulls") {
            Some(_) => settings::string_list(config, "nulls")?,
            None => default_nulls,
        };
        let event_time = config.get("event_time").map(str::to_string);
        if let Some(field) = &event_time
            && !types
                .iter()
                .any(|(n, t)| n == field && matches!(t, Type::Timestamp(_)))
        {
            return Err(format!(
                "config `event_time`: `{field}` is not a field of type timestamp (give it one in `types`)"
            ));
        }
        let field = config
            .get("field")
            .map(|p| Pointer::parse(p).map_err(|e| format!("config `field`: {e}")))
            .transpose()?;
        Ok(Parse {
            splitter,
            name,
            types,
            nulls,
            event_time,
            field,
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut scratch = Scratch::default();
        let mut buf = Vec::with_capacity(512);
        let mut fields: Vec<(Cow<'_, str>, Node<'_>)> = Vec::new();
        for event in batch {
            buf.clear();
            match self.one(&event, &mut scratch, &mut fields, &mut buf) {
                Ok(time) => stock_common::emit_at(
                    out,
                    &event,
                    &buf,
                    time.unwrap_or_else(|| event.timestamp_ms()),
                ),
                Err(reason) => out.reject(&event, reason),
            }
        }
        Ok(())
    }
}

fn compile(re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("config `regex`: {e}"))
}

impl Parse {
    /// Parses one event into `buf`; its new event time, if `event_time` is set.
    fn one<'a>(
        &'a self,
        event: &Event<'a>,
        scratch: &mut Scratch<'a>,
        fields: &mut Vec<(Cow<'a, str>, Node<'a>)>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<i64>, String> {
        fields.clear();
        let Some(pointer) = &self.field else {
            let line = std::str::from_utf8(event.value())
                .map_err(|e| format!("the line is not UTF-8: {e}"))?;
            let time = self.split(line, fields)?;
            doc::Doc {
                members: std::mem::take(fields),
            }
            .write(buf);
            return Ok(time);
        };
        let mut record = Doc::parse(event.value(), scratch)?;
        let text = match record.get(pointer.tokens())? {
            None => return Err(format!("no `{pointer}` in the record")),
            Some(node) => match node.as_str() {
                Some(text) => text.into_owned(),
                None => return Err(format!("`{pointer}` is not a string")),
            },
        };
        let mut parsed = Vec::new();
        let time = self.split(&text, &mut parsed)?;
        for (name, value) in parsed {
            record.set_member(Cow::Owned(name.into_owned()), value.into_owned());
        }
        record.write(buf);
        scratch.recycle(record);
        Ok(time)
    }

    /// Splits `line` into typed fields; the event time, if configured.
    fn split<'l>(
        &self,
        line: &'l str,
        fields: &mut Vec<(Cow<'l, str>, Node<'l>)>,
    ) -> Result<Option<i64>, String> {
        let mut time = None;
        let mut add = |name: &str, text: &str, fields: &mut Vec<(Cow<'l, str>, Node<'l>)>| {
            let (node, ms) = self.typed(name, text)?;
            if self.event_time.as_deref() == Some(name) {
                time = ms;
            }
            match fields.iter_mut().find(|(k, _)| k == name) {
                Some((_, v)) => *v = node,
                None => fields.push((Cow::Owned(name.to_string()), node)),
            }
            Ok::<(), String>(())
        };
        match &self.splitter {
            Splitter::Regex(re) => {
                let caps = re
                    .captures(line)
                    .ok_or_else(|| format!("does not match {}: {}", self.name, preview(line)))?;
                for (i, name) in re.capture_names().enumerate() {
                    let (Some(name), Some(m)) = (name, caps.get(i)) else {
                        continue;
                    };
                    add(name, m.as_str(), fields)?;
                }
            }
            Splitter::KeyValue => {
                let pairs = key_values(line);
                if pairs.is_empty() {
                    return Err(format!("no key=value pair: {}", preview(line)));
                }
                for (k, v) in pairs {
                    add(k, &v, fields)?;
                }
            }
        }
        Ok(time)
    }

    /// `text` as field `name`'s type: its JSON, and its time for a timestamp.
    fn typed(&self, name: &str, text: &str) -> Result<(Node<'static>, Option<i64>), String> {
        if self.nulls.iter().any(|n| n == text) {
            return Ok((Node::Raw(Cow::Borrowed(b"null")), None));
        }
        let ty = self
            .types
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Type::String, |(_, t)| *t);
        let bad = |what: &str| format!("field `{name}`: cannot read `{}` as {what}", preview(text));
        Ok(match ty {
            Type::String => (Node::string(text), None),
            Type::Int => {
                let n: i64 = text.parse().map_err(|_| bad("an int"))?;
                (Node::Raw(Cow::Owned(n.to_string().into_bytes())), None)
            }
            Type::Float => {
                let f: f64 = text.parse().map_err(|_| bad("a float"))?;
                let n = serde_json::Number::from_f64(f).ok_or_else(|| bad("a finite float"))?;
                (Node::Raw(Cow::Owned(n.to_string().into_bytes())), None)
            }
            Type::Bool => match text {
                "true" => (Node::Raw(Cow::Borrowed(b"true")), None),
                "false" => (Node::Raw(Cow::Borrowed(b"false")), None),
                _ => return Err(bad("a bool (true or false)")),
            },
            Type::Timestamp(format) => {
                let ms = time::parse(format, text)
                    .ok_or_else(|| bad(&format!("a timestamp ({})", format.name())))?;
                let rfc3339 =
                    time::rfc3339_ms(ms).ok_or_else(|| bad("a timestamp of the years 0–9999"))?;
                (Node::string(&rfc3339), Some(ms))
            }
        })
    }
}

/// The first 80 characters of `text`, for a reason.
fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(80).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

/// `key=value` pairs of a line: keys of letters, digits, `_`, `.`, `-`;
/// values bare (up to a space) or double-quoted (`\"` and `\\` inside).
/// Words without `=` are skipped.
pub fn key_values(line: &str) -> Vec<(&str, Cow<'_, str>)> {
    let b = line.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-')) {
            i += 1;
        }
        if i > start && i < b.len() && b[i] == b'=' {
            let key = &line[start..i];
            i += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut value = String::new();
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < b.len() && matches!(b[i + 1], b'"' | b'\\') => {
                            value.push(char::from(b[i + 1]));
                            i += 2;
                        }
                        _ => {
                            let ch = line[i..].chars().next().unwrap_or(' ');
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if closed {
                    pairs.push((key, Cow::Owned(value)));
                }
                continue;
            }
            let vstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            pairs.push((key, Cow::Borrowed(&line[vstart..i])));
            continue;
        }
        // Not a pair: skip the word.
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
    }
    pairs
}

export_processor!(Parse);

#[cfg(test)]
mod tests;
