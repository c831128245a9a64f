//! A validating JSON scanner that finds the values at a few JSON pointers
//! without building anything: the fast path of [`super::extract_into`] and
//! [`super::Decoder::decode`].
//!
//! It checks the grammar of RFC 8259 (§2–§7: values, objects, arrays,
//! numbers, strings and their escapes, whitespace) over the whole line and
//! records the byte range of the value each pointer (RFC 6901) names. It
//! answers only when it is sure the line is JSON: anything it leaves to
//! serde_json — an escaped member name on a pointer's way, a `\u` escape of a
//! surrogate, nesting deeper than [`MAX_DEPTH`], a number with an exponent
//! (it may be out of f64's range, which serde_json refuses) — or any error makes it
//! answer "unsure" (`false`), and the caller decodes the line with serde_json,
//! whose verdict (and error message) counts. So a line this scanner accepts
//! is one serde_json accepts, with the same values found (a property test
//! and the `decode` fuzz target compare the two).
//!
//! The input is UTF-8 already (checked by the caller), so the scanner works
//! on bytes: inside a string every byte from 0x20 up is allowed (RFC 8259 §7),
//! outside strings only ASCII forms a token.

use std::ops::Range;

/// Longest number the scanner accepts itself: far below the 309 digits
/// where an integer leaves f64's range.
pub const MAX_NUMBER_LEN: usize = 200;

/// Deepest nesting the scanner follows (serde_json stops at 128); deeper lines
/// go to serde_json.
pub const MAX_DEPTH: usize = 64;

/// Scans `text` as one JSON value with optional whitespace around it and
/// stores in `found[i]` the byte range of the value `paths[i]` (a pointer's
/// unescaped reference tokens) names, `None` where nothing is there. When a
/// member name occurs twice in an object, a pointer's value is the last one
/// found, as in [`super::extract_into`]'s serde_json walk.
///
/// Returns `false` when the text is not JSON or holds something the scanner
/// leaves to serde_json (see the module docs); `found` is then meaningless.
pub fn scan(text: &[u8], paths: &[&[String]], found: &mut [Option<Range<usize>>]) -> bool {
    scan_indexed(text, paths, found, None)
}

/// [`scan`], also appending to `members` (when given) four offsets per
/// top-level member of the text — its name's start and end (inside the
/// quotes) and its value's start and end, in bytes from the text's start —
/// when the text is one JSON object shorter than 64 KiB, every path is one
/// token, and no member name has an escape. Otherwise, and when it returns
/// `false`, `members` is left as it was. These are what package 0.3.0 hands a
/// guest (`wit/0.3.0/plugin.wit`, `members`), trusted as a validated record's.
pub fn scan_indexed(
    text: &[u8],
    paths: &[&[String]],
    found: &mut [Option<Range<usize>>],
    members: Option<&mut Vec<u16>>,
) -> bool {
    debug_assert!(paths.len() <= 32 && found.len() == paths.len());
    for f in found.iter_mut() {
        *f = None;
    }
    let mut s = Scanner {
        b: text,
        i: 0,
        paths,
        found,
        members: members.filter(|_| text.len() < 1 << 16),
        members_from: 0,
    };
    if let Some(m) = s.members.as_deref() {
        s.members_from = m.len();
    }
    s.ws();
    let all = if paths.len() == 32 {
        u32::MAX
    } else {
        (1u32 << paths.len()) - 1
    };
    let flat = paths.iter().all(|p| p.len() == 1);
    let scanned = if flat && s.peek() == Some(b'{') {
        s.top_object(all)
    } else {
        s.value(all, 0)
    };
    s.ws();
    if scanned.is_none() || s.i != text.len() {
        s.drop_members();
        return false;
    }
    true
}

struct Scanner<'a, 'p> {
    b: &'a [u8],
    i: usize,
    paths: &'a [&'p [String]],
    found: &'a mut [Option<Range<usize>>],
    /// Where the members go ([`scan_indexed`]); `None` once the text cannot
    /// have them.
    members: Option<&'a mut Vec<u16>>,
    /// `members`' length before the scan.
    members_from: usize,
}

impl Scanner<'_, '_> {
    /// No members for this text: those appended so far are taken back.
    fn drop_members(&mut self) {
        if let Some(m) = self.members.take() {
            m.truncate(self.members_from);
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c > b' ' {
                break;
            }
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// One value. `active`: the paths that matched every token up to here
    /// (`depth` tokens); those with exactly `depth` tokens end at this value.
    fn value(&mut self, active: u32, depth: usize) -> Option<()> {
        let ends = select(active, |i| self.paths[i].len() == depth);
        let deeper = active & !ends;
        let start = self.i;
        match self.peek()? {
            b'{' => self.object(deeper, depth)?,
            b'[' => self.array(deeper, depth)?,
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        for i in bits(ends) {
            self.found[i] = Some(start..self.i);
        }
        Some(())
    }

    /// Steps into an object or array (at its opening byte) `depth` deep;
    /// true when it closes at once (`{}`, `[]`).
    fn open(&mut self, depth: usize, close: u8) -> Option<bool> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        let empty = self.peek()? == close;
        if empty {
            self.i += 1;
        }
        Some(empty)
    }

    /// After a member or element: true at the closing byte, false after a
    /// comma (another must follow).
    fn closes(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == close {
            return Some(true);
        }
        if c != b',' {
            return None;
        }
        self.ws();
        Some(false)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` (RFC 8259 §6).
    /// serde_json also refuses a number beyond f64's range (`1e400`), even in
    /// a member it skips: numbers with an exponent, or of more than
    /// [`MAX_NUMBER_LEN`] characters, are left to it.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || self.i - start > MAX_NUMBER_LEN {
            return None;
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// A string starting at its quote; returns whether it holds an escape.
    /// Control characters must be escaped (RFC 8259 §7); a `\u` escape of a
    /// surrogate is left to serde_json.
    fn string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            // The common case: a run of plain bytes.
            self.i += plain_run(&self.b[self.i..]);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            let mut code = 0u32;
                            for &h in hex {
                                code = code * 16 + (h as char).to_digit(16)?;
                            }
                            if (0xD800..=0xDFFF).contains(&code) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // an unescaped control character
            }
        }
    }

    fn object(&mut self, deeper: u32, depth: usize) -> Option<()> {
        if self.open(depth, b'}')? {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let name_start = self.i + 1;
            let escaped = self.string()?;
            let name = &self.b[name_start..self.i - 1];
            if deeper != 0 && escaped {
                return None; // matching an escaped name: serde_json's job
            }
            let next = select(deeper, |i| self.paths[i][depth].as_bytes() == name);
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            self.value(next, depth + 1)?;
            if self.closes(b'}')? {
                return Some(());
            }
        }
    }

    /// [`Scanner::object`] at the top, for paths of one token each (the
    /// common case: a key and an event time at the top of the record): one
    /// loop over the members, strings and numbers skipped in it, only
    /// nested values through [`Scanner::value`]. Its member-name lines
    /// repeat `object`'s on purpose: a shared helper, even inlined, made
    /// the scan 7% slower (codegen of the recursive `object`).
    fn top_object(&mut self, active: u32) -> Option<()> {
        if self.open(0, b'}')? {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let name_start = self.i + 1;
            let escaped = self.string()?;
            let name_end = self.i - 1;
            let name = &self.b[name_start..name_end];
            if escaped {
                if active != 0 {
                    return None; // matching an escaped name: serde_json's job
                }
                // A guest compares names as written: this one would not match.
                self.drop_members();
            }
            let next = select(active, |i| self.paths[i][0].as_bytes() == name);
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            let start = self.i;
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                _ => self.value(0, 1)?,
            }
            if let Some(m) = self.members.as_deref_mut() {
                // All below 64 KiB: the text is (checked at the start).
                m.extend_from_slice(&[
                    name_start as u16,
                    name_end as u16,
                    start as u16,
                    self.i as u16,
                ]);
            }
            for i in bits(next) {
                self.found[i] = Some(start..self.i);
            }
            if self.closes(b'}')? {
                return Some(());
            }
        }
    }

    fn array(&mut self, deeper: u32, depth: usize) -> Option<()> {
        if self.open(depth, b']')? {
            return Some(());
        }
        for index in 0usize.. {
            let next = select(deeper, |i| {
                index_token(&self.paths[i][depth]) == Some(index)
            });
            self.value(next, depth + 1)?;
            if self.closes(b']')? {
                return Some(());
            }
        }
        unreachable!("an array ends or fails before usize::MAX elements")
    }
}

/// Bytes of `b` before its first `"`, `\\` or control character (< 0x20),
/// or its length: eight bytes at a time (SWAR). For each kind, `(x - 0x01…)
/// & !x & 0x80…` flags the bytes of `x` that are zero (after the XOR with
/// the byte looked for) or, with `0x20…`, below 0x20; a borrow can only flag
/// bytes above a flagged one, so the lowest flag is exact.
#[inline]
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// The indexes of the bits set in `mask`, lowest first.
fn bits(mask: u32) -> impl Iterator<Item = usize> {
    let mut rest = mask;
    std::iter::from_fn(move || {
        (rest != 0).then(|| {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            i
        })
    })
}

/// The bits of `mask` whose index passes `keep`.
fn select(mask: u32, keep: impl Fn(usize) -> bool) -> u32 {
    bits(mask).filter(|&i| keep(i)).fold(0, |m, i| m | 1 << i)
}

/// The array index a reference token names: decimal digits without a leading
/// zero (RFC 6901 §4), else none.
fn index_token(token: &str) -> Option<usize> {
    let b = token.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<Vec<String>> {
        ps.iter()
            .map(|p| crate::decode::Pointer::parse(p).unwrap().tokens().to_vec())
            .collect()
    }

    fn found(text: &str, ps: &[&str]) -> Option<Vec<Option<String>>> {
        let owned = paths(ps);
        let refs: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = vec![None; ps.len()];
        scan(text.as_bytes(), &refs, &mut out).then(|| {
            out.into_iter()
                .map(|r| r.map(|r| text[r].to_string()))
                .collect()
        })
    }

    #[test]
    fn plain_run_stops_at_the_first_special_byte() {
        let slow = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        // Every special byte at every place of runs up to 20 bytes long, after
        // plain ASCII, UTF-8 and bytes just above the specials.
        for fill in [b'a', 0xC3, 0x21, 0x5D, 0x7F, 0xFF] {
            for len in 0..20 {
                for special in [b'"', b'\\', 0x00, 0x1F, 0x0A] {
                    for at in 0..=len {
                        let mut b = vec![fill; len];
                        if at < len {
                            b[at] = special;
                        }
                        assert_eq!(plain_run(&b), slow(&b), "{b:?}");
                        // A second special after the first changes nothing.
                        b.push(special);
                        assert_eq!(plain_run(&b), slow(&b), "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn finds_values_at_pointers() {
        let line = r#" {"x":[1,{"y":2}],"a":{"z":null,"b":"UA"},"t":["no", 12.5 ]} "#;
        assert_eq!(
            found(line, &["/a/b", "/t/1", "/x/1", "/none", "/a/b/c", ""]).unwrap(),
            vec![
                Some(r#""UA""#.into()),
                Some("12.5".into()),
                Some(r#"{"y":2}"#.into()),
                None,
                None,
                Some(line.trim().into()),
            ]
        );
        // The last of a repeated name counts; "01" is no index.
        assert_eq!(
            found(r#"{"k":1,"k":[true,false]}"#, &["/k", "/k/1", "/k/01"]).unwrap(),
            vec![Some("[true,false]".into()), Some("false".into()), None]
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            "",
            "  ",
            "{",
            r#"{"a":1,}"#,
            "[1,]",
            "[01]",
            "-",
            "1.",
            "1e",
            ".5",
            "+1",
            "tru",
            "nul",
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            "\"a\tb\"",
            r#""\x""#,
            r#""\u12G4""#,
            "{} {}",
            "[1] x",
            "'a'",
            "NaN",
        ] {
            assert_eq!(found(bad, &["/a"]), None, "{bad:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn leaves_surrogates_escaped_names_and_deep_nesting_to_serde() {
        assert_eq!(found(r#"{"a":"\ud83d\ude00"}"#, &["/a"]), None);
        assert_eq!(found(r#"{"b":1e5,"a":1}"#, &["/a"]), None);
        assert_eq!(found(r#"{"\u0061":1}"#, &["/a"]), None);
        // An escaped name off every pointer's way is fine.
        assert_eq!(
            found(r#"{"x":{"\u0062\n":1},"a":2}"#, &["/a"]),
            Some(vec![Some("2".into())])
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(found(&deep, &["/a"]), None);
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_ok());
    }

    /// `(text, members)`: an object written from `pairs` with `ws` around
    /// every token, and its members' offsets known by construction.
    fn object_with_members(pairs: &[(&str, &str)], ws: &str) -> (String, Vec<u16>) {
        let mut text = format!("{ws}{{{ws}");
        let mut members = Vec::new();
        for (i, (key, value)) in pairs.iter().enumerate() {
            if i > 0 {
                text.push_str(&format!(",{ws}"));
            }
            text.push('"');
            let name = text.len();
            text.push_str(key);
            let name_end = text.len();
            text.push_str(&format!("\"{ws}:{ws}"));
            let at = text.len();
            text.push_str(value);
            members.extend([name, name_end, at, text.len()].map(|o| o as u16));
            text.push_str(ws);
        }
        text.push_str(&format!("}}{ws}"));
        (text, members)
    }

    fn members_of(text: &str, ps: &[&str]) -> (bool, Vec<u16>) {
        let owned = paths(ps);
        let refs: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = vec![None; ps.len()];
        // Appended after what is there: a caller's earlier entries stay.
        let mut members = vec![7u16];
        let ok = scan_indexed(text.as_bytes(), &refs, &mut out, Some(&mut members));
        assert_eq!(members.first(), Some(&7), "{text}");
        (ok, members[1..].to_vec())
    }

    proptest::proptest! {
        /// The members listed are where the object was written to have them,
        /// whatever the whitespace, duplicates or nesting.
        #[test]
        fn members_are_where_they_were_written(
            picks in proptest::collection::vec((0usize..5, 0usize..9), 0..8),
            ws in proptest::sample::select(vec!["", " ", "\n\t\r "]),
            pointers in proptest::sample::select(vec![vec![], vec!["/carrier"], vec!["/carrier", "/t"], vec!["/t", "/x y"]]),
        ) {
            const KEYS: [&str; 5] = ["carrier", "t", "x y", "", "é"];
            const VALUES: [&str; 9] = [
                "1", "-2.5", r#""s""#, r#""e\"x""#, "null", "false", r#"[1,{"a":[]}]"#,
                r#"{"k":"v","t":2}"#, r#""é""#,
            ];
            let pairs: Vec<(&str, &str)> = picks.iter().map(|&(k, v)| (KEYS[k], VALUES[v])).collect();
            let (text, want) = object_with_members(&pairs, ws);
            let (ok, got) = members_of(&text, &pointers);
            proptest::prop_assert!(ok, "{}", text);
            proptest::prop_assert_eq!(got, want, "{}", text);
        }
    }

    #[test]
    fn no_members_where_a_guest_could_not_use_them() {
        let (text, want) = object_with_members(&[("a", "1"), ("b", r#"{"c":2}"#)], " ");
        assert_eq!(members_of(&text, &["/a"]), (true, want));
        for (text, pointers, ok) in [
            // Not an object, not JSON, an escaped name, a nested pointer.
            ("[1,2]", vec!["/a"], true),
            (r#"{"a":1,}"#, vec!["/a"], false),
            (r#"{"a":1} x"#, vec!["/a"], false),
            (r#"{"\u0062":1,"a":2}"#, vec![], true),
            (r#"{"b":{"c":1},"a":2}"#, vec!["/b/c"], true),
        ] {
            assert_eq!(members_of(text, &pointers), (ok, vec![]), "{text}");
        }
        // 64 KiB or more: offsets would not fit in a u16.
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(1 << 16));
        assert_eq!(members_of(&long, &["/a"]), (true, vec![]));
    }
}
