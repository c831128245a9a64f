//! A record as a tree only as deep as the edits need.
//!
//! [`Doc::parse`] reads the top level of a record (a JSON object) into its
//! members; each value stays its JSON text ([`Node::Raw`]) until an edit goes
//! inside it, which then reads that one level ([`Node::Object`],
//! [`Node::Array`]). [`Doc::write`] writes the tree back: the raw values byte
//! for byte as they were written (numbers, escapes and whitespace inside them
//! untouched), the levels that were read compactly.
//!
//! The top level is read with the SDK's scanner
//! ([`sluice_plugin_sdk::scan::members`]) when it settles it: no key with an
//! escape, no key given twice, valid UTF-8, nesting at most 64 deep. Otherwise
//! serde_json reads it, with the same result (a key given twice: the later
//! value, at the first one's place, as serde_json's map keeps it) or the error
//! message that refuses the record.

use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_plugin_sdk::scan::{self, Field};

/// One value of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    /// A value as its JSON text (valid JSON, no surrounding whitespace).
    Raw(Cow<'a, [u8]>),
    /// An object that was read: its members, in order (no key twice).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    /// An array that was read.
    Array(Vec<Node<'a>>),
}

/// The members of an object.
pub type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A record: a JSON object's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Doc<'a> {
    /// The top-level members, in order.
    pub members: Members<'a>,
}

/// Reusable buffers for [`Doc::parse`] (and [`Doc::new`]): keep one per
/// batch, and give each document back with [`Scratch::recycle`] when done,
/// so that records do not each allocate their member lists.
#[derive(Debug, Default)]
pub struct Scratch<'a> {
    found: Vec<(&'a str, Field<'a>)>,
    spare: Vec<Members<'a>>,
}

impl<'a> Scratch<'a> {
    /// Takes `doc`'s member list back for the next document.
    pub fn recycle(&mut self, doc: Doc<'a>) {
        let mut members = doc.members;
        members.clear();
        self.spare.push(members);
    }

    fn members(&mut self) -> Members<'a> {
        self.spare.pop().unwrap_or_default()
    }
}

impl<'a> Node<'a> {
    /// A node holding `value`'s JSON text.
    pub fn json(value: &serde_json::Value) -> Node<'static> {
        Node::Raw(Cow::Owned(
            serde_json::to_vec(value).expect("a JSON value serialises"),
        ))
    }

    /// A JSON string node holding `text`.
    pub fn string(text: &str) -> Node<'static> {
        let mut out = Vec::with_capacity(text.len() + 2);
        write_str(text, &mut out);
        Node::Raw(Cow::Owned(out))
    }

    /// The text of a string value, unescaped; `None` for other values.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        let Node::Raw(raw) = self else {
            return None;
        };
        let raw: &[u8] = raw;
        if raw.first() != Some(&b'"') {
            return None;
        }
        let inner = &raw[1..raw.len() - 1];
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Raw(raw) if raw.as_ref() == b"null")
    }

    /// Reads one level of a raw object or array (nothing for other values or
    /// levels already read).
    fn open(&mut self) -> Result<(), String> {
        let Node::Raw(raw) = self else {
            return Ok(());
        };
        let opened = match raw.first() {
            Some(b'{') => Node::Object(match raw {
                Cow::Borrowed(b) => parse_object(b, &mut Vec::new())?,
                Cow::Owned(b) => owned(parse_object(b, &mut Vec::new())?),
            }),
            Some(b'[') => Node::Array(match raw {
                Cow::Borrowed(b) => parse_array(b)?,
                Cow::Owned(b) => parse_array(b)?.into_iter().map(Node::into_owned).collect(),
            }),
            _ => return Ok(()),
        };
        *self = opened;
        Ok(())
    }

    /// The node with nothing borrowed.
    pub fn into_owned(self) -> Node<'static> {
        match self {
            Node::Raw(raw) => Node::Raw(Cow::Owned(raw.into_owned())),
            Node::Object(members) => Node::Object(owned(members)),
            Node::Array(items) => Node::Array(items.into_iter().map(Node::into_owned).collect()),
        }
    }

    /// Writes the value's JSON text to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(raw) => out.extend_from_slice(raw),
            Node::Object(members) => write_members(members, out),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
        }
    }

    /// The child named by `token`, if the node is an object or an array
    /// that has it (reading this level if it was raw).
    fn child(&mut self, token: &str) -> Result<Option<&mut Node<'a>>, String> {
        self.open()?;
        Ok(match self {
            Node::Object(members) => members.iter_mut().find(|(k, _)| k == token).map(|(_, v)| v),
            Node::Array(items) => index(token).and_then(|i| items.get_mut(i)),
            Node::Raw(_) => None,
        })
    }
}

fn owned(members: Members<'_>) -> Members<'static> {
    members
        .into_iter()
        .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
        .collect()
}

/// An array index token: digits, without a leading zero.
fn index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

impl<'a> Doc<'a> {
    /// Reads `json`, which must be one JSON object.
    ///
    /// # Errors
    /// Why the record is refused: `invalid JSON: …` (serde_json's message) or
    /// `not a JSON object: …`.
    pub fn parse(json: &'a [u8], scratch: &mut Scratch<'a>) -> Result<Self, String> {
        let mut members = scratch.members();
        parse_object_into(json, &mut scratch.found, &mut members)?;
        Ok(Doc { members })
    }

    /// An empty record (`{}`), its member list from `scratch`.
    pub fn new(scratch: &mut Scratch<'a>) -> Self {
        Doc {
            members: scratch.members(),
        }
    }

    /// The value at `tokens` (a pointer's), reading the levels it goes through.
    ///
    /// # Errors
    /// A level that cannot be read (not reached for valid records).
    pub fn get(&mut self, tokens: &[String]) -> Result<Option<&mut Node<'a>>, String> {
        let Some((first, rest)) = tokens.split_first() else {
            return Ok(None);
        };
        let Some(mut node) = self
            .members
            .iter_mut()
            .find(|(k, _)| k == first)
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        for token in rest {
            match node.child(token)? {
                Some(child) => node = child,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// The parent container of `tokens`' last token (`None` for a top-level
    /// pointer: the parent is the record itself), if it exists.
    fn parent(&mut self, tokens: &[String]) -> Result<Option<Option<&mut Node<'a>>>, String> {
        match tokens.len() {
            0 => Ok(None),
            1 => Ok(Some(None)),
            n => Ok(self.get(&tokens[..n - 1])?.map(|node| {
                // The caller opens it.
                Some(node)
            })),
        }
    }

    /// Removes and returns the value at `tokens`.
    ///
    /// # Errors
    /// A level that cannot be read.
    pub fn take(&mut self, tokens: &[String]) -> Result<Option<Node<'a>>, String> {
        let Some(last) = tokens.last() else {
            return Ok(None);
        };
        match self.parent(tokens)? {
            None => Ok(None),
            Some(None) => Ok(remove_member(&mut self.members, last)),
            Some(Some(parent)) => {
                parent.open()?;
                Ok(match parent {
                    Node::Object(members) => remove_member(members, last),
                    Node::Array(items) => index(last)
                        .filter(|&i| i < items.len())
                        .map(|i| items.remove(i)),
                    Node::Raw(_) => None,
                })
            }
        }
    }

    /// Sets the value at `tokens` to `value`: in place when it exists, else
    /// appended to its object (objects on the way are created; an array
    /// takes an index up to its length, which appends).
    ///
    /// # Errors
    /// A value on the way is neither an object nor an array, or an array
    /// index is not one.
    pub fn set(&mut self, tokens: &'a [String], value: Node<'a>) -> Result<(), String> {
        let Some((first, rest)) = tokens.split_first() else {
            return Err("cannot replace the whole record".into());
        };
        let slot = member_slot(&mut self.members, first);
        set_in(slot, rest, value, &tokens[..1])
    }

    /// Sets the top-level member `key` to `value`: in place when it exists,
    /// else appended.
    pub fn set_member(&mut self, key: Cow<'a, str>, value: Node<'a>) {
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.members.push((key, value)),
        }
    }

    /// Renames the value at `from` to `to` (nothing when `from` is absent).
    /// Within one object it keeps its place, and a member already named `to`
    /// is replaced; elsewhere it is removed and [`set`](Self::set) at `to`.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub fn rename(&mut self, from: &[String], to: &'a [String]) -> Result<(), String> {
        if from == to {
            return Ok(());
        }
        let (Some((old, from_parent)), Some((new, to_parent))) =
            (from.split_last(), to.split_last())
        else {
            return Ok(());
        };
        if from_parent == to_parent {
            let members = if from_parent.is_empty() {
                Some(&mut self.members)
            } else {
                match self.get(from_parent)? {
                    Some(node) => {
                        node.open()?;
                        match node {
                            Node::Object(members) => Some(members),
                            _ => None,
                        }
                    }
                    None => None,
                }
            };
            if let Some(members) = members {
                if let Some(at) = members.iter().position(|(k, _)| k == old) {
                    let at = match members.iter().position(|(k, _)| k == new) {
                        Some(there) => {
                            members.remove(there);
                            if there < at { at - 1 } else { at }
                        }
                        None => at,
                    };
                    members[at].0 = Cow::Borrowed(new);
                }
                return Ok(());
            }
        }
        match self.take(from)? {
            Some(value) => self.set(to, value),
            None => Ok(()),
        }
    }

    /// The record's JSON text, appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_members(&self.members, out);
    }
}

/// The member named `key` of `members`, created as `null` at the end when
/// absent.
fn member_slot<'m, 'a>(members: &'m mut Members<'a>, key: &'a str) -> &'m mut Node<'a> {
    let at = match members.iter().position(|(k, _)| k == key) {
        Some(at) => at,
        None => {
            members.push((Cow::Borrowed(key), Node::Raw(Cow::Borrowed(b"null"))));
            members.len() - 1
        }
    };
    &mut members[at].1
}

fn set_in<'a>(
    node: &mut Node<'a>,
    rest: &'a [String],
    value: Node<'a>,
    path: &[String],
) -> Result<(), String> {
    let Some((first, rest)) = rest.split_first() else {
        *node = value;
        return Ok(());
    };
    if node.is_null() {
        *node = Node::Object(Vec::new());
    }
    node.open()?;
    let at = || {
        path.iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect::<String>()
    };
    let path: Vec<String> = path.iter().chain([first]).cloned().collect();
    match node {
        Node::Object(members) => set_in(member_slot(members, first), rest, value, &path),
        Node::Array(items) => {
            let len = items.len();
            match index(first) {
                Some(i) if i < len => set_in(&mut items[i], rest, value, &path),
                Some(i) if i == len && rest.is_empty() => {
                    items.push(value);
                    Ok(())
                }
                _ => Err(format!(
                    "cannot set {}: `{first}` is not an index of the array at {} (length {len})",
                    at() + "/" + first,
                    at()
                )),
            }
        }
        Node::Raw(raw) => Err(format!(
            "cannot set {}/{first}: the value at {} is {}, not an object",
            at(),
            at(),
            kind_of(raw)
        )),
    }
}

fn kind_of(raw: &[u8]) -> &'static str {
    match raw.first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

fn remove_member<'a>(members: &mut Members<'a>, key: &str) -> Option<Node<'a>> {
    let at = members.iter().position(|(k, _)| k == key)?;
    Some(members.remove(at).1)
}

fn write_members(members: &Members<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(key, out);
        out.push(b':');
        value.write(out);
    }
    out.push(b'}');
}

/// `text` as a JSON string, as serde_json writes it.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("a string serialises");
    }
}

/// The members of the object `json`: the scanner's when it settles them,
/// else serde_json's.
fn parse_object<'a>(
    json: &'a [u8],
    found: &mut Vec<(&'a str, Field<'a>)>,
) -> Result<Members<'a>, String> {
    let mut members = Vec::new();
    parse_object_into(json, found, &mut members)?;
    Ok(members)
}

/// [`parse_object`] into `members` (cleared first).
fn parse_object_into<'a>(
    json: &'a [u8],
    found: &mut Vec<(&'a str, Field<'a>)>,
    members: &mut Members<'a>,
) -> Result<(), String> {
    members.clear();
    if scan::members(json, found).is_some() && !has_duplicate(found) {
        members.extend(
            found
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Node::Raw(Cow::Borrowed(v.raw())))),
        );
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    *members = de
        .deserialize_any(ObjectVisitor)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("not a JSON object: {e}"),
            _ => format!("invalid JSON: {e}"),
        })?;
    Ok(())
}

fn parse_array(json: &[u8]) -> Result<Vec<Node<'_>>, String> {
    let items: Vec<&RawValue> =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(items
        .into_iter()
        .map(|r| Node::Raw(Cow::Borrowed(r.get().as_bytes())))
        .collect())
}

/// Whether a key of `found` (from [`scan::members`]) is given twice. A
/// 256-bit filter on (length, first and last byte) sends only candidates to
/// an exact look-up.
pub fn has_duplicate(found: &[(&str, Field<'_>)]) -> bool {
    let mut seen = [0u64; 4];
    for (i, (key, _)) in found.iter().enumerate() {
        let b = key.as_bytes();
        let (first, last) = match b {
            [] => (0, 0),
            _ => (b[0], b[b.len() - 1]),
        };
        let h = (b.len() * 37 + usize::from(first) * 5 + usize::from(last)) & 255;
        let (word, bit) = (h / 64, 1u64 << (h % 64));
        if seen[word] & bit != 0 && found[..i].iter().any(|(k, _)| k == key) {
            return true;
        }
        seen[word] |= bit;
    }
    false
}

/// Reads an object's members as serde_json's map does: a key given twice
/// keeps its first place and takes the later value.
struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Members<'de> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            let node = Node::Raw(Cow::Borrowed(raw.get().as_bytes()));
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v = node,
                None => members.push((key, node)),
            }
        }
        Ok(members)
    }
}

/// A key, borrowed when it has no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pointer's tokens, for as long as any document borrows them.
    fn tokens(p: &str) -> &'static [String] {
        Box::leak(
            crate::pointer::Pointer::parse(p)
                .unwrap()
                .tokens()
                .to_vec()
                .into_boxed_slice(),
        )
    }

    fn edit(json: &str, f: impl FnOnce(&mut Doc<'_>)) -> String {
        let mut scratch = Scratch::default();
        let mut doc = Doc::parse(json.as_bytes(), &mut scratch).unwrap();
        f(&mut doc);
        let mut out = Vec::new();
        doc.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The serde_json path alone.
    fn slow(json: &[u8]) -> Result<Members<'_>, String> {
        let mut de = serde_json::Deserializer::from_slice(json);
        de.deserialize_any(ObjectVisitor)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn untouched_values_are_copied_byte_for_byte() {
        let json = r#" {"a" : 1.50, "b":{ "c" : [1, 2.0e1] ,"d":"\u00e9"}, "e":"x"} "#;
        assert_eq!(
            edit(json, |_| {}),
            r#"{"a":1.50,"b":{ "c" : [1, 2.0e1] ,"d":"\u00e9"},"e":"x"}"#
        );
        // An edit inside `b` reads that level only.
        assert_eq!(
            edit(json, |d| {
                d.set(tokens("/b/new"), Node::string("n")).unwrap();
            }),
            r#"{"a":1.50,"b":{"c":[1, 2.0e1],"d":"\u00e9","new":"n"},"e":"x"}"#
        );
    }

    #[test]
    fn take_set_rename() {
        let json = r#"{"a":1,"b":{"c":[10,20]},"z":0}"#;
        assert_eq!(
            edit(json, |d| {
                assert_eq!(
                    d.take(tokens("/b/c/1")).unwrap(),
                    Some(Node::Raw(Cow::Borrowed(b"20")))
                );
                assert_eq!(d.take(tokens("/nope/x")).unwrap(), None);
                assert_eq!(d.take(tokens("/a/x")).unwrap(), None);
            }),
            r#"{"a":1,"b":{"c":[10]},"z":0}"#
        );
        // In place within one object, replacing a member of the new name.
        assert_eq!(
            edit(json, |d| d.rename(tokens("/z"), tokens("/a")).unwrap()),
            r#"{"b":{"c":[10,20]},"a":0}"#
        );
        assert_eq!(
            edit(json, |d| d.rename(tokens("/a"), tokens("/y")).unwrap()),
            r#"{"y":1,"b":{"c":[10,20]},"z":0}"#
        );
        // Across objects: moved, objects created on the way.
        assert_eq!(
            edit(json, |d| d.rename(tokens("/a"), tokens("/m/n")).unwrap()),
            r#"{"b":{"c":[10,20]},"z":0,"m":{"n":1}}"#
        );
        assert_eq!(
            edit(json, |d| d.rename(tokens("/absent"), tokens("/q")).unwrap()),
            json
        );
        // Set: in place, appended, into an array; refused through a scalar.
        assert_eq!(
            edit(json, |d| {
                d.set(tokens("/a"), Node::string("A")).unwrap();
                d.set(tokens("/b/c/2"), Node::string("C")).unwrap();
                d.set(tokens("/n"), Node::string("N")).unwrap();
                let err = d.set(tokens("/z/q"), Node::string("Q")).unwrap_err();
                assert_eq!(
                    err,
                    "cannot set /z/q: the value at /z is a number, not an object"
                );
                let err = d.set(tokens("/b/c/9"), Node::string("Q")).unwrap_err();
                assert!(
                    err.contains("not an index of the array at /b/c (length 3)"),
                    "{err}"
                );
            }),
            r#"{"a":"A","b":{"c":[10,20,"C"]},"z":0,"n":"N"}"#
        );
    }

    #[test]
    fn strings_and_keys_with_escapes() {
        let json = r#"{"k\"ey":"a\nb","plain":"é"}"#;
        let mut scratch = Scratch::default();
        let mut doc = Doc::parse(json.as_bytes(), &mut scratch).unwrap();
        assert_eq!(doc.members[0].0, "k\"ey");
        assert_eq!(
            doc.get(tokens("/k\"ey"))
                .unwrap()
                .unwrap()
                .as_str()
                .unwrap(),
            "a\nb"
        );
        assert_eq!(
            doc.get(tokens("/plain"))
                .unwrap()
                .unwrap()
                .as_str()
                .unwrap(),
            "é"
        );
        let mut out = Vec::new();
        doc.write(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), json);
    }

    #[test]
    fn refusals() {
        let mut scratch = Scratch::default();
        for (json, want) in [
            ("[1]", "not a JSON object: invalid type: sequence"),
            ("{\"a\":1", "invalid JSON: EOF while parsing an object"),
            ("{\"a\":1} x", "invalid JSON: trailing characters"),
            ("\"s\"", "not a JSON object: invalid type: string"),
        ] {
            let err = Doc::parse(json.as_bytes(), &mut scratch).unwrap_err();
            assert!(err.starts_with(want), "{json}: {err}");
        }
    }

    /// The scanner's reading equals serde_json's on every one-byte change of
    /// a record (and keys given twice go to serde_json).
    #[test]
    fn fast_path_reads_as_serde_json() {
        let base: &[u8] = br#"{"year":2013,"dep_delay":-2,"carrier":"UA","nested":{"a":[1,2.5e-3,{"b":null}],"c":"\u00e9\"x"},"t":"2013-01-01T10:00:00Z","ok":true}"#;
        let mut inputs: Vec<Vec<u8>> = vec![
            br#"{"a":1,"b":2,"a":3}"#.to_vec(),
            br#"{"a":1,"a":{"x":1}}"#.to_vec(),
            b"{\"a\":\"\xff\"}".to_vec(),
            br#"{"year":1,"yeas":2,"yeat":3}"#.to_vec(),
        ];
        for at in 0..base.len() {
            for b in [
                b'"', b'\\', b'{', b'}', b',', b':', b' ', b'0', b'a', 0x01, 0xff,
            ] {
                let mut changed = base.to_vec();
                changed[at] = b;
                inputs.push(changed);
            }
        }
        inputs.push(base.to_vec());
        let mut agreed = 0;
        for input in &inputs {
            let mut scratch = Scratch::default();
            let fast = Doc::parse(input, &mut scratch).map(|d| d.members);
            let reference = slow(input);
            assert_eq!(
                fast.is_ok(),
                reference.is_ok(),
                "{}",
                String::from_utf8_lossy(input)
            );
            if let (Ok(a), Ok(b)) = (fast, reference) {
                assert_eq!(a, b, "{}", String::from_utf8_lossy(input));
                agreed += 1;
            }
        }
        assert!(agreed > 50, "{agreed}");
    }

    #[test]
    fn duplicate_filter_finds_every_duplicate() {
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let mut found = Vec::new();
        let json = format!(
            "{{{}}}",
            keys.iter()
                .map(|k| format!("\"{k}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        scan::members(json.as_bytes(), &mut found).unwrap();
        assert!(!has_duplicate(&found));
        for k in &keys {
            let twice = json.replacen('}', &format!(",\"{k}\":2}}"), 1);
            let mut found = Vec::new();
            scan::members(twice.as_bytes(), &mut found).unwrap();
            assert!(has_duplicate(&found), "{k}");
        }
    }
}
