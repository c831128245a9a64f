//! Reading a few top-level fields of a JSON object without deserialising it.
//!
//! [`fields`] makes one pass over a record, checks that the whole of it is JSON
//! as serde_json reads it, and hands back the raw text of the named top-level
//! fields, borrowed from the record: nothing is allocated, numbers are not
//! converted, strings are not unescaped, and the other fields are skipped. The
//! `flights_delay` example plugin, which reads seven fields of each flight this
//! way, is 1.4–1.6× faster per record as a component than with
//! `serde_json::from_slice` into a borrowing struct (BENCHMARKS.md, "A field
//! scanner in the guest").
//!
//! It is a fast path, not a parser: for what it does not handle simply — a
//! string with an escape where you need its text, a float, a field missing —
//! it answers `None` and you ask serde_json ([`Event::json`]), which gives the
//! same answer slower, or the exact error message to reject the event with.
//! Whenever [`fields`] returns `Some`, serde_json accepts the record too.
//!
//! ```
//! use sluice_plugin_sdk::scan::fields;
//!
//! let record = br#"{"id":7,"name":"ada","tags":["x"],"note":"a\nb"}"#;
//! let [id, name, note] = fields(record, &["id", "name", "note"]).unwrap();
//! assert_eq!(id.and_then(|f| f.as_i64()), Some(7));
//! assert_eq!(name.and_then(|f| f.as_str()), Some("ada"));
//! // An escaped string: the raw text is there, its contents are serde_json's job.
//! assert_eq!(note.unwrap().raw(), br#""a\nb""#);
//! assert_eq!(note.unwrap().as_str(), None);
//! // Not a JSON object (or not JSON at all): ask serde_json why.
//! assert!(fields(br#"{"id":7,}"#, &["id"]).is_none());
//! ```
//!
//! [`Event::json`]: crate::Event::json

/// The kind of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// One field's value as [`fields`] found it: its JSON text, borrowed from the
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    raw: &'a [u8],
    kind: Kind,
    escaped: bool,
}

impl<'a> Field<'a> {
    pub(crate) fn new(raw: &'a [u8], kind: Kind, escaped: bool) -> Self {
        Field { raw, kind, escaped }
    }

    /// The field of a value's text that a validating scan already accepted
    /// (a member the host found): its kind from its first byte; `None` for
    /// empty text.
    #[inline]
    pub(crate) fn of_valid(raw: &'a [u8]) -> Option<Self> {
        let (kind, escaped) = match raw.first()? {
            b'"' => (Kind::String, raw.contains(&b'\\')),
            b'n' => (Kind::Null, false),
            b't' | b'f' => (Kind::Bool, false),
            b'[' => (Kind::Array, false),
            b'{' => (Kind::Object, false),
            _ => (Kind::Number, false),
        };
        Some(Field { raw, kind, escaped })
    }

    /// The value's JSON text exactly as written in the record (a string with its
    /// quotes and escapes; no surrounding whitespace). Copying it into an output
    /// is what serde_json would write for a string without escapes
    /// ([`as_str`](Self::as_str) is `Some`) and for an integer
    /// ([`as_i64`](Self::as_i64) is `Some`).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The kind of the value.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }

    /// The contents of a string without escapes (valid UTF-8); `None` for
    /// other kinds and for a string with a backslash escape, whose text only a
    /// real parser gives (serde_json, through [`Event::json`](crate::Event::json)).
    pub fn as_str(&self) -> Option<&'a str> {
        if self.kind != Kind::String || self.escaped {
            return None;
        }
        std::str::from_utf8(&self.raw[1..self.raw.len() - 1]).ok()
    }

    /// `true` or `false`; `None` for other kinds.
    pub fn as_bool(&self) -> Option<bool> {
        (self.kind == Kind::Bool).then(|| self.raw == b"true")
    }

    /// The number when serde_json would read it as an integer that fits a
    /// `u64` (`0` to 18446744073709551615, no sign, fraction or exponent).
    pub fn as_u64(&self) -> Option<u64> {
        if self.kind != Kind::Number || self.raw.first() == Some(&b'-') {
            return None;
        }
        digits_value(self.raw)
    }

    /// Any number as an `f64`: an integer converted (as serde_json's
    /// `Value::as_f64` does), anything else parsed and correctly rounded
    /// (serde_json without its `float_roundtrip` feature may be one unit in
    /// the last place off). `None` for other kinds and for a number too large
    /// for an `f64` (serde_json refuses to read those as numbers).
    pub fn as_f64(&self) -> Option<f64> {
        if let Some(n) = self.as_i64() {
            return Some(n as f64);
        }
        if self.kind != Kind::Number {
            return None;
        }
        // The text is a JSON number, which Rust's float syntax includes.
        let text = std::str::from_utf8(self.raw).ok()?;
        text.parse::<f64>().ok().filter(|f| f.is_finite())
    }

    /// A string's contents, unescaped: borrowed from the record when the
    /// string has no escape, else unescaped by serde_json into a new
    /// `String`. `None` for other kinds, and for text serde_json refuses as a
    /// `String` (not UTF-8, a lone surrogate such as `"\ud800"`).
    pub fn str(&self) -> Option<std::borrow::Cow<'a, str>> {
        if self.kind != Kind::String {
            return None;
        }
        if !self.escaped {
            return std::str::from_utf8(&self.raw[1..self.raw.len() - 1])
                .ok()
                .map(std::borrow::Cow::Borrowed);
        }
        serde_json::from_slice::<String>(self.raw)
            .ok()
            .map(std::borrow::Cow::Owned)
    }

    /// Whether the value is a string with a backslash escape (its
    /// [`as_str`](Self::as_str) is `None`, its [`str`](Self::str) allocates).
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The member `name` of an object value (the last one when the key is
    /// given twice, as serde_json reads it); `None` when the value is not an
    /// object or has no such member. One pass over the object's text.
    pub fn get(&self, name: &str) -> Option<Field<'a>> {
        if self.kind != Kind::Object {
            return None;
        }
        let mut found = None;
        walk(self.raw, |m| {
            if key_is(m.key, m.key_escaped, name) {
                found = Some(m.value);
            }
            true
        })?;
        found
    }

    /// Element `index` of an array value; `None` when the value is not an
    /// array or is shorter.
    pub fn at(&self, index: usize) -> Option<Field<'a>> {
        if self.kind != Kind::Array {
            return None;
        }
        let mut s = Scanner::<false> {
            b: self.raw,
            i: 1,
            high: 0,
        };
        s.ws();
        if s.peek()? == b']' {
            return None;
        }
        let mut n = 0;
        loop {
            let value = s.value(RECORD_DEPTH)?;
            if n == index {
                return Some(value);
            }
            n += 1;
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                _ => return None,
            }
        }
    }

    /// The value at a JSON Pointer (RFC 6901) below this one: `""` is the
    /// value itself, `"/a/0/b"` member `a`, its element 0, that one's member
    /// `b` (`~1` stands for `/` and `~0` for `~` in a name). `None` when a step
    /// is missing or the pointer does not start with `/`.
    pub fn pointer(&self, pointer: &str) -> Option<Field<'a>> {
        if pointer.is_empty() {
            return Some(*self);
        }
        let mut here = *self;
        for step in pointer.strip_prefix('/')?.split('/') {
            let name: std::borrow::Cow<'_, str> = if step.contains('~') {
                step.replace("~1", "/").replace("~0", "~").into()
            } else {
                step.into()
            };
            here = match here.kind {
                Kind::Object => here.get(&name)?,
                Kind::Array => {
                    // RFC 6901: digits, no leading zero (but "0").
                    if name.is_empty()
                        || (name.len() > 1 && name.starts_with('0'))
                        || !name.bytes().all(|b| b.is_ascii_digit())
                    {
                        return None;
                    }
                    here.at(name.parse().ok()?)?
                }
                _ => return None,
            };
        }
        Some(here)
    }

    /// The number when serde_json would read it as an integer that fits an
    /// `i64`. `None` for other kinds, a fraction or an exponent (`15.0`, `1e3`),
    /// `-0` (a float to serde_json) and integers out of range.
    pub fn as_i64(&self) -> Option<i64> {
        if self.kind != Kind::Number {
            return None;
        }
        let (negative, digits) = match self.raw.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, self.raw),
        };
        let magnitude = digits_value(digits)?;
        if !negative {
            i64::try_from(magnitude).ok()
        } else if magnitude == 0 || magnitude > 1 << 63 {
            None
        } else {
            Some((magnitude as i64).wrapping_neg())
        }
    }
}

/// The value of a run of ASCII digits (`None` for another byte, or past
/// `u64::MAX`). The first 19 digits cannot overflow, so they take no checked
/// multiply: on wasm32 that is a call to a 128-bit multiply (`__multi3`).
#[inline]
fn digits_value(digits: &[u8]) -> Option<u64> {
    let (safe, rest) = digits.split_at(digits.len().min(19));
    let mut n: u64 = 0;
    for &d in safe {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// A member of an object as [`walk`] finds it: byte offsets into the scanned
/// text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    /// The key's opening quote.
    pub(crate) key_start: usize,
    /// Just after the key's closing quote.
    pub(crate) key_end: usize,
    /// The key's text between its quotes, escapes and all.
    pub(crate) key: &'a [u8],
    /// Whether the key has a backslash escape.
    pub(crate) key_escaped: bool,
    /// The value (its offsets are `value_start..value_end`).
    pub(crate) value: Field<'a>,
    pub(crate) value_start: usize,
    pub(crate) value_end: usize,
}

/// The outline of an object [`walk`] accepted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outline {
    /// The first member's key start and the last member's value end (both 0
    /// for an empty object).
    pub(crate) first: usize,
    pub(crate) last: usize,
    /// How many members (a key given twice counts twice).
    pub(crate) members: usize,
    /// A key has a backslash escape.
    pub(crate) escaped_keys: bool,
}

/// Nesting that [`walk`] allows below the object itself: serde_json refuses
/// its 128th level (`remaining_depth` starts at 128), so 127 levels in all.
pub(crate) const RECORD_DEPTH: u32 = 126;

/// One pass over `json`, a JSON object, calling `each` on every top-level
/// member in order; `each` returns `false` to stop early (then `walk` returns
/// `None` too). The record is checked as serde_json checks it when skipping
/// values (grammar, escapes, control characters, trailing bytes, nesting) and
/// as UTF-8. Keys with escapes are passed on as written.
#[inline]
pub(crate) fn walk<'a>(
    json: &'a [u8],
    mut each: impl FnMut(&Member<'a>) -> bool,
) -> Option<Outline> {
    let mut s = Scanner::<true> {
        b: json,
        i: 0,
        high: 0,
    };
    let mut outline = Outline::default();
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let key_start = s.i;
            s.expect(b'"')?;
            let key_escaped = s.string()?;
            let key_end = s.i;
            s.ws();
            s.expect(b':')?;
            s.ws();
            let value_start = s.i;
            let value = s.value(RECORD_DEPTH)?;
            let member = Member {
                key_start,
                key_end,
                key: &json[key_start + 1..key_end - 1],
                key_escaped,
                value,
                value_start,
                value_end: s.i,
            };
            if outline.members == 0 {
                outline.first = key_start;
            }
            outline.members += 1;
            outline.last = s.i;
            outline.escaped_keys |= key_escaped;
            if !each(&member) {
                return None;
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    if s.i != json.len() || (s.high != 0 && std::str::from_utf8(json).is_err()) {
        return None;
    }
    Some(outline)
}

/// Whether a key as written (between its quotes) is `name`: compared as
/// bytes, or unescaped by serde_json when it has an escape (rare; allocates).
#[inline]
pub(crate) fn key_is(key: &[u8], escaped: bool, name: &str) -> bool {
    if !escaped {
        return key == name.as_bytes();
    }
    unescape_key(key).is_some_and(|k| k == name)
}

#[cold]
fn unescape_key(key: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(key);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// [`fields`] from the members a validating scan of `json` already found
/// (the host's: four offsets per top-level member, see
/// [`crate::Batch::push_indexed`]), without scanning `json` again: the same
/// answer, since such a record is one JSON object serde_json accepts with no
/// escaped name. `None` when an offset is out of range or a named field is
/// given twice: the caller then scans (and gets `None` too for the latter).
pub(crate) fn fields_indexed<'a, const N: usize>(
    json: &'a [u8],
    members: &[u16],
    names: &[&str; N],
) -> Option<[Option<Field<'a>>; N]> {
    let mut found = [None; N];
    let lengths = names.iter().fold(0u64, |m, n| m | 1 << n.len().min(63));
    for m in members.chunks_exact(4) {
        let (ns, ne) = (usize::from(m[0]), usize::from(m[1]));
        if lengths & 1 << (ne.wrapping_sub(ns)).min(63) == 0 {
            continue;
        }
        let key = json.get(ns..ne)?;
        let Some(slot) = names.iter().position(|n| {
            let n = n.as_bytes();
            n.len() == key.len() && n.first() == key.first() && n == key
        }) else {
            continue;
        };
        if found[slot].is_some() {
            return None;
        }
        let raw = json.get(usize::from(m[2])..usize::from(m[3]))?;
        found[slot] = Some(Field::of_valid(raw)?);
    }
    Some(found)
}

/// [`walk`] over the members a validating scan of `json` already found
/// (four offsets each, see [`crate::Batch::push_indexed`]) instead of
/// scanning it: the same members, in order, and the same outline. `None`
/// before any call of `each` when an offset is out of place (the caller then
/// walks), or when `each` stops.
pub(crate) fn walk_members<'a>(
    json: &'a [u8],
    members: &[u16],
    mut each: impl FnMut(&Member<'a>) -> bool,
) -> Option<Outline> {
    let len = json.len();
    let fits = members.len().is_multiple_of(4)
        && members.chunks_exact(4).all(|m| {
            let [ns, ne, vs, ve] = [m[0], m[1], m[2], m[3]].map(usize::from);
            ns >= 1 && ns <= ne && ne < len && ne < vs && vs < ve && ve <= len
        });
    if !fits {
        return None;
    }
    let mut outline = Outline::default();
    for m in members.chunks_exact(4) {
        let [ns, ne, vs, ve] = [m[0], m[1], m[2], m[3]].map(usize::from);
        let member = Member {
            key_start: ns - 1,
            key_end: ne + 1,
            key: &json[ns..ne],
            key_escaped: false,
            value: Field::of_valid(&json[vs..ve])?,
            value_start: vs,
            value_end: ve,
        };
        if outline.members == 0 {
            outline.first = member.key_start;
        }
        outline.members += 1;
        outline.last = ve;
        if !each(&member) {
            return None;
        }
    }
    Some(outline)
}

/// Scans `json`, one JSON object, and returns the values of its top-level
/// fields named in `names`, in the same order (`None` for a field that is
/// absent), borrowed from `json`.
///
/// The whole record is checked as serde_json checks it (`from_slice` into a
/// struct): the grammar, string escapes, control characters, the end of the
/// record (whitespace only after the object). Keys are compared as written.
///
/// Returns `None`, meaning "ask serde_json", when `json` is not exactly one JSON
/// object or the scan cannot be sure of the answer: a named field given twice,
/// a key with a backslash escape or that is not UTF-8, nesting deeper than 64.
pub fn fields<'a, const N: usize>(
    json: &'a [u8],
    names: &[&str; N],
) -> Option<[Option<Field<'a>>; N]> {
    let mut found = [None; N];
    // The lengths of the names, one bit each (a length of 64 or more is bit
    // 63, which then stands for them all): most keys are told apart from
    // every name by their length alone, without a look at the names.
    let lengths = names.iter().fold(0u64, |m, n| m | 1 << n.len().min(63));
    // `high` notes bytes above 0x7F, so that a key is checked as UTF-8 only
    // when it has some (cleared before each key).
    let mut s = Scanner::<true> {
        b: json,
        i: 0,
        high: 0,
    };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let start = s.i;
            s.high = 0;
            if s.string()? {
                return None; // an escaped key: serde_json compares it unescaped
            }
            let key = &json[start..s.i - 1];
            if s.high != 0 && std::str::from_utf8(key).is_err() {
                return None;
            }
            s.ws();
            s.expect(b':')?;
            s.ws();
            let value = s.value(MAX_DEPTH)?;
            // The length and first byte first: most keys are told apart
            // without a call to `memcmp`.
            if lengths & 1 << key.len().min(63) != 0
                && let Some(slot) = names.iter().position(|n| {
                    let n = n.as_bytes();
                    n.len() == key.len() && n.first() == key.first() && n == key
                })
            {
                if found[slot].is_some() {
                    return None; // serde_json: "duplicate field"
                }
                found[slot] = Some(value);
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == json.len()).then_some(found)
}

/// Scans `json`, one JSON object, and puts every top-level member into
/// `members` (cleared first) as (key, value) in the order they are written,
/// borrowed from `json`: what a plugin that rewrites whole records (keep, drop
/// or rename fields) needs, without deserialising the values.
///
/// The record is checked as [`fields`] checks it, and as valid UTF-8 too
/// (checked only when a string has a byte above 0x7F), so that a value
/// copied from it is one serde_json would read. Unlike [`fields`], a key
/// given twice is listed twice: a caller that must read the record as
/// serde_json does (where the later one wins) looks for duplicates itself.
///
/// Returns `None`, meaning "ask serde_json", when `json` is not exactly one
/// JSON object, or is not UTF-8, or a key has a backslash escape, or nesting
/// is deeper than 64; `members` then holds no meaningful content.
///
/// ```
/// use sluice_plugin_sdk::scan::members;
///
/// let mut found = Vec::new();
/// members(br#"{"a":1,"b":{"c":[true]},"a":"x"}"#, &mut found).unwrap();
/// let listed: Vec<(&str, &[u8])> = found.iter().map(|(k, v)| (*k, v.raw())).collect();
/// assert_eq!(listed, [("a", &b"1"[..]), ("b", br#"{"c":[true]}"#), ("a", br#""x""#)]);
/// assert!(members(b"[1]", &mut found).is_none());
/// ```
pub fn members<'a>(json: &'a [u8], members: &mut Vec<(&'a str, Field<'a>)>) -> Option<()> {
    members.clear();
    let mut s = Scanner::<true> {
        b: json,
        i: 0,
        high: 0,
    };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let start = s.i;
            if s.string()? {
                return None; // an escaped key: its text is serde_json's to give
            }
            let key = std::str::from_utf8(&json[start..s.i - 1]).ok()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            let value = s.value(MAX_DEPTH)?;
            members.push((key, value));
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    if s.i != json.len() || (s.high != 0 && std::str::from_utf8(json).is_err()) {
        return None;
    }
    Some(())
}

/// A one in each byte of a word, and each byte's high bit: for the
/// eight-bytes-at-a-time tests here and in [`crate::record`].
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// Nesting deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// `UTF8`: whether to note bytes above 0x7F in strings (`high`), so that a
/// caller can check UTF-8 only when there are any.
pub(crate) struct Scanner<'a, const UTF8: bool> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
    pub(crate) high: u64,
}

impl<'a, const UTF8: bool> Scanner<'a, UTF8> {
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub(crate) fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    pub(crate) fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// JSON whitespace, as serde_json skips it.
    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// One value starting at the current byte; `depth` is how many more levels
    /// of nesting are allowed. Inlined (arrays and objects are not): a call
    /// returning a `Field` per field cost a fifth of the scan.
    #[inline(always)]
    pub(crate) fn value(&mut self, depth: u32) -> Option<Field<'a>> {
        let start = self.i;
        let mut escaped = false;
        let kind = match self.peek()? {
            b'"' => {
                self.i += 1;
                escaped = self.string()?;
                Kind::String
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Kind::Number
            }
            b'n' => {
                self.literal(b"null")?;
                Kind::Null
            }
            b't' => {
                self.literal(b"true")?;
                Kind::Bool
            }
            b'f' => {
                self.literal(b"false")?;
                Kind::Bool
            }
            b'[' => {
                self.array(depth.checked_sub(1)?)?;
                Kind::Array
            }
            b'{' => {
                self.object(depth.checked_sub(1)?)?;
                Kind::Object
            }
            _ => return None,
        };
        Some(Field {
            raw: &self.b[start..self.i],
            kind,
            escaped,
        })
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    #[inline(never)]
    fn array(&mut self, depth: u32) -> Option<()> {
        self.i += 1; // [
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    #[inline(never)]
    fn object(&mut self, depth: u32) -> Option<()> {
        self.i += 1; // {
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.expect(b'"')?;
            self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// The rest of a string after its opening quote, up to and including the
    /// closing one; whether it had an escape. Bytes above 0x7F are not checked
    /// here (serde_json does not check them in a string it skips either).
    #[inline]
    pub(crate) fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }

    /// Skips string bytes that need no attention (not `"`, `\` or a control
    /// character), eight at a time.
    #[inline]
    fn skip_plain(&mut self) {
        if self.eights(Self::plain8) {
            return;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            if UTF8 {
                self.high |= u64::from(c & 0x80);
            }
            self.i += 1;
        }
    }

    /// Takes `step` (eight bytes at a time) until it stops on a byte (`true`)
    /// or fewer than eight are left (`false`). The first step is apart from
    /// the loop: most strings and numbers end within it, and in Wasm each
    /// entry into a loop costs an epoch check.
    #[inline(always)]
    fn eights(&mut self, step: fn(&mut Self) -> Option<bool>) -> bool {
        match step(self) {
            Some(true) => true,
            Some(false) => loop {
                match step(self) {
                    Some(true) => return true,
                    Some(false) => {}
                    None => return false,
                }
            },
            None => false,
        }
    }

    /// Eight bytes of a string at once: `Some(true)` when one is a `"`, a
    /// `\` or a control character (the scan then stands on the first such),
    /// `Some(false)` when none is (the scan is past them), `None` when fewer
    /// than eight are left.
    #[inline(always)]
    fn plain8(&mut self) -> Option<bool> {
        let chunk = self.b.get(self.i..self.i + 8)?;
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte is zero in `quote`/`backslash`, or below 0x20 in `x`.
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let special = special & HIGH;
        if special != 0 {
            // The lowest flag is exact (a false one, from a borrow, only
            // ever sits above a true one): step to that byte at once.
            let plain = special.trailing_zeros() / 8;
            if UTF8 {
                let before = (1u64 << (plain * 8)) - 1;
                self.high |= x & HIGH & before;
            }
            self.i += plain as usize;
            return Some(true);
        }
        if UTF8 {
            self.high |= x & HIGH;
        }
        self.i += 8;
        Some(false)
    }

    /// A number, as the JSON grammar (and serde_json) has it.
    #[inline]
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) {
        if self.eights(Self::digits8) {
            return;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// Eight bytes of a number at once: `Some(true)` when one is not a digit
    /// (the scan then stands on the first such), `Some(false)` when all are
    /// (the scan is past them), `None` when fewer than eight are left.
    #[inline(always)]
    fn digits8(&mut self) -> Option<bool> {
        let chunk = self.b.get(self.i..self.i + 8)?;
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ (ONES * 0x30);
        // A byte is a digit when `x` is below 10 in it: adding 0x76 to its
        // low seven bits sets its high bit otherwise (no carry crosses
        // bytes: 0x7F + 0x76 < 0x100).
        let other = (((x & !HIGH) + ONES * 0x76) | x) & HIGH;
        if other != 0 {
            self.i += (other.trailing_zeros() / 8) as usize;
            return Some(true);
        }
        self.i += 8;
        Some(false)
    }

    #[inline]
    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLIGHT: &str = r#"{"year":2013,"dep_delay":2,"arr_delay":-11,"carrier":"UA","flight":1545,"tailnum":"N14228","time_hour":"2013-01-01T10:00:00Z","nested":{"a":[1,2.5e-3,{"b":null}],"c":"\u00e9\"x"},"cancelled":false}"#;
    const NAMES: [&str; 6] = [
        "carrier",
        "flight",
        "dep_delay",
        "arr_delay",
        "cancelled",
        "absent",
    ];

    #[test]
    fn finds_the_named_fields() {
        let [carrier, flight, dep, arr, cancelled, absent] =
            fields(FLIGHT.as_bytes(), &NAMES).unwrap();
        assert_eq!(carrier.unwrap().as_str(), Some("UA"));
        assert_eq!(carrier.unwrap().raw(), br#""UA""#);
        assert_eq!(flight.unwrap().as_i64(), Some(1545));
        assert_eq!(dep.unwrap().as_i64(), Some(2));
        assert_eq!(arr.unwrap().raw(), b"-11");
        assert_eq!(arr.unwrap().as_i64(), Some(-11));
        assert_eq!(cancelled.unwrap().as_bool(), Some(false));
        assert_eq!(absent, None);
    }

    #[test]
    fn kinds_and_raw_text() {
        let json = br#" { "n" : null , "o" : { } , "a" : [ ] , "s" : "a\"b" , "x" : 1.5 } "#;
        let [n, o, a, s, x] = fields(json, &["n", "o", "a", "s", "x"]).unwrap();
        assert!(n.unwrap().is_null());
        assert_eq!(o.unwrap().kind(), Kind::Object);
        assert_eq!(o.unwrap().raw(), b"{ }");
        assert_eq!(a.unwrap().kind(), Kind::Array);
        assert_eq!(s.unwrap().raw(), br#""a\"b""#);
        assert_eq!(s.unwrap().as_str(), None, "escaped");
        assert_eq!(x.unwrap().kind(), Kind::Number);
        assert_eq!(x.unwrap().as_i64(), None, "a float");
    }

    #[test]
    fn integers_as_serde_json_reads_them() {
        let cases: [(&str, Option<i64>); 9] = [
            ("0", Some(0)),
            ("-0", None),
            ("1e3", None),
            ("15.0", None),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("-9223372036854775808", Some(i64::MIN)),
            ("-9223372036854775809", None),
            ("123456789012345678901234567890", None),
        ];
        for (text, want) in cases {
            let json = format!(r#"{{"n":{text}}}"#);
            let [n] = fields(json.as_bytes(), &["n"]).unwrap();
            assert_eq!(n.unwrap().as_i64(), want, "{text}");
            let serde: Result<i64, _> = serde_json::from_str(text);
            assert_eq!(serde.ok(), want, "serde_json on {text}");
        }
        // Around 19 digits (the last count that cannot overflow) and
        // u64::MAX, as_u64 and as_i64 against serde_json's reading.
        for text in [
            "999999999999999999",
            "9999999999999999999",
            "-9999999999999999999",
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "-18446744073709551615",
            "1.5",
            "-7",
        ] {
            let json = format!(r#"{{"n":{text}}}"#);
            let [n] = fields(json.as_bytes(), &["n"]).unwrap();
            let n = n.unwrap();
            assert_eq!(
                n.as_u64(),
                serde_json::from_str::<u64>(text).ok(),
                "as_u64 {text}"
            );
            assert_eq!(
                n.as_i64(),
                serde_json::from_str::<i64>(text).ok(),
                "as_i64 {text}"
            );
        }
    }

    /// Whatever the scanner accepts, serde_json accepts; on every one-byte
    /// change of a record (and some hand-picked ones), and the raw values are
    /// those serde_json finds.
    #[test]
    fn never_accepts_what_serde_json_refuses() {
        let mut inputs: Vec<Vec<u8>> = [
            "{}",
            " {} \n",
            "[]",
            "{\"a\":1,}",
            "{\"a\":1}x",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":tru}",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":[1,]}",
            "{\"a\":{\"b\"}}",
            "{\"carrier\":1,\"carrier\":2}",
            "{\"a\":1}{}",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let base = FLIGHT.as_bytes();
        for at in 0..base.len() {
            for b in [
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'-', b'.', b'e',
                b'a', 0x01, 0xff,
            ] {
                let mut changed = base.to_vec();
                changed[at] = b;
                inputs.push(changed);
            }
            let mut shorter = base.to_vec();
            shorter.remove(at);
            inputs.push(shorter);
        }
        let mut accepted = 0;
        for input in &inputs {
            let Some(found) = fields(input, &NAMES) else {
                continue;
            };
            accepted += 1;
            let text = String::from_utf8_lossy(input);
            let map: serde_json::Map<String, serde_json::Value> =
                match serde_json::from_slice(input) {
                    Ok(map) => map,
                    // Valid JSON that a `Value` refuses (a string that is not
                    // UTF-8): serde_json must still accept it as an object.
                    Err(_) => {
                        serde_json::from_slice::<serde::de::IgnoredAny>(input)
                            .unwrap_or_else(|e| panic!("{text}: {e}"));
                        continue;
                    }
                };
            for (name, field) in NAMES.iter().zip(found) {
                let Some(field) = field else {
                    assert!(!map.contains_key(*name), "{text}: {name}");
                    continue;
                };
                let value: serde_json::Value = serde_json::from_slice(field.raw()).unwrap();
                assert_eq!(map.get(*name), Some(&value), "{text}: {name}");
                if let Some(s) = field.as_str() {
                    assert_eq!(value.as_str(), Some(s), "{text}: {name}");
                }
                if let Some(n) = field.as_i64() {
                    assert_eq!(value.as_i64(), Some(n), "{text}: {name}");
                }
            }
        }
        assert!(accepted > 100, "{accepted} of {}", inputs.len());
    }

    /// Digit runs of every length around the eight-byte steps, followed by
    /// every kind of byte, and keys with a byte above 0x7F at every place in
    /// a step: the scanner answers as serde_json does (and is sure of the
    /// answer for every valid record here).
    #[test]
    fn digit_runs_and_key_bytes_at_every_offset() {
        fn check(input: &[u8], names: &[&str; 2]) {
            let text = String::from_utf8_lossy(input);
            let ours = fields(input, names);
            let reference =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(input);
            match (ours, reference) {
                (Some(found), Ok(map)) => {
                    for (name, field) in names.iter().zip(found) {
                        let expected = map.get(*name);
                        let got = field
                            .map(|f| serde_json::from_slice::<serde_json::Value>(f.raw()).unwrap());
                        assert_eq!(got.as_ref(), expected, "{text}: {name}");
                    }
                }
                (None, Ok(_)) => panic!("{text}: valid, and the scanner gave up"),
                (Some(_), Err(e)) => panic!("{text}: accepted, serde_json says {e}"),
                (None, Err(_)) => {}
            }
        }
        let digits = "98765432109876543210";
        for n in 1..=digits.len() {
            for sign in ["", "-"] {
                for after in [
                    "",
                    "}",
                    ",\"b\":1}",
                    ".5}",
                    ".}",
                    "e3}",
                    "x}",
                    " }",
                    "\"}",
                    "0}",
                    "/}",
                    ":}",
                ] {
                    let input = format!("{{\"a\":{sign}{}{after}", &digits[..n]);
                    check(input.as_bytes(), &["a", "b"]);
                    let input = format!(
                        "{{\"a\":[{sign}{},{sign}{}]{after}",
                        &digits[..n],
                        &digits[..n]
                    );
                    check(input.as_bytes(), &["a", "b"]);
                }
            }
        }
        for len in 0..20 {
            for at in 0..len {
                for (high, width) in [("\u{e9}", 2), ("\u{20ac}", 3)] {
                    let mut key: String = "k".repeat(len);
                    key.replace_range(at..at + 1, high);
                    let input = format!("{{\"{key}\":1,\"z\":2}}");
                    check(input.as_bytes(), &[key.as_str(), "z"]);
                    // The same bytes cut short: not UTF-8, so not JSON.
                    let mut bad = input.into_bytes();
                    bad.remove(2 + at + width - 1);
                    check(&bad, &[key.as_str(), "z"]);
                }
                let mut bad = format!("{{\"{}\":1}}", "k".repeat(len)).into_bytes();
                bad[2 + at] = 0xff;
                check(&bad, &["k", "z"]);
            }
        }
    }

    /// `members` accepts exactly what `fields` accepts (except keys given
    /// twice, which it lists), and lists what serde_json reads, in order.
    #[test]
    fn members_lists_what_serde_json_reads() {
        let base = FLIGHT.as_bytes();
        let mut inputs: Vec<Vec<u8>> = vec![
            b"{}".to_vec(),
            b" { \"a\" : 1 } ".to_vec(),
            br#"{"a":1,"a":2}"#.to_vec(),
            br#"{"a\u0041":1}"#.to_vec(),
            b"{\"\xff\":1}".to_vec(),
            b"{\"a\":\"\xc3\xa9 \xff\"}".to_vec(),
            "{\"a\":\"été, 8 bytes+ of text\"}".as_bytes().to_vec(),
            b"[]".to_vec(),
        ];
        for at in 0..base.len() {
            for b in [b'"', b'\\', b'{', b'}', b',', b':', b' ', b'0', 0x01, 0xff] {
                let mut changed = base.to_vec();
                changed[at] = b;
                inputs.push(changed);
            }
        }
        inputs.push(base.to_vec());
        let mut listed = Vec::new();
        let mut accepted = 0;
        for input in &inputs {
            let text = String::from_utf8_lossy(input);
            let by_fields = fields(input, &["a"]).is_some();
            let utf8 = std::str::from_utf8(input).is_ok();
            let Some(()) = members(input, &mut listed) else {
                assert!(!by_fields || !utf8, "{text}");
                continue;
            };
            assert!(utf8, "{text}");
            let twice = listed
                .iter()
                .enumerate()
                .any(|(i, (k, _))| listed[..i].iter().any(|(j, _)| j == k));
            assert!(by_fields || twice, "{text}");
            accepted += 1;
            let Ok(values) = serde_json::from_slice::<Vec<serde_json::Value>>(
                format!(
                    "[{}]",
                    listed
                        .iter()
                        .map(|(_, v)| String::from_utf8_lossy(v.raw()).into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                )
                .as_bytes(),
            ) else {
                panic!("{text}: a listed value is not JSON");
            };
            if twice {
                continue;
            }
            let reference: serde_json::Map<String, serde_json::Value> =
                match serde_json::from_slice(input) {
                    Ok(m) => m,
                    Err(_) => continue, // not UTF-8 in a value: see the test above
                };
            let keys: Vec<&str> = listed.iter().map(|(k, _)| *k).collect();
            let mut reference_keys: Vec<&str> = reference.keys().map(String::as_str).collect();
            // serde_json's map is ordered by insertion (preserve_order) or by key.
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            reference_keys.sort_unstable();
            assert_eq!(sorted, reference_keys, "{text}");
            for ((key, _), value) in listed.iter().zip(&values) {
                assert_eq!(reference.get(*key), Some(value), "{text}: {key}");
            }
        }
        assert!(accepted > 100, "{accepted} of {}", inputs.len());
    }

    /// An object written with its members' offsets known by construction
    /// (the ground truth of what a host's scan lists): `(key, value)` pairs,
    /// `ws` the whitespace put around every token.
    fn object_with_members(pairs: &[(&str, &str)], ws: &str) -> (String, Vec<u16>) {
        let mut text = format!("{ws}{{{ws}");
        let mut members = Vec::new();
        for (i, (key, value)) in pairs.iter().enumerate() {
            if i > 0 {
                text.push_str(&format!(",{ws}"));
            }
            text.push('"');
            let name_start = text.len();
            text.push_str(key);
            let name_end = text.len();
            text.push_str(&format!("\"{ws}:{ws}"));
            let value_start = text.len();
            text.push_str(value);
            let value_end = text.len();
            text.push_str(ws);
            members.extend([name_start, name_end, value_start, value_end].map(|o| o as u16));
        }
        text.push_str(&format!("}}{ws}"));
        (text, members)
    }

    proptest::proptest! {
        /// Given the members a host found, `fields` answers as its scan does:
        /// the same values, kinds and escapes; `None` for a name given twice.
        #[test]
        fn fields_from_members_equal_fields_by_scan(
            picks in proptest::collection::vec((0usize..6, 0usize..10), 0..8),
            ws in proptest::sample::select(vec!["", " ", "\n\t "]),
        ) {
            const KEYS: [&str; 6] = ["a", "carrier", "dep_delay", "x y", "", "é"];
            const VALUES: [&str; 10] = [
                "1", "-2.5", r#""s""#, r#""e\"x""#, "null", "true", r#"[1,{"a":2}]"#,
                r#"{"k":"v"}"#, r#""é""#, "0",
            ];
            let pairs: Vec<(&str, &str)> = picks.iter().map(|&(k, v)| (KEYS[k], VALUES[v])).collect();
            let (text, members) = object_with_members(&pairs, ws);
            let names = ["a", "carrier", "dep_delay", "é", "absent"];
            let scanned = fields(text.as_bytes(), &names);
            proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "{}", text);
            proptest::prop_assert_eq!(fields_indexed(text.as_bytes(), &members, &names), scanned, "{}", text);
            // And through a batch, as a guest reads it.
            let mut batch = crate::Batch::new();
            batch.push_indexed(None, text.as_bytes(), 0, &members);
            proptest::prop_assert_eq!(batch.get(0).unwrap().fields(&names), scanned);
            // A record read and edited from the members, as from a walk.
            let mut plain = crate::Batch::new();
            plain.push(None, text.as_bytes(), 0);
            let (with, without) = (batch.get(0).unwrap(), plain.get(0).unwrap());
            /// The named fields' text, the edit's result and its bytes.
            type Read = (Vec<Option<Vec<u8>>>, Result<(), String>, Vec<u8>);
            fn read(e: &crate::Event<'_>, names: &[&'static str; 5]) -> Result<Read, String> {
                e.record(names).map(|r| {
                    let mut buf = Vec::new();
                    let written = r
                        .edit()
                        .set("carrier", "X")
                        .remove("a")
                        .rename("dep_delay", "dd")
                        .set("new", 1)
                        .write(&mut buf);
                    (r.fields().iter().map(|f| f.map(|f| f.raw().to_vec())).collect(), written, buf)
                })
            }
            proptest::prop_assert_eq!(read(&with, &names), read(&without, &names), "{}", text);
        }
    }

    #[test]
    fn members_out_of_range_fall_back_to_the_scan() {
        let (text, members) = object_with_members(&[("a", "1"), ("b", r#""x""#)], "");
        let names = ["a", "b"];
        let scanned = fields(text.as_bytes(), &names);
        assert_eq!(scanned.unwrap()[1].unwrap().as_str(), Some("x"));
        let past_the_end: Vec<u16> = members.iter().map(|&m| m + 100).collect();
        assert_eq!(fields_indexed(text.as_bytes(), &past_the_end, &names), None);
        let mut batch = crate::Batch::new();
        batch.push_indexed(None, text.as_bytes(), 0, &past_the_end);
        assert_eq!(batch.get(0).unwrap().fields(&names), scanned);
    }
}
