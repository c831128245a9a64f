//! The `fields` stock plugin: keep, drop, rename and set fields of JSON
//! records, by JSON pointer. Reference: `docs/plugins/stock/fields.md`.
//!
//! Config (lists and tables in TOML):
//! - `keep = ["/a", "/b/c"]`: only these, in this order (the others dropped);
//! - `drop = ["/x"]`;
//! - `rename = { "/from" = "/to" }`: within one object in place, replacing a
//!   member of the new name; elsewhere moved;
//! - `set = { "/source" = "nyc", "/v" = 2 }`: a constant, in place or
//!   appended (objects on the way created).
//!
//! Applied in that order. A pointer that finds nothing is not an error. A
//! record that is not a JSON object, or a `set` through a value that is not
//! an object, is rejected with the reason. Values the edits do not touch are
//! copied byte for byte; the record's top level is read with the SDK's
//! scanner, not parsed ([`stock_common::doc`]).

use std::borrow::Cow;

use sluice_plugin_sdk::scan::{self, Field};
use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};
use stock_common::doc::{Doc, Node, Scratch};
use stock_common::pointer::Pointer;
use stock_common::settings;

/// The configured edits.
pub struct Fields {
    keep: Vec<Pointer>,
    drop: Vec<Pointer>,
    rename: Vec<(Pointer, Pointer)>,
    set: Vec<(Pointer, Vec<u8>)>,
    /// When every pointer names a top-level member: the member names, for
    /// [`Fields::flat`].
    flat: Option<Flat>,
}

/// The edits as member names, when they are all top-level and need no
/// escape in JSON (then no key of the output does: the scanner's keys have
/// none either).
struct Flat {
    keep: Vec<String>,
    /// Bit `n` set when a `keep` name is `n` bytes long (`n` < 64; longer
    /// names set bit 63): most members are told apart by their length.
    keep_lengths: u64,
    drop: Vec<String>,
    rename: Vec<(String, String)>,
    set: Vec<(String, usize)>,
}

/// Reusable buffers of [`Fields::flat`].
struct FlatScratch<'a> {
    found: Vec<(&'a str, Field<'a>)>,
    entries: Vec<(&'a str, &'a [u8])>,
    slots: Vec<Option<&'a [u8]>>,
}

/// Bit of a name's length in [`Flat::keep_lengths`].
fn length_bit(name: &str) -> u64 {
    1 << name.len().min(63)
}

/// Whether `name` is written in JSON as it is, between quotes.
fn plain(name: &str) -> bool {
    name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The position of `key` in `names`: length and first byte compared before
/// the bytes.
fn position(names: &[String], key: &str) -> Option<usize> {
    names.iter().position(|n| {
        n.len() == key.len() && n.as_bytes().first() == key.as_bytes().first() && n == key
    })
}

const SETTINGS: [&str; 4] = ["keep", "drop", "rename", "set"];

impl Processor for Fields {
    fn configure(config: &Config) -> Result<Self, String> {
        settings::only(config, &SETTINGS)?;
        let pointers = |name: &str| -> Result<Vec<Pointer>, String> {
            settings::string_list(config, name)?
                .iter()
                .map(|p| Pointer::parse(p).map_err(|e| format!("config `{name}`: {e}")))
                .collect()
        };
        let keep = pointers("keep")?;
        let drop = pointers("drop")?;
        let rename = settings::table(config, "rename")?
            .into_iter()
            .map(|(from, to)| {
                let to = match to {
                    stock_common::toml::Value::String(s) => s,
                    other => {
                        return Err(format!(
                            "config `rename`: `{from}` must map to a pointer (a string), not a {}",
                            other.type_str()
                        ));
                    }
                };
                let from = Pointer::parse(&from).map_err(|e| format!("config `rename`: {e}"))?;
                let to = Pointer::parse(&to).map_err(|e| format!("config `rename`: {e}"))?;
                Ok((from, to))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let set = settings::table(config, "set")?
            .into_iter()
            .map(|(at, value)| {
                let at = Pointer::parse(&at).map_err(|e| format!("config `set`: {e}"))?;
                let json = settings::toml_to_json(&value)
                    .map_err(|e| format!("config `set`: `{at}`: {e}"))?;
                Ok((at, serde_json::to_vec(&json).map_err(|e| e.to_string())?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if keep.is_empty() && drop.is_empty() && rename.is_empty() && set.is_empty() {
            return Err(
                "nothing to do: set at least one of `keep`, `drop`, `rename`, `set`".into(),
            );
        }
        let top = |p: &Pointer| p.top_level().filter(|n| plain(n)).map(str::to_string);
        let flat = (|| {
            let kept: Vec<String> = keep.iter().map(top).collect::<Option<_>>()?;
            Some(Flat {
                keep_lengths: kept.iter().map(|n| length_bit(n)).fold(0, |a, b| a | b),
                keep: kept,
                drop: drop.iter().map(top).collect::<Option<_>>()?,
                rename: rename
                    .iter()
                    .map(|(a, b)| Some((top(a)?, top(b)?)))
                    .collect::<Option<_>>()?,
                set: set
                    .iter()
                    .enumerate()
                    .map(|(i, (p, _))| Some((top(p)?, i)))
                    .collect::<Option<_>>()?,
            })
        })();
        Ok(Fields {
            keep,
            drop,
            rename,
            set,
            flat,
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut scratch = Scratch::default();
        let mut flat = FlatScratch {
            found: Vec::new(),
            entries: Vec::new(),
            slots: Vec::new(),
        };
        let mut buf = Vec::with_capacity(256);
        for event in batch {
            buf.clear();
            if self.flat(event.value(), &mut flat, &mut buf) {
                stock_common::emit(out, &event, &buf);
                continue;
            }
            match self.edit(event.value(), &mut scratch) {
                Ok(doc) => {
                    buf.clear();
                    doc.write(&mut buf);
                    stock_common::emit(out, &event, &buf);
                    scratch.recycle(doc);
                }
                Err(reason) => out.reject(&event, reason),
            }
        }
        Ok(())
    }
}

impl Fields {
    /// The fast path: when every pointer is top-level and the SDK's scanner
    /// settles the record, the edits on its list of members (as
    /// [`edit`](Self::edit) makes them on a [`Doc`], which it equals: tested),
    /// written to `buf`. `false`: ask [`edit`](Self::edit).
    fn flat<'a>(&'a self, json: &'a [u8], s: &mut FlatScratch<'a>, buf: &mut Vec<u8>) -> bool {
        let Some(flat) = &self.flat else {
            return false;
        };
        if scan::members(json, &mut s.found).is_none() || stock_common::doc::has_duplicate(&s.found)
        {
            return false;
        }
        let entries = &mut s.entries;
        entries.clear();
        if flat.keep.is_empty() {
            entries.extend(s.found.iter().map(|(k, v)| (*k, v.raw())));
        } else {
            s.slots.clear();
            s.slots.resize(flat.keep.len(), None);
            for (key, value) in &s.found {
                if flat.keep_lengths & length_bit(key) == 0 {
                    continue;
                }
                if let Some(i) = position(&flat.keep, key) {
                    s.slots[i] = Some(value.raw());
                }
            }
            for (name, slot) in flat.keep.iter().zip(&s.slots) {
                if let Some(value) = slot {
                    entries.push((name, value));
                }
            }
        }
        if !flat.drop.is_empty() {
            entries.retain(|(k, _)| position(&flat.drop, k).is_none());
        }
        for (old, new) in &flat.rename {
            if old == new {
                continue;
            }
            if let Some(mut at) = entries.iter().position(|(k, _)| k == old) {
                if let Some(there) = entries.iter().position(|(k, _)| k == new) {
                    entries.remove(there);
                    if there < at {
                        at -= 1;
                    }
                }
                entries[at].0 = new;
            }
        }
        for (name, i) in &flat.set {
            let value: &[u8] = &self.set[*i].1;
            match entries.iter_mut().find(|(k, _)| k == name) {
                Some(entry) => entry.1 = value,
                None => entries.push((name, value)),
            }
        }
        buf.push(b'{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            // No key needs an escape (see `Flat`).
            buf.push(b'"');
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(b"\":");
            buf.extend_from_slice(value);
        }
        buf.push(b'}');
        true
    }

    /// The record `json` with the edits applied.
    fn edit<'a>(&'a self, json: &'a [u8], scratch: &mut Scratch<'a>) -> Result<Doc<'a>, String> {
        let mut doc = Doc::parse(json, scratch)?;
        if !self.keep.is_empty() {
            let mut kept = Doc::new(scratch);
            for p in &self.keep {
                if let Some(value) = doc.get(p.tokens())? {
                    kept.set(p.tokens(), value.clone())?;
                }
            }
            scratch.recycle(std::mem::replace(&mut doc, kept));
        }
        for p in &self.drop {
            doc.take(p.tokens())?;
        }
        for (from, to) in &self.rename {
            doc.rename(from.tokens(), to.tokens())?;
        }
        for (at, value) in &self.set {
            doc.set(at.tokens(), Node::Raw(Cow::Borrowed(value)))?;
        }
        Ok(doc)
    }
}

export_processor!(Fields);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &[(&str, &str)], lines: &[&str]) -> (Vec<String>, Vec<(u32, String)>) {
        let mut p = Fields::configure(&Config::from_pairs(config.iter().copied())).unwrap();
        let mut out = Output::new();
        p.process(&Batch::from_lines(&lines.join("\n")), &mut out)
            .unwrap();
        (
            out.events
                .iter()
                .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
                .collect(),
            out.rejected
                .into_iter()
                .map(|r| (r.index, r.reason))
                .collect(),
        )
    }

    #[test]
    fn keep_drop_rename_set_in_order() {
        let line = r#"{"a":1,"b":{"c":2.50,"d":[1]},"e":"x","f":null}"#;
        assert_eq!(
            run(&[("keep", r#"["/e", "/b/c", "/zz"]"#)], &[line]).0,
            [r#"{"e":"x","b":{"c":2.50}}"#]
        );
        assert_eq!(
            run(&[("drop", r#"["/b/d", "/f"]"#)], &[line]).0,
            [r#"{"a":1,"b":{"c":2.50},"e":"x"}"#]
        );
        assert_eq!(
            run(&[("drop", "/a")], &[line]).0,
            [r#"{"b":{"c":2.50,"d":[1]},"e":"x","f":null}"#]
        );
        assert_eq!(
            run(
                &[
                    ("keep", r#"["/a", "/e"]"#),
                    ("drop", r#"["/a"]"#),
                    ("rename", r#"{ "/e" = "/event" }"#),
                    (
                        "set",
                        r#"{ "/src" = "nyc", "/e" = 1, "/m/n" = [true, 1.5] }"#
                    ),
                ],
                &[line]
            )
            .0,
            [r#"{"event":"x","e":1,"m":{"n":[true,1.5]},"src":"nyc"}"#]
        );
    }

    #[test]
    fn refusals_and_bad_config() {
        let (events, rejected) = run(
            &[("set", r#"{ "/a/b" = 1 }"#)],
            &["not json", "[1]", r#"{"a":3}"#, r#"{"c":1}"#],
        );
        assert_eq!(events, [r#"{"c":1,"a":{"b":1}}"#]);
        let reasons: Vec<&str> = rejected.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(
            reasons[0].starts_with("invalid JSON: expected ident"),
            "{reasons:?}"
        );
        assert!(reasons[1].starts_with("not a JSON object"), "{reasons:?}");
        assert_eq!(
            reasons[2],
            "cannot set /a/b: the value at /a is a number, not an object"
        );
        for (config, want) in [
            (vec![], "nothing to do"),
            (
                vec![("keep", "a")],
                "config `keep`: `a` is not a JSON pointer",
            ),
            (vec![("rename", r#"{ "/a" = 1 }"#)], "must map to a pointer"),
            (vec![("set", "[1]")], "expected a table"),
            (vec![("set", r#"{ "/a" = nan }"#)], "is not a JSON number"),
            (vec![("kep", "/a")], "unknown config `kep`"),
        ] {
            let err = Fields::configure(&Config::from_pairs(config.iter().copied()))
                .err()
                .unwrap();
            assert!(err.contains(want), "{err}");
        }
    }

    /// The fast path equals the record model's on every one-byte change of
    /// two records, for configs of every kind of edit.
    #[test]
    fn flat_path_equals_the_record_model() {
        let bases = [
            r#"{"a":1,"b":"x","c":{"d":[1,2.50]},"e":null,"f":"\u00e9"}"#,
            r#"{"carrier":"UA","flight":1545,"dest":"IAH","dep_delay":-2,"tailnum":"N1"}"#,
        ];
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for base in bases {
            let base = base.as_bytes();
            inputs.push(base.to_vec());
            for at in 0..base.len() {
                for b in [b'"', b'\\', b'{', b'}', b',', b':', b' ', b'a', b'b', 0xff] {
                    let mut changed = base.to_vec();
                    changed[at] = b;
                    inputs.push(changed);
                }
            }
        }
        inputs.push(br#"{"a":1,"b":2,"a":3}"#.to_vec());
        let configs: [&[(&str, &str)]; 5] = [
            &[("keep", r#"["/b", "/a", "/zz", "/a", "/carrier"]"#)],
            &[("drop", r#"["/a", "/c", "/tailnum"]"#)],
            &[(
                "rename",
                r#"{ "/a" = "/b", "/b" = "/c", "/e" = "/e", "/flight" = "/n" }"#,
            )],
            &[(
                "set",
                r#"{ "/a" = 7, "/new" = { x = "y" }, "/dest" = "LAX" }"#,
            )],
            &[
                ("keep", r#"["/a", "/b", "/c", "/dest", "/flight"]"#),
                ("drop", "/c"),
                ("rename", r#"{ "/b" = "/a", "/flight" = "/number" }"#),
                ("set", r#"{ "/v" = 1, "/number" = 0 }"#),
            ],
        ];
        let mut fast = 0;
        for config in configs {
            let p = Fields::configure(&Config::from_pairs(config.iter().copied())).unwrap();
            assert!(p.flat.is_some(), "{config:?}");
            for input in &inputs {
                let mut s = FlatScratch {
                    found: Vec::new(),
                    entries: Vec::new(),
                    slots: Vec::new(),
                };
                let mut buf = Vec::new();
                if !p.flat(input, &mut s, &mut buf) {
                    continue;
                }
                fast += 1;
                let mut scratch = Scratch::default();
                let doc = p.edit(input, &mut scratch).unwrap();
                let mut reference = Vec::new();
                doc.write(&mut reference);
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    String::from_utf8_lossy(&reference),
                    "{config:?} on {}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        assert!(fast > 200, "{fast}");
        // A nested pointer: no fast path.
        let nested = Fields::configure(&Config::from_pairs([("drop", "/c/d")])).unwrap();
        assert!(nested.flat.is_none());
    }

    /// Every flight, projected to `flights_delay`'s seven fields: equal to
    /// the same projection made with serde_json's `Value` (numbers in the
    /// flights are integers, which `Value` writes as they are read).
    #[test]
    fn keep_on_every_flight_equals_serde_json() {
        use std::io::BufRead;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/data/flights-2013.ndjson.gz"
        );
        let lines: Vec<String> = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            std::fs::File::open(path).unwrap(),
        ))
        .lines()
        .map(Result::unwrap)
        .collect();
        assert_eq!(lines.len(), 336_776);
        const KEEP: [&str; 7] = [
            "carrier",
            "flight",
            "origin",
            "dest",
            "dep_delay",
            "arr_delay",
            "event_time",
        ];
        let keep = format!("[{}]", KEEP.map(|k| format!("\"/{k}\"")).join(", "));
        let mut p = Fields::configure(&Config::from_pairs([("keep", keep.as_str())])).unwrap();
        let mut checked = 0;
        for chunk in lines.chunks(4096) {
            let mut batch = Batch::new();
            for line in chunk {
                batch.push(None, line.as_bytes(), 0);
            }
            let mut out = Output::new();
            p.process(&batch, &mut out).unwrap();
            assert!(out.rejected.is_empty());
            for (line, event) in chunk.iter().zip(out.events.iter()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let mut want = serde_json::Map::new();
                for k in KEEP {
                    want.insert(k.to_string(), v[k].clone());
                }
                assert_eq!(
                    event.value(),
                    serde_json::to_vec(&want).unwrap().as_slice(),
                    "{line}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 336_776);
    }
}
