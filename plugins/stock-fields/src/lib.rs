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
        Ok(Fields {
            keep,
            drop,
            rename,
            set,
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut scratch = Scratch::default();
        let mut buf = Vec::with_capacity(256);
        for event in batch {
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
