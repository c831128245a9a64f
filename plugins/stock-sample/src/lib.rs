//! The `sample` stock plugin: keeps about 1 record in `n`, decided by a hash
//! of the record's key, so that one key is always kept or always dropped
//! (every record of a kept user, say), on every partition, instance and
//! restart. Reference: `docs/plugins/stock/sample.md`.
//!
//! Config:
//! - `n` (required, at least 1): keep about 1 in `n`;
//! - `by`: a JSON pointer to the field that is the key (a string's
//!   contents, another value's JSON text, `null` when absent); default: the
//!   event's key (no key: the empty key);
//! - `salt`: a string mixed into the hash, to pick another subset.
//!
//! A record is kept when [`hash`]`(salt, key) % n == 0`. With `by`, a record
//! that is not a JSON object is rejected with the reason.

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};
use stock_common::doc::{Doc, Scratch};
use stock_common::pointer::Pointer;
use stock_common::settings;

/// The configured sampling.
pub struct Sample {
    n: u64,
    by: Option<Pointer>,
    salt: Vec<u8>,
}

impl Processor for Sample {
    fn configure(config: &Config) -> Result<Self, String> {
        settings::only(config, &["n", "by", "salt"])?;
        let n = config
            .parse::<u64>("n")?
            .ok_or("config `n` is required: keep 1 record in n")?;
        if n == 0 {
            return Err("config `n`: must be at least 1".into());
        }
        let by = config
            .get("by")
            .map(|p| Pointer::parse(p).map_err(|e| format!("config `by`: {e}")))
            .transpose()?;
        let salt = config.get("salt").unwrap_or("").as_bytes().to_vec();
        Ok(Sample { n, by, salt })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut scratch = Scratch::default();
        let mut text = Vec::new();
        for event in batch {
            match self.decide(&event, &mut scratch, &mut text) {
                Ok(true) => out.forward(&event),
                Ok(false) => {}
                Err(reason) => out.reject(&event, reason),
            }
        }
        Ok(())
    }
}

impl Sample {
    /// Whether `event` is kept.
    fn decide<'a>(
        &self,
        event: &sluice_plugin_sdk::Event<'a>,
        scratch: &mut Scratch<'a>,
        text: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let Some(by) = &self.by else {
            return Ok(self.keeps(event.key().unwrap_or_default()));
        };
        // The fast path: one top-level field, read by the scanner; a string
        // with an escape, another pointer or an unsettled record go the
        // long way.
        if let Some(top) = by.top_level() {
            match event.fields(&[top]) {
                Some([None]) => return Ok(self.keeps(b"null")),
                Some([Some(field)]) => {
                    if let Some(s) = field.as_str() {
                        return Ok(self.keeps(s.as_bytes()));
                    }
                    if field.kind() != sluice_plugin_sdk::scan::Kind::String {
                        return Ok(self.keeps(field.raw()));
                    }
                }
                None => {}
            }
        }
        self.nested(event.value(), by, scratch, text)
    }

    /// Whether the record of key `key` is kept.
    fn keeps(&self, key: &[u8]) -> bool {
        hash(&self.salt, key).is_multiple_of(self.n)
    }

    /// The decision read from the record itself (any pointer).
    fn nested<'a>(
        &self,
        json: &'a [u8],
        by: &Pointer,
        scratch: &mut Scratch<'a>,
        text: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let mut doc = Doc::parse(json, scratch)?;
        text.clear();
        match doc.get(by.tokens())? {
            None => text.extend_from_slice(b"null"),
            Some(node) => match node.as_str() {
                Some(s) => text.extend_from_slice(s.as_bytes()),
                None => node.write(text),
            },
        }
        scratch.recycle(doc);
        Ok(self.keeps(text))
    }
}

/// The sampling hash: FNV-1a (64-bit) over the salt, the byte 0xFF (which
/// UTF-8 never contains, so salt and key cannot run into each other) and the
/// key, finished with SplitMix64's mixer so that `% n` takes well-spread bits.
pub fn hash(salt: &[u8], key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.iter().chain([0xFF].iter()).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

export_processor!(Sample);

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(config: &[(&str, &str)], batch: &Batch) -> Vec<usize> {
        let mut p = Sample::configure(&Config::from_pairs(config.iter().copied())).unwrap();
        let mut out = Output::new();
        p.process(batch, &mut out).unwrap();
        assert!(out.rejected.is_empty());
        // Values are distinct: find each output's input.
        out.events
            .iter()
            .map(|e| batch.iter().position(|i| i.value() == e.value()).unwrap())
            .collect()
    }

    #[test]
    fn one_key_always_kept_or_dropped_about_one_in_n() {
        let mut batch = Batch::new();
        for i in 0..20_000 {
            let user = format!("user{}", i % 2_000);
            let value = format!(r#"{{"i":{i},"user":"{user}","o":{{"u":"{user}"}}}}"#);
            batch.push(Some(user.as_bytes()), value.as_bytes(), 0);
        }
        let user = |i: usize| i % 2_000;
        for config in [
            vec![("n", "10")],
            vec![("n", "10"), ("by", "/user")],
            vec![("n", "10"), ("by", "/o/u")],
        ] {
            let kept = kept(&config, &batch);
            let users: std::collections::BTreeSet<usize> = kept.iter().map(|&i| user(i)).collect();
            // Every record of a kept user, none of the others.
            assert_eq!(kept.len(), users.len() * 10, "{config:?}");
            assert!(
                (150..250).contains(&users.len()),
                "{config:?}: {}",
                users.len()
            );
            // The documented function decides.
            for u in 0..2_000 {
                let want = hash(b"", format!("user{u}").as_bytes()).is_multiple_of(10);
                assert_eq!(users.contains(&u), want, "{config:?}: user{u}");
            }
        }
        // Another salt, another subset; n = 1 keeps all.
        let a = kept(&[("n", "10")], &batch);
        let b = kept(&[("n", "10"), ("salt", "x")], &batch);
        assert_ne!(a, b);
        assert_eq!(kept(&[("n", "1")], &batch).len(), 20_000);
    }

    #[test]
    fn absent_escaped_and_bad_records() {
        let mut p = Sample::configure(&Config::from_pairs([("n", "1"), ("by", "/u")])).unwrap();
        let mut out = Output::new();
        p.process(
            &Batch::from_lines("{\"u\":\"a\\u0062\"}\n{}\nnope\n{\"u\":[1]}"),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.events.len(), 3);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].index, 2);
        // An escaped string is read by its contents.
        let escaped = Sample::configure(&Config::from_pairs([("n", "7"), ("by", "/u")])).unwrap();
        let mut a = Output::new();
        let mut escaped = escaped;
        escaped
            .process(
                &Batch::from_lines("{\"u\":\"a\\u0062\"}\n{\"u\":\"ab\"}"),
                &mut a,
            )
            .unwrap();
        // Both records have the key `ab`: both kept or both dropped, as the
        // rule says.
        let want = if hash(b"", b"ab").is_multiple_of(7) {
            2
        } else {
            0
        };
        assert_eq!(a.events.len(), want);
        for (config, want) in [
            (vec![], "`n` is required"),
            (vec![("n", "0")], "at least 1"),
            (vec![("n", "x")], "cannot parse"),
            (vec![("n", "2"), ("by", "u")], "not a JSON pointer"),
        ] {
            let err = Sample::configure(&Config::from_pairs(config.iter().copied()))
                .err()
                .unwrap();
            assert!(err.contains(want), "{err}");
        }
    }
}
