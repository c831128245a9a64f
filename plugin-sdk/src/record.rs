//! Typed reads and in-place edits of a record's JSON without a full parse:
//! the fast way to write a plugin, and the way the templates teach.
//!
//! A [`Record`] is one pass over an event's value (a JSON object) that checks
//! all of it as serde_json would and keeps the named top-level fields — their
//! text borrowed from the event, typed on demand with [`Field::as_i64`],
//! [`as_f64`](Field::as_f64), [`str`](Field::str), [`as_bool`](Field::as_bool),
//! [`is_null`](Field::is_null), [`raw`](Field::raw) — and where every member
//! is (the first 32, and the named ones). An
//! [`Edit`] of it sets, removes, renames and appends fields and writes the new
//! record straight into the output batch: the fields it does not touch are
//! copied as byte runs, nothing is parsed into a map, and nothing is
//! allocated for up to 8 edits (more go to a `Vec`).
//!
//! ```
//! use sluice_plugin_sdk::{Batch, Output};
//!
//! let batch = Batch::from_lines(r#"{"id":7,"dep_delay":12,"arr_delay":-3,"tailnum":"N1"}"#);
//! let mut out = Output::new();
//! for event in &batch {
//!     // One pass: checks the record, finds the fields named, keeps where
//!     // every member is (for the edit).
//!     let record = match event.record(&["dep_delay", "arr_delay"]) {
//!         Ok(record) => record,
//!         Err(reason) => {
//!             out.reject(&event, reason); // "not a JSON object", or serde_json's message
//!             continue;
//!         }
//!     };
//!     let [dep, arr] = record.fields();
//!     let (Some(dep), Some(arr)) = (dep.and_then(|f| f.as_i64()), arr.and_then(|f| f.as_i64()))
//!     else {
//!         continue; // cancelled: dropped
//!     };
//!     record
//!         .edit()
//!         .set("gain", dep - arr)
//!         .remove("tailnum")
//!         .push_or_reject(&mut out);
//! }
//! assert_eq!(
//!     out.events.get(0).unwrap().value(),
//!     br#"{"id":7,"dep_delay":12,"arr_delay":-3,"gain":15}"#
//! );
//! ```
//!
//! **What is exact.** A record is accepted when serde_json accepts it (as a
//! value it skips: grammar, escapes, control characters, nothing after the
//! object, nesting under 128 levels) and it is UTF-8; otherwise the error is
//! serde_json's message. Keys are compared unescaped; a key given twice reads
//! as its last value, as in a `serde_json::Map`. An edit's output parses (with
//! serde_json) equal to the same edit applied to the record parsed as a
//! `serde_json::Map` — `insert` for [`Edit::set`], `shift_remove` for
//! [`Edit::remove`], for [`Edit::rename`] the value moved to the new key at
//! the field's index (any other field with that key dropped) — member for
//! member and in order, which the tests check on random records. The
//! untouched members keep their bytes and order; a set field keeps its
//! place, a new one is appended at the end, a renamed one keeps its place.
//! The rare cases that one pass cannot settle (an edited key given twice or
//! written with an escape, a rename onto a key that is there too, two edits
//! of one name) are done that way, through a `serde_json::Map`: slower, the
//! same result.
//!
//! **What it costs.** The record keeps 9 bytes per member for its first 32
//! members (where it is, and a one-byte tag of its key), in a box that the
//! next record reuses, so an edit is a splice of what its one pass found; a
//! record with more members, an edit of more than 8 fields or a key with an
//! escape make the edit a second pass (one that writes as it reads). On the
//! flights, in the Wasm host, the template's way costs 1.14× a hand-written
//! plugin that cuts the record at offsets, counted in instructions
//! (0.98–1.17× in time over four runs), and about a seventh of a
//! `serde_json::Map` parse and `push_json` (BENCHMARKS.md, "No large copies
//! per record").

use std::borrow::Cow;
use std::cell::Cell;

use arrayvec::ArrayVec;

use crate::batch::{Event, Output};
use crate::scan::{self, Field, Kind, Outline};

/// An event's value read as a JSON object, with the top-level fields named
/// when it was made: see [the module](self). Made by [`Event::record`] (or
/// [`Record::parse`]); `N` is the number of names.
#[derive(Debug, Clone)]
pub struct Record<'a, const N: usize> {
    json: &'a [u8],
    event: Option<Event<'a>>,
    names: [&'a str; N],
    slots: [Slot<'a>; N],
    /// Where the first [`SPANS`] members are: an edit of a field not named
    /// is a splice too. Always `Some` but while dropped.
    places: Option<Box<Places>>,
}

/// Members whose places a [`Record`] keeps beyond the named ones.
const SPANS: usize = 32;

/// The places of a record's first [`SPANS`] members, in a box: making,
/// returning and moving a [`Record`] copies a pointer, not room for 32
/// places (in Wasm a copy that large is a call to the host's
/// `memory.copy`). A dropped record gives its box back to a one-box spare
/// ([`SPARE`]), so a plugin that reads one record after another allocates
/// once.
#[derive(Debug, Clone)]
struct Places {
    spans: ArrayVec<Span, SPANS>,
    /// Each member's key [`tag`], past `spans.len()` left from an earlier
    /// record: an edit finds a field not named by its tag first, eight
    /// members at a time, and takes a match only below `spans.len()`.
    key_tags: [u8; SPANS],
    outline: Outline,
}

thread_local! {
    /// The box of the last record dropped (a guest runs on one thread).
    static SPARE: Cell<Option<Box<Places>>> = const { Cell::new(None) };
}

impl Places {
    #[inline(always)]
    fn take() -> Box<Places> {
        // `try_with`: a record made or dropped while the thread's locals
        // are torn down (one kept in another thread-local) goes without.
        match SPARE.try_with(Cell::take).ok().flatten() {
            Some(mut places) => {
                places.spans.clear();
                places
            }
            None => Box::new(Places {
                spans: ArrayVec::new_const(),
                key_tags: [0; SPANS],
                outline: Outline::default(),
            }),
        }
    }
}

impl<const N: usize> Drop for Record<'_, N> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(places) = self.places.take() {
            let _ = SPARE.try_with(|spare| spare.set(Some(places)));
        }
    }
}

/// A key (as written, without its quotes) in one byte: its length's low five
/// bits and its first byte's low three. Keys with different tags differ;
/// keys with the same tag are compared. On the flights every key has a tag
/// of its own.
#[inline(always)]
fn tag(key: &[u8]) -> u8 {
    (key.len() as u8 & 31) | key.first().map_or(0, |b| b << 5)
}

/// One member's offsets in the record.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    key_start: u32,
    value_end: u32,
}

impl Span {
    /// Just after the key's closing quote (a key without escapes).
    fn key_end(&self, json: &[u8]) -> usize {
        let from = self.key_start as usize + 1;
        from + json[from..].iter().position(|&b| b == b'"').unwrap_or(0) + 1
    }

    /// Where the value starts: after the key, whitespace, `:`, whitespace.
    fn value_start(&self, json: &[u8]) -> usize {
        let mut i = self.key_end(json);
        while json[i] != b':' {
            i += 1;
        }
        i += 1;
        while matches!(json[i], b' ' | b'\n' | b'\t' | b'\r') {
            i += 1;
        }
        i
    }
}

/// Where one named field was found: the last member with its name.
#[derive(Debug, Clone, Copy, Default)]
struct Slot<'a> {
    field: Option<Field<'a>>,
    /// The member is given twice or more.
    twice: bool,
    /// Its index among the members (its place is in `spans` below [`SPANS`]).
    index: u32,
}

impl<'a, const N: usize> Record<'a, N> {
    /// Reads `json` as one JSON object and keeps its top-level fields named
    /// in `names`.
    ///
    /// # Errors
    /// When `json` is not exactly one JSON object: `"invalid JSON: …"` with
    /// serde_json's message, or `"not a JSON object"`.
    #[inline]
    pub fn parse(json: &'a [u8], names: &[&'a str; N]) -> Result<Self, String> {
        Self::read(json, names, None)
    }

    #[inline(always)]
    fn read(
        json: &'a [u8],
        names: &[&'a str; N],
        event: Option<Event<'a>>,
    ) -> Result<Self, String> {
        // Small to move: the members' places are in the box (see `Places`).
        let mut record = Record {
            json,
            event,
            names: *names,
            slots: [Slot::default(); N],
            places: Some(Places::take()),
        };
        let mut count = 0;
        // The names' lengths, one bit each (64 and longer share bit 63): most
        // keys are told apart from every name by their length alone.
        let lengths = names.iter().fold(0u64, |m, n| m | 1 << n.len().min(63));
        let places = record.places.as_deref_mut().expect("a record's places");
        let mut each = |m: &scan::Member<'a>| {
            // The first SPANS members' places; a record with more is never
            // spliced (see `Edit::write`), and its tags are overwritten.
            // Offsets fit: a batch holds at most 4 GiB of values.
            let _ = places.spans.try_push(Span {
                key_start: m.key_start as u32,
                value_end: m.value_end as u32,
            });
            places.key_tags[count % SPANS] = tag(m.key);
            // Length and first byte first: most keys are told apart without
            // a call to `memcmp`.
            let found = if m.key_escaped {
                names.iter().position(|n| scan::key_is(m.key, true, n))
            } else if lengths & 1 << m.key.len().min(63) == 0 {
                None
            } else {
                names.iter().position(|n| {
                    let n = n.as_bytes();
                    n.len() == m.key.len() && n.first() == m.key.first() && n == m.key
                })
            };
            if let Some(i) = found {
                let slot = &mut record.slots[i];
                *slot = Slot {
                    field: Some(m.value),
                    twice: slot.field.is_some(),
                    index: count as u32,
                };
            }
            count += 1;
            true
        };
        // The members the host's decoder found, when it handed them over
        // (package 0.3.0): no second scan.
        let members = event.as_ref().map_or(&[][..], Event::members);
        let outline = match (!members.is_empty())
            .then(|| scan::walk_members(json, members, &mut each))
            .flatten()
        {
            Some(outline) => Some(outline),
            None => scan::walk(json, &mut each),
        }
        .ok_or_else(|| refusal(json))?;
        places.outline = outline;
        Ok(record)
    }

    /// The named fields' values, in the order of the names; `None` for a field
    /// that is absent.
    pub fn fields(&self) -> [Option<Field<'a>>; N] {
        std::array::from_fn(|i| self.slots[i].field)
    }

    /// The value of `name` if it is one of the names this record was made
    /// with (`None` when absent or not named: it was not looked for).
    pub fn field(&self, name: &str) -> Option<Field<'a>> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.slots[i].field
    }

    /// The whole record as a [`Field`] (an object): for
    /// [`Field::get`] or [`Field::pointer`] (`"/a/0/b"`) below the top level,
    /// one more pass over the part it goes through.
    pub fn as_field(&self) -> Field<'a> {
        let text = self.json.trim_ascii();
        Field::new(text, Kind::Object, false)
    }

    /// The record's text, as given.
    pub fn json(&self) -> &'a [u8] {
        self.json
    }

    /// Starts an edit of this record (see [`Edit`]).
    pub fn edit(&self) -> Edit<'_> {
        let places = self.places.as_deref().expect("a record's places");
        Edit {
            json: self.json,
            event: self.event,
            known: Some(Known {
                names: &self.names,
                slots: &self.slots,
                spans: &places.spans,
                key_tags: &places.key_tags,
                outline: places.outline,
            }),
            ops: ArrayVec::new_const(),
            more: Vec::new(),
            check_values: false,
        }
    }
}

/// Why `json` is not a record: serde_json's message when it is not JSON.
#[cold]
fn refusal(json: &[u8]) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        Err(e) => format!("invalid JSON: {e}"),
        Ok(_) if std::str::from_utf8(json).is_err() => "invalid JSON: not UTF-8".to_string(),
        Ok(_) if json.trim_ascii_start().first() != Some(&b'{') => "not a JSON object".to_string(),
        Ok(_) => "invalid JSON: nested too deeply".to_string(),
    }
}

impl<'a> Event<'a> {
    /// Reads the value as one JSON object, keeping the top-level fields
    /// named in `names`: [`Record::parse`] on [`value`](Self::value). An
    /// [`Edit`] of the record keeps this event's key, event time and headers.
    ///
    /// # Errors
    /// As [`Record::parse`]: pass the message to [`Output::reject`].
    #[inline]
    pub fn record<const N: usize>(&self, names: &[&'a str; N]) -> Result<Record<'a, N>, String> {
        Record::read(self.value(), names, Some(*self))
    }

    /// Starts an edit of the value without reading any field first (see
    /// [`Edit`]): one pass, when the edit is written, that checks the record
    /// and writes the new one. To read fields too, make a
    /// [`record`](Self::record) and edit that, so that the record is read once.
    pub fn edit(&self) -> Edit<'a> {
        Edit {
            json: self.value(),
            event: Some(*self),
            known: None,
            ops: ArrayVec::new_const(),
            more: Vec::new(),
            check_values: false,
        }
    }
}

/// A value to write into a record: made from a Rust value with `into()`
/// (`i64`, `u64` and the smaller integers, `f64`, `f32`, `bool`, `&str`,
/// `&String`, `Option<T>` (`None` is `null`), a [`Field`] (its text, copied;
/// an [`Edit`] refuses one that a `serde_json::Value` refuses, `1e400`),
/// `()` for `null`), or from JSON text with [`FieldValue::json`]. Written as
/// serde_json writes the same value (a non-finite float as `null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldValue<'v>(Value<'v>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'v> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'v str),
    /// JSON text, checked.
    Raw(&'v [u8]),
    /// JSON text of a [`Field`]: checked by the scan that found it, not yet
    /// for what a `serde_json::Value` refuses (see [`Edit::write`]).
    Field(&'v [u8]),
}

impl<'v> FieldValue<'v> {
    /// `null`.
    pub const NULL: FieldValue<'static> = FieldValue(Value::Null);

    /// A value given as JSON text (an object, an array, anything), written
    /// as it is.
    ///
    /// # Errors
    /// When `text` is not exactly one JSON value (surrounding JSON
    /// whitespace — space, tab, line feed, carriage return — is allowed and
    /// dropped), or is one that serde_json does not read as a
    /// `serde_json::Value`: a number beyond f64's range (`1e400`), a lone
    /// surrogate escape (`"\ud800"`). The message is serde_json's, but for
    /// a value nested 127 levels deep: serde_json reads it alone, not as a
    /// record's member, so it is refused too.
    pub fn json(text: &'v [u8]) -> Result<Self, String> {
        // JSON's whitespace only (RFC 8259 §2): not `trim_ascii`, which also
        // drops a form feed, and would let `"\x0c1"` pass as `1`.
        let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
        let start = text.iter().position(|c| !ws(c)).unwrap_or(text.len());
        let end = text.iter().rposition(|c| !ws(c)).map_or(start, |i| i + 1);
        let text = &text[start..end];
        let mut s = scan::Scanner::<true> {
            b: text,
            i: 0,
            high: 0,
        };
        match s.value(scan::RECORD_DEPTH) {
            Some(_) if s.i == text.len() && (s.high == 0 || std::str::from_utf8(text).is_ok()) => {
                // The scan accepts what serde_json accepts when skipping a
                // value; a `serde_json::Value` refuses a number out of
                // f64's range and a lone surrogate too, and the record's
                // other edit paths (through a `serde_json::Map`) read it as
                // one: so that each path writes the same, those go now.
                if may_not_be_a_value(text)
                    && let Err(e) = serde_json::from_slice::<serde_json::Value>(text)
                {
                    return Err(format!("invalid JSON: {e}"));
                }
                Ok(FieldValue(Value::Raw(text)))
            }
            _ => Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Err(e) => format!("invalid JSON: {e}"),
                    // serde_json reads 127 levels alone, but not as a
                    // record's member, one level down.
                    Ok(_) => {
                        "invalid JSON: nested too deeply for a record's member (126 levels at most)"
                            .to_string()
                    }
                },
            ),
        }
    }

    /// Writes the value's JSON text at the end of `buf`.
    #[inline]
    pub fn write(&self, buf: &mut Vec<u8>) {
        // Writing these into a `Vec` cannot fail.
        let _ = match self.0 {
            Value::Null => {
                buf.extend_from_slice(b"null");
                Ok(())
            }
            Value::Bool(b) => {
                buf.extend_from_slice(if b { b"true" } else { b"false" });
                Ok(())
            }
            Value::I64(n) => serde_json::to_writer(&mut *buf, &n),
            Value::U64(n) => serde_json::to_writer(&mut *buf, &n),
            Value::F64(n) => serde_json::to_writer(&mut *buf, &n),
            Value::Str(s) => serde_json::to_writer(&mut *buf, s),
            Value::Raw(text) | Value::Field(text) => {
                buf.extend_from_slice(text);
                Ok(())
            }
        };
    }

    /// The value as a `serde_json::Value` (the slow path and the tests).
    fn to_value(self) -> serde_json::Value {
        match self.0 {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => b.into(),
            Value::I64(n) => n.into(),
            Value::U64(n) => n.into(),
            Value::F64(n) => n.into(),
            Value::Str(s) => s.into(),
            Value::Raw(text) | Value::Field(text) => {
                serde_json::from_slice(text).unwrap_or(serde_json::Value::Null)
            }
        }
    }
}

macro_rules! from_int {
    ($variant:ident, $wide:ty: $($t:ty),*) => {$(
        impl From<$t> for FieldValue<'_> {
            fn from(n: $t) -> Self {
                FieldValue(Value::$variant(<$wide>::from(n)))
            }
        }
    )*};
}
from_int!(I64, i64: i8, i16, i32, i64);
from_int!(U64, u64: u8, u16, u32, u64);
from_int!(F64, f64: f32, f64);

impl From<bool> for FieldValue<'_> {
    fn from(b: bool) -> Self {
        FieldValue(Value::Bool(b))
    }
}

impl From<()> for FieldValue<'_> {
    fn from((): ()) -> Self {
        FieldValue(Value::Null)
    }
}

impl<'v> From<&'v str> for FieldValue<'v> {
    fn from(s: &'v str) -> Self {
        FieldValue(Value::Str(s))
    }
}

impl<'v> From<&'v String> for FieldValue<'v> {
    fn from(s: &'v String) -> Self {
        FieldValue(Value::Str(s))
    }
}

impl<'v> From<&'v Cow<'v, str>> for FieldValue<'v> {
    fn from(s: &'v Cow<'v, str>) -> Self {
        FieldValue(Value::Str(s))
    }
}

impl<'v> From<Field<'v>> for FieldValue<'v> {
    fn from(f: Field<'v>) -> Self {
        FieldValue(Value::Field(f.raw()))
    }
}

impl<'v, T: Into<FieldValue<'v>>> From<Option<T>> for FieldValue<'v> {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue(Value::Null), Into::into)
    }
}

/// Whether JSON text that the scan accepted may still be refused as a
/// `serde_json::Value`: it has an exponent, a run of over 300 digits (f64
/// ends near 1.8e308) or a `\u` escape (a lone surrogate). Strings can make
/// this say yes for nothing (`"1e"`); then the check costs a parse.
fn may_not_be_a_value(text: &[u8]) -> bool {
    let mut digits = 0;
    let mut last = 0u8;
    for &c in text {
        if c.is_ascii_digit() {
            digits += 1;
            if digits > 300 {
                return true;
            }
        } else if (c | 0x20 == b'e' && (last.is_ascii_digit() || last == b'.'))
            || (c == b'u' && last == b'\\')
        {
            return true;
        } else {
            digits = 0;
        }
        last = c;
    }
    false
}

/// Whether a [`Field`]'s text may be one a `serde_json::Value` refuses:
/// [`may_not_be_a_value`], or a byte above 0x7F (`scan::fields` does not
/// check values as UTF-8; a [`Record`]'s do).
fn field_may_be_refused(text: &[u8]) -> bool {
    !text.is_ascii() || may_not_be_a_value(text)
}

/// Edits kept without allocating; more go to a `Vec`.
const INLINE: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Op<'r> {
    name: &'r str,
    act: Act<'r>,
}

#[derive(Debug, Clone, Copy)]
enum Act<'r> {
    Set(FieldValue<'r>),
    Remove,
    Rename(&'r str),
}

/// What a [`Record`] found, for its edit.
#[derive(Debug, Clone, Copy)]
struct Known<'r> {
    names: &'r [&'r str],
    slots: &'r [Slot<'r>],
    spans: &'r [Span],
    key_tags: &'r [u8; SPANS],
    outline: Outline,
}

impl Known<'_> {
    /// Which member is `name` (`None`: absent) and whether it is given
    /// twice. The record has at most [`SPANS`] members.
    #[inline(always)]
    fn find(&self, json: &[u8], name: &str) -> (Option<usize>, bool) {
        if let Some(s) = self.names.iter().position(|n| *n == name) {
            let slot = &self.slots[s];
            return (slot.field.map(|_| slot.index as usize), slot.twice);
        }
        let name = name.as_bytes();
        let mut found = None;
        let mut twice = false;
        // The members whose key has the name's tag, eight at a time (a byte
        // equal to it is zero in `x`): most names match one member or none,
        // and no loop visits every member.
        use scan::{HIGH, ONES};
        let wanted = ONES * u64::from(tag(name));
        // A fixed count of steps, unrolled: no loop to run (in Wasm each
        // turn of one is an epoch check). The tags past the last member are
        // 0; a match there finds no span below.
        for w in 0..SPANS / 8 {
            let tags: [u8; 8] = std::array::from_fn(|b| self.key_tags[w * 8 + b]);
            let x = u64::from_le_bytes(tags) ^ wanted;
            // Flags every zero byte, and maybe bytes above one (a borrow),
            // and bytes past the last member: each is checked below.
            let mut candidates = x.wrapping_sub(ONES) & !x & HIGH;
            while candidates != 0 {
                let i = w * 8 + (candidates.trailing_zeros() / 8) as usize;
                candidates &= candidates - 1;
                let Some(span) = self.spans.get(i) else {
                    break;
                };
                let key = span.key_start as usize + 1;
                if json.get(key + name.len()) == Some(&b'"')
                    && json.get(key..key + name.len()) == Some(name)
                {
                    twice |= found.is_some();
                    found = Some(i);
                }
            }
        }
        // The keys here have no escapes, so none holds a `"` or a `\`: a
        // name with one matched text that runs past a key's end.
        if found.is_some() && name.iter().any(|&b| b == b'"' || b == b'\\') {
            return (None, false);
        }
        (found, twice)
    }
}

/// Edits of one record, written as a new record in one pass: made by
/// [`Record::edit`] (or [`Event::edit`]), written by [`push_to`](Self::push_to),
/// [`push_or_reject`](Self::push_or_reject) or [`write`](Self::write).
///
/// The edits apply in order, as they would to a `serde_json::Map` of the
/// record (see [the module](self)): [`set`](Self::set) replaces a field's
/// value in place or appends the field, [`remove`](Self::remove) drops it,
/// [`rename`](Self::rename) gives it a new key in place (dropping any other
/// field with that key).
#[derive(Debug, Clone)]
pub struct Edit<'r> {
    json: &'r [u8],
    event: Option<Event<'r>>,
    known: Option<Known<'r>>,
    ops: ArrayVec<Op<'r>, INLINE>,
    more: Vec<Op<'r>>,
    /// A value set from a [`Field`] may be one a `serde_json::Value`
    /// refuses: [`write`](Self::write) checks before it writes.
    check_values: bool,
}

impl<'r> Edit<'r> {
    #[inline(always)]
    fn op(&mut self, op: Op<'r>) -> &mut Self {
        if let Err(full) = self.ops.try_push(op) {
            self.more.push(full.element());
        }
        self
    }

    fn all(&self) -> impl Iterator<Item = &Op<'r>> {
        self.ops[..].iter().chain(&self.more)
    }

    /// Sets field `name` to `value` (`5`, `"text"`, `true`, `None`, a
    /// [`Field`], [`FieldValue::json`]): its value replaced in place, or the
    /// field appended at the end of the object.
    pub fn set(&mut self, name: &'r str, value: impl Into<FieldValue<'r>>) -> &mut Self {
        let value = value.into();
        // Known at compile time for all but a `Field`'s value.
        if let Value::Field(text) = value.0 {
            self.check_values |= field_may_be_refused(text);
        }
        self.op(Op {
            name,
            act: Act::Set(value),
        })
    }

    /// Removes field `name` (nothing when it is absent).
    #[inline]
    pub fn remove(&mut self, name: &'r str) -> &mut Self {
        self.op(Op {
            name,
            act: Act::Remove,
        })
    }

    /// Renames field `from` to `to`, in place (nothing when `from` is
    /// absent; another field called `to` is dropped). A rename to the same
    /// name changes nothing, and is not kept as an edit.
    pub fn rename(&mut self, from: &'r str, to: &'r str) -> &mut Self {
        if from == to {
            // Not an edit: otherwise one path would write the record
            // through a `serde_json::Map` (`1.5e3` as `1500.0`) and the
            // other in place.
            return self;
        }
        self.op(Op {
            name: from,
            act: Act::Rename(to),
        })
    }

    /// Appends the edited record to `out` as an event with the original's
    /// key, event time and headers (none, a time of 0, for a record made by
    /// [`Record::parse`]).
    ///
    /// # Errors
    /// When the value is not a JSON object (only an edit made by
    /// [`Event::edit`] has not checked that yet): serde_json's message, as
    /// [`Record::parse`] gives it. When a value set from a [`Field`] is one
    /// a `serde_json::Value` refuses, as [`FieldValue::json`] refuses it
    /// (`1e400`, a lone surrogate, text that is not UTF-8):
    /// `field "NAME": invalid JSON: …`. `out` is then unchanged.
    pub fn push_to(&self, out: &mut Output) -> Result<(), String> {
        let start = out.events.values_len();
        if let Err(e) = self.write(out.events.values_mut()) {
            out.events.values_mut().truncate(start);
            return Err(e);
        }
        match self.event {
            Some(event) => {
                out.events
                    .close_value(event.key(), event.timestamp_ms(), event.headers());
            }
            None => out.events.close_value(None, 0, std::iter::empty()),
        }
        Ok(())
    }

    /// [`push_to`](Self::push_to), or, when the value is not a JSON object,
    /// [`Output::reject`] of the event with the reason.
    pub fn push_or_reject(&self, out: &mut Output) {
        if let Err(reason) = self.push_to(out)
            && let Some(event) = self.event
        {
            out.reject(&event, reason);
        }
    }

    /// Writes the edited record's JSON text at the end of `buf`.
    ///
    /// # Errors
    /// As [`push_to`](Self::push_to); `buf` then holds a partial write after
    /// its former end.
    pub fn write(&self, buf: &mut Vec<u8>) -> Result<(), String> {
        if self.check_values
            && let Some(refused) = self.refused_value()
        {
            return Err(refused);
        }
        if self.conflicting() {
            return self.through_serde(buf);
        }
        if let Some(known) = &self.known
            && self.more.is_empty()
            && !known.outline.escaped_keys
            && known.outline.members <= SPANS
        {
            return self.splice(known, buf);
        }
        let start = buf.len();
        match self.stream(buf) {
            Some(done) => done,
            None => {
                buf.truncate(start);
                self.through_serde(buf)
            }
        }
    }

    /// The first value set from a [`Field`] that a `serde_json::Value`
    /// refuses, with serde_json's reason: every path refuses it, as the
    /// ones through a `serde_json::Map` must.
    #[cold]
    fn refused_value(&self) -> Option<String> {
        self.all().find_map(|op| match op.act {
            Act::Set(FieldValue(Value::Field(text))) if field_may_be_refused(text) => {
                serde_json::from_slice::<serde_json::Value>(text)
                    .err()
                    .map(|e| format!("field {:?}: invalid JSON: {e}", op.name))
            }
            _ => None,
        })
    }

    /// Two edits of one name (a rename's target counts): left to serde_json.
    fn conflicting(&self) -> bool {
        let n = self.ops.len() + self.more.len();
        if n <= 1 {
            return false;
        }
        let names = |op: &Op<'r>| {
            let to = match op.act {
                Act::Rename(to) => Some(to),
                _ => None,
            };
            [Some(op.name), to]
        };
        if self.more.is_empty() {
            let ops = &self.ops[..];
            for (i, a) in ops.iter().enumerate() {
                for b in &ops[i + 1..] {
                    if a.name == b.name {
                        return true;
                    }
                    let (at, bt) = (names(a)[1], names(b)[1]);
                    if at.is_some_and(|t| t == b.name || Some(t) == bt)
                        || bt.is_some_and(|t| t == a.name)
                    {
                        return true;
                    }
                }
            }
            return false;
        }
        for (i, a) in self.all().enumerate() {
            for b in self.all().skip(i + 1) {
                for x in names(a).into_iter().flatten() {
                    if names(b).into_iter().flatten().any(|y| x == y) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// The edit from the places the record kept, without another pass.
    fn splice(&self, known: &Known<'r>, buf: &mut Vec<u8>) -> Result<(), String> {
        let json = self.json;
        let spans = known.spans;
        // The edited members present (member, edit), and the edits whose
        // name is absent (a set appends).
        let mut edited = [(0usize, 0usize); INLINE];
        let mut count = 0;
        let mut absent = [false; INLINE];
        for (o, op) in self.ops[..].iter().enumerate() {
            let (at, twice) = known.find(json, op.name);
            if twice {
                return self.through_serde(buf);
            }
            if let Act::Rename(to) = op.act
                && at.is_some()
                && known.find(json, to).0.is_some()
            {
                return self.through_serde(buf);
            }
            match at {
                Some(m) => {
                    edited[count] = (m, o);
                    count += 1;
                }
                None => absent[o] = true,
            }
        }
        let edited = &mut edited[..count];
        edited.sort_unstable_by_key(|&(m, _)| m);

        let mut w = Writer::open(buf);
        // Where the run of untouched members not yet written starts.
        let mut from = spans.first().map(|s| s.key_start as usize);
        for &(m, o) in edited.iter() {
            let span = spans[m];
            if let Some(f) = from
                && f < span.key_start as usize
            {
                w.piece(&json[f..spans[m - 1].value_end as usize]);
            }
            // A removal needs no more of the member: its key's end and its
            // value's start are looked for only for the others.
            if !matches!(self.ops[o].act, Act::Remove) {
                w.edited(
                    json,
                    span.key_start as usize,
                    span.key_end(json),
                    span.value_start(json),
                    span.value_end as usize,
                    &self.ops[o].act,
                );
            }
            from = spans.get(m + 1).map(|s| s.key_start as usize);
        }
        if let Some(f) = from {
            w.piece(&json[f..known.outline.last]);
        }
        for (o, op) in self.ops[..].iter().enumerate() {
            if let Act::Set(value) = op.act
                && absent[o]
            {
                w.append(op.name, value);
            }
        }
        w.close();
        Ok(())
    }

    /// The edit in one pass over the record, checking it: `None` when the
    /// pass finds what it cannot settle (an edited key with an escape or
    /// given twice, a rename onto a key that is there too).
    fn stream(&self, buf: &mut Vec<u8>) -> Option<Result<(), String>> {
        let json = self.json;
        let n = self.ops.len() + self.more.len();
        // Per edit: seen its name, seen its rename's target.
        let mut seen = [(false, false); INLINE];
        let mut seen_more = vec![(false, false); self.more.len()];
        let mut undecided = false;
        let mut w = Writer::open(buf);
        let mut run: Option<(usize, usize)> = None;
        let walked = scan::walk(json, |m| {
            let mut hit = None;
            for (o, op) in self.all().enumerate() {
                let flags = if o < INLINE {
                    &mut seen[o]
                } else {
                    &mut seen_more[o - INLINE]
                };
                if scan::key_is(m.key, m.key_escaped, op.name) {
                    if m.key_escaped || flags.0 || flags.1 {
                        undecided = true;
                        return false;
                    }
                    flags.0 = true;
                    hit = Some(op);
                } else if let Act::Rename(to) = op.act
                    && scan::key_is(m.key, m.key_escaped, to)
                {
                    if m.key_escaped || flags.0 || flags.1 {
                        undecided = true;
                        return false;
                    }
                    flags.1 = true;
                }
            }
            match hit {
                None => {
                    run = Some(match run {
                        Some((start, _)) => (start, m.value_end),
                        None => (m.key_start, m.value_end),
                    });
                }
                Some(op) => {
                    if let Some((start, end)) = run.take() {
                        w.piece(&json[start..end]);
                    }
                    w.edited(
                        json,
                        m.key_start,
                        m.key_end,
                        m.value_start,
                        m.value_end,
                        &op.act,
                    );
                }
            }
            true
        });
        if undecided {
            return None;
        }
        if walked.is_none() {
            return Some(Err(refusal(json)));
        }
        if let Some((start, end)) = run {
            w.piece(&json[start..end]);
        }
        let flags = |o: usize| {
            if o < INLINE {
                seen[o]
            } else {
                seen_more[o - INLINE]
            }
        };
        for o in 0..n {
            let (name_seen, target_seen) = flags(o);
            let op = self.all().nth(o)?;
            match op.act {
                Act::Rename(_) if name_seen && target_seen => return None,
                Act::Set(value) if !name_seen => w.append(op.name, value),
                _ => {}
            }
        }
        w.close();
        Some(Ok(()))
    }

    /// The edit on a `serde_json::Map`: the reference, and the way for what a
    /// pass cannot settle.
    #[cold]
    fn through_serde(&self, buf: &mut Vec<u8>) -> Result<(), String> {
        let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(self.json)
            .map_err(|e| {
                if scan::walk(self.json, |_| true).is_none() {
                    refusal(self.json)
                } else {
                    format!("invalid JSON: {e}") // a lone surrogate, 1e400
                }
            })?;
        for op in self.all() {
            apply(&mut map, op);
        }
        serde_json::to_writer(buf, &map).map_err(|e| e.to_string())
    }
}

/// One edit on a map, as [`Edit`] documents it.
fn apply(map: &mut serde_json::Map<String, serde_json::Value>, op: &Op<'_>) {
    match op.act {
        Act::Set(value) => {
            map.insert(op.name.to_string(), value.to_value());
        }
        Act::Remove => {
            map.shift_remove(op.name);
        }
        Act::Rename(to) => {
            // In place, as the one-pass ways do: the field keeps its index
            // and any other field called `to` goes (a `Map`'s own
            // remove-then-insert would move it to the end).
            let Some(mut at) = map.keys().position(|k| k == op.name) else {
                return;
            };
            let Some(value) = map.shift_remove(op.name) else {
                return;
            };
            if let Some(other) = map.keys().position(|k| k == to) {
                map.shift_remove(to);
                at -= usize::from(other < at);
            }
            map.shift_insert(at, to.to_string(), value);
        }
    }
}

/// Writes an object: `{`, pieces separated by commas, `}`.
struct Writer<'b> {
    buf: &'b mut Vec<u8>,
    any: bool,
}

impl<'b> Writer<'b> {
    fn open(buf: &'b mut Vec<u8>) -> Self {
        buf.push(b'{');
        Writer { buf, any: false }
    }

    #[inline]
    fn comma(&mut self) {
        if self.any {
            self.buf.push(b',');
        }
        self.any = true;
    }

    /// Members copied as they are.
    #[inline]
    fn piece(&mut self, text: &[u8]) {
        self.comma();
        self.buf.extend_from_slice(text);
    }

    /// A member, edited.
    #[inline]
    fn edited(
        &mut self,
        json: &[u8],
        key_start: usize,
        key_end: usize,
        value_start: usize,
        value_end: usize,
        act: &Act<'_>,
    ) {
        match *act {
            Act::Remove => {}
            Act::Set(value) => {
                self.comma();
                self.buf.extend_from_slice(&json[key_start..value_start]);
                value.write(self.buf);
            }
            Act::Rename(to) => {
                self.comma();
                write_key(self.buf, to);
                self.buf.extend_from_slice(&json[key_end..value_end]);
            }
        }
    }

    /// A new member.
    #[inline(always)]
    fn append(&mut self, name: &str, value: FieldValue<'_>) {
        self.comma();
        write_key(self.buf, name);
        self.buf.push(b':');
        value.write(self.buf);
    }

    fn close(self) {
        self.buf.push(b'}');
    }
}

/// A key, quoted and escaped as serde_json writes it.
#[inline(always)]
fn write_key(buf: &mut Vec<u8>, name: &str) {
    if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *buf, name);
    }
}

/// A new JSON object written straight into an [`Output`]: made by
/// [`Output::object`], filled with [`field`](Self::field), emitted with
/// [`push`](Self::push). Dropped without `push`, it leaves `out` as it was.
///
/// ```
/// use sluice_plugin_sdk::Output;
///
/// let mut out = Output::new();
/// out.object().field("carrier", "UA").field("delay", 15).field("note", None::<&str>).push(None, 0);
/// assert_eq!(out.events.get(0).unwrap().value(), br#"{"carrier":"UA","delay":15,"note":null}"#);
/// ```
#[derive(Debug)]
pub struct ObjectWriter<'o> {
    out: &'o mut Output,
    start: usize,
    done: bool,
}

impl Output {
    /// Starts a new event whose value is a JSON object (see [`ObjectWriter`]).
    pub fn object(&mut self) -> ObjectWriter<'_> {
        let start = self.events.values_len();
        self.events.values_mut().push(b'{');
        ObjectWriter {
            out: self,
            start,
            done: false,
        }
    }
}

impl ObjectWriter<'_> {
    /// Appends field `name` with `value` (the caller keeps names unique).
    pub fn field<'v>(&mut self, name: &str, value: impl Into<FieldValue<'v>>) -> &mut Self {
        let buf = self.out.events.values_mut();
        if buf.len() > self.start + 1 {
            buf.push(b',');
        }
        write_key(buf, name);
        buf.push(b':');
        value.into().write(buf);
        self
    }

    /// Emits the object as an event with `key` and event time `timestamp_ms`.
    pub fn push(&mut self, key: Option<&[u8]>, timestamp_ms: i64) {
        if self.done {
            return;
        }
        self.out.events.values_mut().push(b'}');
        self.out
            .events
            .close_value(key, timestamp_ms, std::iter::empty());
        self.done = true;
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.out.events.values_mut().truncate(self.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use proptest::prelude::*;
    use serde_json::{Map, Value as Json};

    const FLIGHT: &str = r#"{"year":2013,"carrier":"UA","flight":1545,"tailnum":"N14228","dep_delay":2,"arr_delay":-11,"event_time":"2013-01-01T10:17:00.000Z"}"#;

    fn edited(json: &str, names: &[&str], f: impl Fn(&mut Edit<'_>)) -> String {
        let names: Vec<&str> = names.to_vec();
        let mut buf = Vec::new();
        match names.len() {
            0 => {
                let batch = Batch::from_lines(json);
                let mut e = batch.get(0).unwrap().edit();
                f(&mut e);
                e.write(&mut buf).unwrap();
            }
            _ => {
                let mut padded = [""; 4];
                padded[..names.len()].copy_from_slice(&names);
                let record = Record::parse(json.as_bytes(), &padded).unwrap();
                let mut e = record.edit();
                f(&mut e);
                e.write(&mut buf).unwrap();
            }
        }
        String::from_utf8(buf).unwrap()
    }

    /// The same bytes from a record's edit (a splice) and from an event's
    /// (a pass that writes as it reads).
    fn both(json: &str, names: &[&str], f: impl Fn(&mut Edit<'_>) + Copy) -> String {
        let spliced = edited(json, names, f);
        let streamed = edited(json, &[], f);
        assert_eq!(spliced, streamed, "{json}");
        spliced
    }

    /// An edit finds fields not named among up to 32 members by their key's
    /// length, eight at a time: every member of a wide record, a key given
    /// twice, absent names of every length and keys of 255 bytes and more.
    #[test]
    fn edits_find_unnamed_fields_among_many_members() {
        let long = "k".repeat(300);
        let mut keys: Vec<String> = (0..26)
            .map(|i| "x".repeat(1 + i % 9) + &i.to_string())
            .collect();
        keys.push(keys[3].clone()); // given twice
        keys.push(long.clone());
        keys.push("k".repeat(255));
        keys.push("k".repeat(254));
        let json = format!(
            "{{{}}}",
            keys.iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut names: Vec<String> = keys.clone();
        names.extend((0..12).map(|n| "y".repeat(n)));
        names.push("k".repeat(256));
        // Names that share a key's tag (length mod 32, first byte mod 8)
        // and are not that key.
        names.extend([
            "xxxx".to_string(),
            "pxx".to_string(),
            "x".repeat(33),
            "xxx\u{e9}".to_string(),
        ]);
        check_edits(&json, &names);

        // A name that is a key's text and what follows it, up to a quote, and
        // has the key's tag (34 bytes, as "ab"): set, it is a new member.
        let second = "c".repeat(27);
        let json = format!("{{\"ab\":1,\"{second}\":2}}");
        check_edits(&json, &[format!("ab\":1,\"{second}"), "ab\\".to_string()]);
    }

    /// A record's places come from the last record dropped: a shorter
    /// record after a longer one finds none of the longer one's members,
    /// and two records alive at once each keep their own.
    #[test]
    fn records_reuse_places_without_stale_members() {
        let long = format!(
            "{{{}}}",
            (0..20)
                .map(|i| format!("\"k{i:02}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let edit = |json: &str, f: &dyn Fn(&mut Edit<'_>)| {
            let record = Record::parse(json.as_bytes(), &["x"]).unwrap();
            let mut e = record.edit();
            f(&mut e);
            let mut buf = Vec::new();
            e.write(&mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        // The long record's places are given back, then the short one's
        // take them: `k05` (its tag and its place are still there) is absent.
        assert!(
            edit(&long, &|e| {
                e.remove("k05");
            })
            .contains("\"k04\":4,\"k06\":6")
        );
        assert_eq!(
            edit(r#"{"x":1}"#, &|e| {
                e.remove("k05");
            }),
            r#"{"x":1}"#
        );
        assert_eq!(
            edit(r#"{"x":1}"#, &|e| {
                e.set("k05", 2);
            }),
            r#"{"x":1,"k05":2}"#
        );
        assert_eq!(
            edit(r#"{"k05":7,"x":1}"#, &|e| {
                e.rename("k05", "y");
            }),
            r#"{"y":7,"x":1}"#
        );
        // Two at once: the second makes places of its own.
        let a = Record::parse(long.as_bytes(), &["k00"]).unwrap();
        let b = Record::parse(br#"{"k19":"b"}"#, &["k00"]).unwrap();
        let (mut wa, mut wb) = (Vec::new(), Vec::new());
        a.edit().set("k19", "a").write(&mut wa).unwrap();
        b.edit().remove("k19").write(&mut wb).unwrap();
        assert!(
            String::from_utf8(wa)
                .unwrap()
                .ends_with(r#""k18":18,"k19":"a"}"#)
        );
        assert_eq!(wb, b"{}");
    }

    /// Removes and sets each name in `json`, through a record that names
    /// none of them (its edit a splice) and through an event's edit (one
    /// pass), against the same edits of a `serde_json::Map`, in order.
    fn check_edits(json: &str, names: &[String]) {
        let ordered = |text: &str| -> Vec<(String, Json)> {
            serde_json::from_str::<Map<String, Json>>(text)
                .unwrap()
                .into_iter()
                .collect()
        };
        for name in names {
            // An edit keeps the names it is given: `both` wants them for
            // every lifetime.
            let name: &'static str = Box::leak(name.clone().into_boxed_str());
            let mut want: Map<String, Json> = serde_json::from_str(json).unwrap();
            want.shift_remove(name);
            let removed = both(json, &["not named"], |e| {
                e.remove(name);
            });
            assert_eq!(
                ordered(&removed),
                want.clone().into_iter().collect::<Vec<_>>(),
                "{name}"
            );
            let mut want: Map<String, Json> = serde_json::from_str(json).unwrap();
            want.insert(name.to_string(), Json::Bool(true));
            let set = both(json, &["not named"], |e| {
                e.set(name, true);
            });
            assert_eq!(
                ordered(&set),
                want.into_iter().collect::<Vec<_>>(),
                "{name}"
            );
        }
    }

    #[test]
    fn edits_keep_untouched_bytes_and_order() {
        let all = ["tailnum", "dep_delay", "gain", "year"];
        assert_eq!(
            both(FLIGHT, &all, |e| {
                e.set("gain", 13).remove("tailnum").set("dep_delay", "late");
            }),
            r#"{"year":2013,"carrier":"UA","flight":1545,"dep_delay":"late","arr_delay":-11,"event_time":"2013-01-01T10:17:00.000Z","gain":13}"#
        );
        // The first and the last member removed, whitespace kept inside.
        assert_eq!(
            both(
                r#" { "a" : 1 , "b" : [ 2 ] , "c" : 3 } "#,
                &["a", "c"],
                |e| {
                    e.remove("a").remove("c");
                }
            ),
            r#"{"b" : [ 2 ]}"#
        );
        assert_eq!(
            both(r#"{"a":1}"#, &["a"], |e| {
                e.remove("a");
            }),
            "{}"
        );
        assert_eq!(
            both("{}", &["a"], |e| {
                e.set("a", None::<i64>).set("b", 1.5);
            }),
            r#"{"a":null,"b":1.5}"#
        );
        assert_eq!(
            both(r#"{"a":1,"b":2}"#, &["a", "z"], |e| {
                e.rename("a", "z");
            }),
            r#"{"z":1,"b":2}"#
        );
        assert_eq!(
            both(r#"{"a":1,"b":2}"#, &["b"], |e| {
                e.set("b", FieldValue::json(br#" {"x": [1]} "#).unwrap())
                    .set("s", "q\"\n\u{e9}");
            }),
            "{\"a\":1,\"b\":{\"x\": [1]},\"s\":\"q\\\"\\n\u{e9}\"}"
        );
        // Whitespace around a JSON value is JSON's: a form feed is not.
        for (text, ok) in [
            (&b" \t1\r\n"[..], true),
            (b"\x0c1", false),
            (b"1\x0c", false),
            (b" ", false),
            (b"", false),
        ] {
            assert_eq!(FieldValue::json(text).is_ok(), ok, "{text:?}");
            assert_eq!(
                serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok(),
                ok,
                "{text:?}"
            );
        }
        // What a `serde_json::Value` refuses, though serde_json skips it:
        // refused here, so the splice and the `Map` path cannot differ.
        let long = "9".repeat(400);
        for text in [
            "1e400",
            "[1, -1E999]",
            "{\"x\":0.5e+400}",
            long.as_str(),
            "\"\\ud800\"",
            "1e300",
            "\"1e400\"",
            "\"\\u00e9 \\ud83d\\ude00\"",
            "[\"\\\\u\", 12.5]",
            &"9".repeat(300),
        ] {
            let value = serde_json::from_slice::<Json>(text.as_bytes());
            assert_eq!(
                FieldValue::json(text.as_bytes()).is_ok(),
                value.is_ok(),
                "{text}"
            );
            if let Ok(v) = value {
                assert_eq!(
                    FieldValue::json(text.as_bytes()).unwrap().to_value(),
                    v,
                    "{text}"
                );
            }
        }
        assert!(
            FieldValue::json(b"1e400")
                .unwrap_err()
                .contains("number out of range")
        );
        // 126 levels below a record's member are what serde_json reads; 127
        // it reads alone, not in a record.
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(FieldValue::json(nested(126).as_bytes()).is_ok());
        let record = format!("{{\"k\":{}}}", nested(126));
        assert!(serde_json::from_str::<Json>(&record).is_ok());
        let record = format!("{{\"k\":{}}}", nested(127));
        assert!(serde_json::from_str::<Json>(&record).is_err());
        assert!(
            FieldValue::json(nested(127).as_bytes())
                .unwrap_err()
                .contains("nested too deeply")
        );

        // More members than a record keeps the places of: a second pass.
        let wide: String = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let want = wide
            .replace("\"k35\":35,", "")
            .replace("\"k3\":3", "\"k3\":true");
        assert_eq!(
            both(&wide, &["k0"], |e| {
                e.remove("k35").set("k3", true);
            }),
            want
        );
        // A rename to the same name is no edit: the bytes as they were, on
        // both paths (it once went through a `Map` on one: `1500.0`).
        assert_eq!(
            both(r#"{"a": 1.5e3,"b":2}"#, &["z"], |e| {
                e.rename("a", "a");
            }),
            r#"{"a": 1.5e3,"b":2}"#
        );
        // Nothing edited: the members as they were, the outside trimmed.
        assert_eq!(both(" {\"a\" :1} \n", &["a"], |_| {}), "{\"a\" :1}");
    }

    #[test]
    fn what_one_pass_cannot_settle_goes_through_serde_json() {
        // An escaped key edited, a key given twice, a rename onto a key that
        // is there; what serde_json writes, member for member (a renamed
        // field keeps its place there too).
        type Case = (&'static str, fn(&mut Edit<'_>), &'static str);
        let cases: [Case; 7] = [
            (
                r#"{"\u0061":1,"b":2}"#,
                |e| {
                    e.set("a", 5);
                },
                r#"{"a":5,"b":2}"#,
            ),
            (
                r#"{"a":1,"b":2,"a":3}"#,
                |e| {
                    e.remove("a");
                },
                r#"{"b":2}"#,
            ),
            (
                r#"{"a":1,"b":2}"#,
                |e| {
                    e.rename("a", "b");
                },
                r#"{"b":1}"#,
            ),
            (
                r#"{"a":1,"b":2}"#,
                |e| {
                    e.set("a", 5).rename("a", "c").set("a", 6);
                },
                r#"{"c":5,"b":2,"a":6}"#,
            ),
            // serde_json keeps a twice-given key at its first place.
            (
                r#"{"a":1,"a":3,"b":2}"#,
                |e| {
                    e.rename("a", "c");
                },
                r#"{"c":3,"b":2}"#,
            ),
            (
                r#"{"a":1,"b":2,"c":3}"#,
                |e| {
                    e.rename("a", "c");
                },
                r#"{"c":1,"b":2}"#,
            ),
            (
                r#"{"c":0,"a":1,"b":2}"#,
                |e| {
                    e.rename("a", "c");
                },
                r#"{"c":1,"b":2}"#,
            ),
        ];
        for (json, f, want) in cases {
            for names in [&["a", "b", "c"][..], &[]] {
                assert_eq!(edited(json, names, f), want, "{json} {names:?}");
            }
        }
    }

    #[test]
    fn refusals_give_serde_json_reasons() {
        let batch = Batch::from_lines("[1]\n{\"a\":\n{\"a\":1}x\n{\"a\":1}");
        let mut out = Output::new();
        for event in &batch {
            event.edit().set("b", true).push_or_reject(&mut out);
        }
        let reasons: Vec<&str> = out.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons[0], "not a JSON object");
        assert!(
            reasons[1].starts_with("invalid JSON: EOF"),
            "{}",
            reasons[1]
        );
        assert!(
            reasons[2].starts_with("invalid JSON: trailing"),
            "{}",
            reasons[2]
        );
        assert_eq!(reasons.len(), 3);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events.get(0).unwrap().value(), br#"{"a":1,"b":true}"#);
        assert_eq!(
            batch.get(0).unwrap().record(&["a"]).unwrap_err(),
            reasons[0]
        );
    }

    /// A value set from a field is refused when a `serde_json::Value`
    /// refuses it, on every path, with serde_json's reason; other fields'
    /// text is copied as it is.
    #[test]
    fn values_from_fields_are_refused_as_serde_json_refuses_them() {
        // (record, field to copy into "b": its text, what serde_json says)
        for (json, from) in [
            (r#"{"a":1e400,"b":0}"#, "a"),
            (r#"{"a":"\ud800","b":0}"#, "a"),
            (r#"{"a":[1,-1E999],"b":0}"#, "a"),
            (r#"{"a":1.5e3,"b":0}"#, "a"),
            (r#"{"a":"1e400","b":0}"#, "a"),
            (r#"{"a":"\u00e9","b":0}"#, "a"),
        ] {
            let text = Record::parse(json.as_bytes(), &[from]).unwrap().fields()[0]
                .unwrap()
                .raw();
            let want = serde_json::from_slice::<Json>(text)
                .map_err(|e| format!("field \"b\": invalid JSON: {e}"));
            let edited = |names: &[&str], twice: bool| -> Result<String, String> {
                let record = match names {
                    [] => Record::parse(json.as_bytes(), &["a", "b"]).unwrap(),
                    _ => Record::parse(json.as_bytes(), &["a", "x"]).unwrap(),
                };
                let field = record.fields()[0];
                let mut edit = record.edit();
                edit.set("b", field);
                if twice {
                    // Two edits of "b": through a `serde_json::Map`.
                    edit.set("b", field);
                }
                let mut buf = Vec::new();
                edit.write(&mut buf)?;
                Ok(String::from_utf8(buf).unwrap())
            };
            // The event's one-pass edit too.
            let batch = Batch::from_lines(json);
            let event = batch.get(0).unwrap();
            let record = event.record(&["a"]).unwrap();
            let mut out = Output::new();
            event
                .edit()
                .set("b", record.fields()[0])
                .push_or_reject(&mut out);
            for (way, got) in [
                ("splice, named", edited(&[], false)),
                ("splice, not named", edited(&["x"], false)),
                ("through a map", edited(&[], true)),
                (
                    "one pass",
                    match out.rejected.first() {
                        Some(r) => Err(r.reason.clone()),
                        None => Ok(
                            String::from_utf8(out.events.get(0).unwrap().value().to_vec()).unwrap(),
                        ),
                    },
                ),
            ] {
                match (&want, got) {
                    (Err(want), Err(got)) => assert_eq!(&got, want, "{json} {way}"),
                    (Ok(value), Ok(got)) => {
                        let got: Json = serde_json::from_str(&got).unwrap();
                        assert_eq!(&got["b"], value, "{json} {way}");
                    }
                    (want, got) => panic!("{json} {way}: {got:?}, want {want:?}"),
                }
            }
        }
    }

    /// `scan::fields` does not check values as UTF-8: such a field's text is
    /// refused on every path too, with serde_json's reason.
    #[test]
    fn values_from_fields_that_are_not_utf8_are_refused() {
        let [a] = scan::fields(b"{\"a\":\"\xff\"}", &["a"]).unwrap();
        let a = a.unwrap();
        let want = serde_json::from_slice::<Json>(a.raw())
            .map(|_| ())
            .map_err(|e| format!("field \"b\": invalid JSON: {e}"));
        assert!(want.is_err());
        let json = br#"{"b":0,"c":1}"#;
        for (names, twice) in [(["b"], false), (["x"], false), (["b"], true)] {
            let record = Record::parse(json, &names).unwrap();
            let mut edit = record.edit();
            edit.set("b", a);
            if twice {
                edit.set("b", a); // through a `serde_json::Map`
            }
            assert_eq!(edit.write(&mut Vec::new()), want, "{names:?} {twice}");
        }
        let batch = Batch::from_lines(std::str::from_utf8(json).unwrap());
        let event = batch.get(0).unwrap();
        assert_eq!(event.edit().set("b", a).write(&mut Vec::new()), want);
    }

    /// A record dropped while its thread's locals are torn down (kept in
    /// another thread-local) gives its places back to no one, and does not
    /// abort the process.
    #[test]
    fn a_record_in_a_thread_local_outlives_the_spare() {
        use std::cell::RefCell;
        thread_local! {
            static KEEP: RefCell<Option<Record<'static, 1>>> = const { RefCell::new(None) };
        }
        std::thread::spawn(|| {
            // KEEP first, so that it is torn down after the spare.
            KEEP.with(|_| ());
            let kept = Record::parse(br#"{"a":1}"#, &["a"]).unwrap();
            drop(Record::parse(br#"{"b":1}"#, &["b"]).unwrap());
            KEEP.with(|k| *k.borrow_mut() = Some(kept));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn push_to_keeps_key_time_and_headers() {
        let mut batch = Batch::new();
        batch.push(Some(b"k"), br#"{"a":1}"#, 42);
        batch.push_header("h", b"v");
        let event = batch.get(0).unwrap();
        let mut out = Output::new();
        event
            .record(&["a"])
            .unwrap()
            .edit()
            .set("a", 2)
            .push_to(&mut out)
            .unwrap();
        let got = out.events.get(0).unwrap();
        assert_eq!(got.value(), br#"{"a":2}"#);
        assert_eq!((got.key(), got.timestamp_ms()), (Some(&b"k"[..]), 42));
        assert_eq!(got.headers().collect::<Vec<_>>(), [("h", &b"v"[..])]);
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        for depth in [125, 126, 127, 128, 129] {
            let json = format!(
                "{}{}",
                "{\"a\":".repeat(depth),
                "1".to_string() + &"}".repeat(depth)
            );
            let serde = serde_json::from_str::<Json>(&json).is_ok();
            let ours = Record::parse(json.as_bytes(), &["a"]).is_ok();
            assert_eq!(ours, serde, "depth {depth}");
        }
    }

    #[test]
    fn typed_reads_and_pointers() {
        let json = br#"{"s":"a\u00e9\n","n":-12,"u":18446744073709551615,"f":2.5e3,"b":true,"z":null,"o":{"x":[10,{"y/z":"deep"}]}}"#;
        let record = Record::parse(json, &["s", "n", "u", "f", "b", "z", "o", "missing"]).unwrap();
        let [s, n, u, f, b, z, o, missing] = record.fields();
        assert_eq!(s.unwrap().str().unwrap(), "a\u{e9}\n");
        assert_eq!(s.unwrap().as_str(), None);
        assert_eq!(n.unwrap().as_i64(), Some(-12));
        assert_eq!(n.unwrap().as_u64(), None);
        assert_eq!(u.unwrap().as_u64(), Some(u64::MAX));
        assert_eq!(f.unwrap().as_f64(), Some(2500.0));
        assert_eq!(f.unwrap().as_i64(), None);
        assert_eq!(b.unwrap().as_bool(), Some(true));
        assert!(z.unwrap().is_null());
        assert_eq!(missing, None);
        assert_eq!(
            o.unwrap().pointer("/x/1/y~1z").unwrap().str().unwrap(),
            "deep"
        );
        assert_eq!(
            record.as_field().pointer("/o/x/0").unwrap().as_i64(),
            Some(10)
        );
        assert_eq!(record.as_field().pointer("/o/x/2"), None);
        assert_eq!(record.as_field().pointer("/o/x/01"), None);
        assert_eq!(record.field("n").unwrap().raw(), b"-12");
    }

    #[test]
    fn object_writer_rolls_back_when_dropped() {
        let mut out = Output::new();
        {
            let mut o = out.object();
            o.field("a", 1);
        }
        out.object()
            .field("a", 2)
            .field("b\"", "x")
            .push(Some(b"k"), 7);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events.get(0).unwrap().value(), br#"{"a":2,"b\"":"x"}"#);
        assert_eq!(out.events.values_len(), 17);
    }

    /// Every one-byte change of a record: accepted exactly when serde_json
    /// accepts it as an object of UTF-8 text.
    #[test]
    fn accepts_what_serde_json_accepts() {
        let base = br#"{"a":[1,-2.5e3,{"b":null}],"c\u0041":"\u00e9\"x","d":true}"#;
        let mut accepted = 0;
        for at in 0..base.len() {
            for b in [
                b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'-', b'.', b'e',
                b'u', 0x01, 0xc3, 0xff,
            ] {
                let mut input = base.to_vec();
                input[at] = b;
                let mut shorter = base.to_vec();
                shorter.remove(at);
                for input in [input, shorter] {
                    let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&input).is_ok()
                        && std::str::from_utf8(&input).is_ok()
                        && input.trim_ascii_start().first() == Some(&b'{');
                    let ours = Record::parse(&input, &["a"]);
                    assert_eq!(ours.is_ok(), serde, "{}", String::from_utf8_lossy(&input));
                    accepted += usize::from(serde);
                }
            }
        }
        assert!(accepted > 100, "{accepted}");
    }

    // ---- Property tests: random records and edits, serde_json the oracle.

    const KEYS: [&str; 8] = ["a", "b", "c", "ab", "\u{e9}", "q\"", "t\\n", "x y"];

    fn leaf() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Json::from),
            "[a-z\"\\\\/\u{e9}\u{1F600}\n\t\u{1} ]{0,6}".prop_map(Json::from),
        ]
    }

    fn value() -> impl Strategy<Value = Json> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..4).prop_map(
                    |members| Json::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    )
                ),
            ]
        })
    }

    /// JSON text of `v` with choices from `seed`: whitespace, `\u` escapes
    /// (surrogate pairs above U+FFFF), `\/`.
    fn roll(seed: &mut u64, n: u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) % n
    }

    fn write(v: &Json, seed: &mut u64, out: &mut String) {
        let ws = |out: &mut String, r: u64| out.push_str(["", "", " ", "\n\t "][r as usize % 4]);
        match v {
            Json::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match (c, roll(seed, 4)) {
                        ('"', _) => out.push_str("\\\""),
                        ('\\', _) => out.push_str("\\\\"),
                        ('/', 0) => out.push_str("\\/"),
                        (c, 0) | (c @ '\0'..='\u{1f}', _) => {
                            let mut units = [0u16; 2];
                            for u in c.encode_utf16(&mut units) {
                                out.push_str(&format!("\\u{u:04X}"));
                            }
                        }
                        (c, _) => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, roll(seed, 4));
                    write(item, seed, out);
                }
                ws(out, roll(seed, 4));
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (k, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, roll(seed, 4));
                    write(&Json::String(k.clone()), seed, out);
                    ws(out, roll(seed, 4));
                    out.push(':');
                    write(item, seed, out);
                }
                ws(out, roll(seed, 4));
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// Equal, floats within an ulp or so: serde_json without
    /// `float_roundtrip` may read a float's text an ulp off, and the
    /// serde_json path writes what it read.
    fn same(a: &Json, b: &Json) -> bool {
        match (a, b) {
            (Json::Number(x), Json::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
            }
            (Json::Array(x), Json::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            // Member for member, in order.
            (Json::Object(x), Json::Object(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((k, v), (l, w))| k == l && same(v, w))
            }
            _ => a == b,
        }
    }

    #[derive(Debug, Clone)]
    enum TestOp {
        Set(&'static str, Json),
        Remove(&'static str),
        Rename(&'static str, &'static str),
    }

    fn op() -> impl Strategy<Value = TestOp> {
        let key = || prop::sample::select(&KEYS[..]);
        // Floats set by an edit are written by ryu and read back by
        // serde_json, which may be an ulp off: exact binary fractions only.
        let small = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<i32>().prop_map(|n| Json::from(f64::from(n) / 8.0)),
            "[a-z\"\\\\\u{e9}\n]{0,4}".prop_map(Json::from),
            value(),
        ];
        prop_oneof![
            (key(), small).prop_map(|(k, v)| TestOp::Set(k, v)),
            key().prop_map(TestOp::Remove),
            (key(), key()).prop_map(|(a, b)| TestOp::Rename(a, b)),
        ]
    }

    fn apply_ops<'e>(e: &mut Edit<'e>, ops: &'e [TestOp], texts: &'e [String]) {
        for (op, text) in ops.iter().zip(texts) {
            match op {
                TestOp::Set(k, Json::Null) => e.set(k, ()),
                TestOp::Set(k, Json::Bool(b)) => e.set(k, *b),
                TestOp::Set(k, Json::Number(n)) if n.is_i64() => e.set(k, n.as_i64().unwrap()),
                TestOp::Set(k, Json::Number(n)) if n.is_u64() => e.set(k, n.as_u64().unwrap()),
                TestOp::Set(k, Json::Number(n)) => e.set(k, n.as_f64().unwrap()),
                TestOp::Set(k, Json::String(s)) => e.set(k, s.as_str()),
                TestOp::Set(k, _) => e.set(k, FieldValue::json(text.as_bytes()).unwrap()),
                TestOp::Remove(k) => e.remove(k),
                TestOp::Rename(a, b) => e.rename(a, b),
            };
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn reads_and_edits_agree_with_serde_json(
            members in prop::collection::vec((prop::sample::select(&KEYS[..]), value()), 0..7),
            ops in prop::collection::vec(op(), 0..5),
            seed in any::<u64>(),
            named in 0usize..=KEYS.len(),
        ) {
            // The record's text, perhaps with a key twice (serde_json keeps the last).
            let mut seed = seed;
            let mut text = String::from("{");
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 { text.push(','); }
                write(&Json::String(k.to_string()), &mut seed, &mut text);
                text.push(':');
                write(v, &mut seed, &mut text);
            }
            text.push('}');
            let oracle: Map<String, Json> = serde_json::from_str(&text).unwrap();

            // Reads.
            let record = Record::parse(text.as_bytes(), &KEYS).unwrap();
            for (name, field) in KEYS.iter().zip(record.fields()) {
                let want = oracle.get(*name);
                prop_assert_eq!(field.is_some(), want.is_some(), "{} in {}", name, text);
                let (Some(field), Some(want)) = (field, want) else { continue };
                let got: Json = serde_json::from_slice(field.raw()).unwrap();
                prop_assert_eq!(&got, want);
                let text = field.str();
                prop_assert_eq!(text.as_deref(), want.as_str());
                prop_assert_eq!(field.as_i64(), want.as_i64());
                prop_assert_eq!(field.as_u64(), want.as_u64());
                prop_assert_eq!(field.as_bool(), want.as_bool());
                prop_assert_eq!(field.is_null(), want.is_null());
                match (field.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => prop_assert!((a - b).abs() <= b.abs() * 1e-15, "{} {}", a, b),
                    (a, b) => prop_assert_eq!(a.is_some(), b.is_some()),
                }
                if let Json::Object(inner) = want {
                    for k in KEYS {
                        let got = field.get(k).map(|f| serde_json::from_slice::<Json>(f.raw()).unwrap());
                        prop_assert_eq!(got.as_ref(), inner.get(k));
                    }
                }
            }

            // Edits: the same ops on the oracle map.
            let texts: Vec<String> = ops.iter().map(|op| match op {
                TestOp::Set(_, v) => { let mut t = String::new(); write(v, &mut seed, &mut t); t }
                _ => String::new(),
            }).collect();
            let mut want = oracle.clone();
            for op in &ops {
                match op {
                    TestOp::Set(k, v) => { want.insert(k.to_string(), v.clone()); }
                    TestOp::Remove(k) => { want.shift_remove(*k); }
                    // In place: the pairs rebuilt, `a`'s key changed, any other `b` dropped.
                    TestOp::Rename(a, b) if want.contains_key(*a) => {
                        want = want.into_iter().filter_map(|(k, v)| match k {
                            k if k == *a => Some((b.to_string(), v)),
                            k if k == *b => None,
                            k => Some((k, v)),
                        }).collect();
                    }
                    TestOp::Rename(..) => {}
                }
            }
            let mut partial = KEYS;
            for k in partial.iter_mut().skip(named) { *k = "not a key"; }
            let partial_record = Record::parse(text.as_bytes(), &partial).unwrap();
            let batch = Batch::from_lines(&text.replace('\n', " "));
            let event = batch.get(0).unwrap();
            let outputs = [
                { let mut e = record.edit(); apply_ops(&mut e, &ops, &texts); let mut b = Vec::new(); e.write(&mut b).unwrap(); b },
                { let mut e = partial_record.edit(); apply_ops(&mut e, &ops, &texts); let mut b = Vec::new(); e.write(&mut b).unwrap(); b },
                { let mut e = event.edit(); apply_ops(&mut e, &ops, &texts); let mut b = Vec::new(); e.write(&mut b).unwrap(); b },
            ];
            for out in &outputs {
                let got: Map<String, Json> = serde_json::from_slice(out)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(out))))?;
                prop_assert!(
                    same(&Json::Object(got.clone()), &Json::Object(want.clone())),
                    "{} -> {}: {:?} != {:?}", text, String::from_utf8_lossy(out), got, want
                );
            }
        }
    }
}
