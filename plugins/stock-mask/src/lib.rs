//! The `mask` stock plugin: chosen fields of JSON records replaced by a
//! constant, or by their HMAC-SHA-256 under a key from the config (the same
//! value always gives the same hash, so masked values still join and count).
//! Reference: `docs/plugins/stock/mask.md`.
//!
//! Config:
//! - `fields` (required): JSON pointers, `["/email", "/client/ip"]`;
//! - `mode`: `replace` (default) or `hash`;
//! - `with` (`replace`): the value put in their place, any TOML value;
//!   default `"***"`;
//! - `key` (`hash`, required there): the HMAC key, at least 16 bytes.
//!
//! `hash` replaces a value by the lowercase hex HMAC-SHA-256 of its text: a
//! string's contents (unescaped), another value's JSON text. A field that is
//! absent or `null` is left as it is. A record that is not a JSON object is
//! rejected with the reason.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};
use stock_common::doc::{Doc, Node, Scratch};
use stock_common::pointer::Pointer;
use stock_common::settings;

/// How a field is masked.
enum Mode {
    /// By this JSON text.
    Replace(Vec<u8>),
    /// By its HMAC-SHA-256, keyed.
    Hash(Hmac<Sha256>),
}

/// The configured masking.
pub struct Mask {
    fields: Vec<Pointer>,
    mode: Mode,
}

/// Shortest `key` accepted for `mode = "hash"`.
pub const MIN_KEY_BYTES: usize = 16;

impl Processor for Mask {
    fn configure(config: &Config) -> Result<Self, String> {
        settings::only(config, &["fields", "mode", "with", "key"])?;
        let fields = settings::string_list(config, "fields")?
            .iter()
            .map(|p| Pointer::parse(p).map_err(|e| format!("config `fields`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if fields.is_empty() {
            return Err(
                "config `fields` is required: the JSON pointers to mask, e.g. [\"/email\"]".into(),
            );
        }
        let mode = match config.get("mode").unwrap_or("replace") {
            "replace" => {
                if config.get("key").is_some() {
                    return Err("config `key` is for mode = \"hash\"".into());
                }
                let with = match config.get("with") {
                    None => b"\"***\"".to_vec(),
                    Some(raw) => {
                        let value = settings::toml_value("with", raw).or_else(|_| {
                            Ok::<_, String>(stock_common::toml::Value::String(raw.to_string()))
                        })?;
                        serde_json::to_vec(
                            &settings::toml_to_json(&value)
                                .map_err(|e| format!("config `with`: {e}"))?,
                        )
                        .map_err(|e| e.to_string())?
                    }
                };
                Mode::Replace(with)
            }
            "hash" => {
                if config.get("with").is_some() {
                    return Err("config `with` is for mode = \"replace\"".into());
                }
                let key = config
                    .get("key")
                    .ok_or("config `key` is required with mode = \"hash\": the HMAC key")?;
                if key.len() < MIN_KEY_BYTES {
                    return Err(format!(
                        "config `key`: {} bytes is too short, give at least {MIN_KEY_BYTES}",
                        key.len()
                    ));
                }
                Mode::Hash(
                    Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?,
                )
            }
            other => {
                return Err(format!(
                    "config `mode`: `{other}` is not a mode: use \"replace\" or \"hash\""
                ));
            }
        };
        Ok(Mask { fields, mode })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut scratch = Scratch::default();
        let mut buf = Vec::with_capacity(256);
        for event in batch {
            match self.mask(event.value(), &mut scratch) {
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

impl Mask {
    fn mask<'a>(&'a self, json: &'a [u8], scratch: &mut Scratch<'a>) -> Result<Doc<'a>, String> {
        let mut doc = Doc::parse(json, scratch)?;
        for p in &self.fields {
            let Some(node) = doc.get(p.tokens())? else {
                continue;
            };
            if node.is_null() {
                continue;
            }
            *node = match &self.mode {
                Mode::Replace(with) => Node::Raw(Cow::Borrowed(with)),
                Mode::Hash(mac) => {
                    let mut text = Vec::new();
                    let bytes: &[u8] = match node.as_str() {
                        Some(s) => {
                            text.extend_from_slice(s.as_bytes());
                            &text
                        }
                        None => {
                            node.write(&mut text);
                            &text
                        }
                    };
                    Node::string(&hmac_hex(mac, bytes))
                }
            };
        }
        Ok(doc)
    }
}

/// The lowercase hex HMAC of `bytes`.
fn hmac_hex(mac: &Hmac<Sha256>, bytes: &[u8]) -> String {
    let mut mac = mac.clone();
    mac.update(bytes);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    hex
}

export_processor!(Mask);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &[(&str, &str)], lines: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut p = Mask::configure(&Config::from_pairs(config.iter().copied())).unwrap();
        let mut out = Output::new();
        p.process(&Batch::from_lines(&lines.join("\n")), &mut out)
            .unwrap();
        (
            out.events
                .iter()
                .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
                .collect(),
            out.rejected.into_iter().map(|r| r.reason).collect(),
        )
    }

    #[test]
    fn replace_by_default_and_with_a_value() {
        let line = r#"{"email":"a@b.c","user":{"ip":"1.2.3.4","n":1},"x":null}"#;
        assert_eq!(
            run(
                &[("fields", r#"["/email", "/user/ip", "/x", "/absent"]"#)],
                &[line]
            )
            .0,
            [r#"{"email":"***","user":{"ip":"***","n":1},"x":null}"#]
        );
        assert_eq!(
            run(&[("fields", "/user"), ("with", "{ gone = true }")], &[line]).0,
            [r#"{"email":"a@b.c","user":{"gone":true},"x":null}"#]
        );
        assert_eq!(
            run(&[("fields", "/email"), ("with", "REDACTED")], &[line, "[]"]),
            (
                vec![r#"{"email":"REDACTED","user":{"ip":"1.2.3.4","n":1},"x":null}"#.to_string()],
                vec!["not a JSON object: invalid type: sequence, expected a JSON object at line 1 column 2".to_string()]
            )
        );
    }

    /// RFC 4231 test case 2 ("Jefe", "what do ya want for nothing?") needs a
    /// 4-byte key, under the minimum: checked on the function itself.
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        assert_eq!(
            hmac_hex(&mac, b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hash_is_keyed_deterministic_and_reads_string_contents() {
        let key = "0123456789abcdef-key";
        let config = [
            ("fields", r#"["/email", "/n"]"#),
            ("mode", "hash"),
            ("key", key),
        ];
        let (out, _) = run(
            &config,
            &[
                r#"{"email":"a@b.c","n":42}"#,
                r#"{"email":"a\u0040b.c","n":42}"#,
            ],
        );
        let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        let want = format!(
            r#"{{"email":"{}","n":"{}"}}"#,
            hmac_hex(&mac, b"a@b.c"),
            hmac_hex(&mac, b"42")
        );
        assert_eq!(out, [want.clone(), want]);
        let (other_key, _) = run(
            &[config[0], config[1], ("key", "another key of 16+ bytes")],
            &[r#"{"email":"a@b.c","n":42}"#],
        );
        assert_ne!(other_key[0], out[0]);
    }

    #[test]
    fn config_errors() {
        for (config, want) in [
            (vec![], "`fields` is required"),
            (
                vec![("fields", "/a"), ("mode", "hash")],
                "`key` is required",
            ),
            (
                vec![("fields", "/a"), ("mode", "hash"), ("key", "short")],
                "too short",
            ),
            (vec![("fields", "/a"), ("mode", "blur")], "not a mode"),
            (
                vec![("fields", "/a"), ("key", "0123456789abcdefgh")],
                "for mode = \"hash\"",
            ),
            (vec![("fields", "a")], "not a JSON pointer"),
        ] {
            let err = Mask::configure(&Config::from_pairs(config.iter().copied()))
                .err()
                .unwrap();
            assert!(err.contains(want), "{err}");
        }
    }
}
