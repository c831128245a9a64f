//! The packed micro-batch: one buffer per column instead of one allocation per event.
//!
//! This is the in-memory form of the WIT `event-batch` record. The host builds it
//! as records arrive, lowers it into a plugin with five copies whatever the batch
//! length, and the plugin reads each event as a borrowed [`Event`] view.

use serde::{Deserialize, Serialize};

/// A micro-batch of events: keys, values, event times and headers, packed.
///
/// Event `i`'s value is `values[value_ends[i-1]..value_ends[i]]` (0 for `i = 0`),
/// its key likewise. An empty key means "no key". Offsets are `u32`, so one batch
/// holds at most 4 GiB of values and 4 GiB of keys ([`Batch::push`] panics past
/// that; the host's batcher closes batches long before).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    values: Vec<u8>,
    value_ends: Vec<u32>,
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    timestamps: Vec<i64>,
    headers: Vec<Header>,
    /// The top-level members the host's scanner found in each event's value,
    /// four `u16` offsets each (see [`Batch::push_indexed`]); empty while no
    /// event has any.
    members: Vec<u16>,
    /// End (exclusive, in `u16`s) of each event's members in `members`;
    /// empty while no event has any.
    member_ends: Vec<u32>,
}

/// One header of one event (see the WIT `header` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Index of the event in its batch.
    pub index: u32,
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: Vec<u8>,
}

/// The columns of a [`Batch`], by value: how the host moves a batch into and out
/// of the generated WIT types without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchParts {
    /// All values, concatenated.
    pub values: Vec<u8>,
    /// End offset of each value in `values` (bytes, exclusive).
    pub value_ends: Vec<u32>,
    /// All keys, concatenated.
    pub keys: Vec<u8>,
    /// End offset of each key in `keys` (bytes, exclusive).
    pub key_ends: Vec<u32>,
    /// Event time of each event, ms since the Unix epoch.
    pub timestamps: Vec<i64>,
    /// Headers as (event index, name, value), sorted by event index.
    pub headers: Vec<(u32, String, Vec<u8>)>,
    /// The events' top-level members, four offsets each (see
    /// [`Batch::push_indexed`]), concatenated.
    pub members: Vec<u16>,
    /// End (exclusive, in `u16`s) of each event's members in `members`;
    /// empty when no event has any, else one per event.
    pub member_ends: Vec<u32>,
}

fn end(len: usize) -> u32 {
    u32::try_from(len).expect("a batch column grew past 4 GiB")
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `events` events and `bytes` bytes of values.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Batch {
            values: Vec::with_capacity(bytes),
            value_ends: Vec::with_capacity(events),
            keys: Vec::new(),
            key_ends: Vec::with_capacity(events),
            timestamps: Vec::with_capacity(events),
            headers: Vec::new(),
            members: Vec::new(),
            member_ends: Vec::new(),
        }
    }

    /// A batch of one keyless event per non-empty line of `text`, event time 0.
    /// Handy for unit tests: `Batch::from_lines("{\"a\":1}\n{\"a\":2}")`.
    pub fn from_lines(text: &str) -> Self {
        let mut batch = Batch::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            batch.push(None, line.as_bytes(), 0);
        }
        batch
    }

    /// Appends an event. A `None` or empty key both mean "no key".
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        self.values.extend_from_slice(value);
        self.value_ends.push(end(self.values.len()));
        if let Some(key) = key {
            self.keys.extend_from_slice(key);
        }
        self.key_ends.push(end(self.keys.len()));
        self.timestamps.push(timestamp_ms);
        if !self.member_ends.is_empty() {
            self.member_ends.push(end(self.members.len()));
        }
    }

    /// Appends an event with the top-level members a validating scan of its
    /// value found: four byte offsets into `value` per member, in order —
    /// the name's start and end (inside its quotes), the value's start and
    /// end — as package 0.3.0's `event-batch` carries them
    /// (`wit/0.3.0/plugin.wit`). [`Event::fields`] then reads them instead of
    /// scanning the value, so they must be true: the host pushes them only
    /// for a value its scanner checked to be one JSON object serde_json
    /// accepts, with no escaped member name.
    pub fn push_indexed(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        members: &[u16],
    ) {
        if self.member_ends.is_empty() {
            self.member_ends.resize(self.len(), 0);
        }
        self.members.extend_from_slice(members);
        self.values.extend_from_slice(value);
        self.value_ends.push(end(self.values.len()));
        if let Some(key) = key {
            self.keys.extend_from_slice(key);
        }
        self.key_ends.push(end(self.keys.len()));
        self.timestamps.push(timestamp_ms);
        self.member_ends.push(end(self.members.len()));
    }

    /// The members of event `index` (see [`push_indexed`](Self::push_indexed)):
    /// empty when it has none.
    pub(crate) fn members_of(&self, index: usize) -> &[u16] {
        // Checked, not indexed: a batch from the host is taken as it comes.
        let Some(&to) = self.member_ends.get(index) else {
            return &[];
        };
        let from = match index.checked_sub(1) {
            Some(before) => self.member_ends.get(before).copied().unwrap_or(0),
            None => 0,
        };
        self.members.get(from as usize..to as usize).unwrap_or(&[])
    }

    /// Adds a header to the event most recently pushed.
    ///
    /// # Panics
    /// When the batch is empty.
    pub fn push_header(&mut self, name: &str, value: &[u8]) {
        let index = self
            .len()
            .checked_sub(1)
            .expect("push_header on an empty batch");
        self.headers.push(Header {
            index: end(index),
            name: name.to_string(),
            value: value.to_vec(),
        });
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.value_ends.len()
    }

    /// Whether the batch has no event.
    pub fn is_empty(&self) -> bool {
        self.value_ends.is_empty()
    }

    /// Total bytes of all values.
    pub fn values_len(&self) -> usize {
        self.values.len()
    }

    /// Total bytes of all keys and values: what a `max_bytes` limit counts.
    pub fn byte_size(&self) -> usize {
        self.values.len() + self.keys.len()
    }

    /// Event `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Event<'_>> {
        (index < self.len()).then_some(Event { batch: self, index })
    }

    /// The events, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            batch: self,
            next: 0,
        }
    }

    /// Empties the batch, keeping its buffers' capacity.
    pub fn clear(&mut self) {
        self.values.clear();
        self.value_ends.clear();
        self.keys.clear();
        self.key_ends.clear();
        self.timestamps.clear();
        self.headers.clear();
        self.members.clear();
        self.member_ends.clear();
    }

    /// The values buffer, for writing a value in place; [`close_value`]
    /// makes what was written after the last event's end an event.
    ///
    /// [`close_value`]: Self::close_value
    pub(crate) fn values_mut(&mut self) -> &mut Vec<u8> {
        &mut self.values
    }

    /// Ends the event whose value was written into [`values_mut`] since the
    /// previous one.
    ///
    /// [`values_mut`]: Self::values_mut
    pub(crate) fn close_value<'h>(
        &mut self,
        key: Option<&[u8]>,
        timestamp_ms: i64,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) {
        self.value_ends.push(end(self.values.len()));
        if let Some(key) = key {
            self.keys.extend_from_slice(key);
        }
        self.key_ends.push(end(self.keys.len()));
        self.timestamps.push(timestamp_ms);
        if !self.member_ends.is_empty() {
            self.member_ends.push(end(self.members.len()));
        }
        for (name, value) in headers {
            self.push_header(name, value);
        }
    }

    /// Gives `key` to the events from index `from` on that have none (the
    /// keyed glue: a record emitted without a key gets its group's).
    pub(crate) fn fill_keys(&mut self, from: usize, key: &[u8]) {
        let n = self.len();
        if key.is_empty() || from >= n {
            return;
        }
        let base = if from == 0 {
            0
        } else {
            self.key_ends[from - 1] as usize
        };
        let mut prev = base;
        let keyless = self.key_ends[from..].iter().any(|&e| {
            let empty = e as usize == prev;
            prev = e as usize;
            empty
        });
        if !keyless {
            return;
        }
        let tail = self.keys.split_off(base);
        let mut prev = 0;
        for i in from..n {
            let e = self.key_ends[i] as usize - base;
            let own = &tail[prev..e];
            prev = e;
            self.keys
                .extend_from_slice(if own.is_empty() { key } else { own });
            self.key_ends[i] = end(self.keys.len());
        }
    }

    /// Builds a batch from columns the host made (well-formed; every
    /// accessor is bounds-checked anyway).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn from_parts_unchecked(parts: BatchParts) -> Self {
        Batch {
            values: parts.values,
            value_ends: parts.value_ends,
            keys: parts.keys,
            key_ends: parts.key_ends,
            timestamps: parts.timestamps,
            headers: parts
                .headers
                .into_iter()
                .map(|(index, name, value)| Header { index, name, value })
                .collect(),
            members: parts.members,
            member_ends: parts.member_ends,
        }
    }

    /// Appends a copy of `event` (key, value, event time, headers and
    /// members).
    pub fn push_event(&mut self, event: &Event<'_>) {
        let members = event.members();
        if members.is_empty() {
            self.push(event.key(), event.value(), event.timestamp_ms());
        } else {
            self.push_indexed(event.key(), event.value(), event.timestamp_ms(), members);
        }
        for (name, value) in event.headers() {
            self.push_header(name, value);
        }
    }

    /// Appends copies of `other`'s events `range` (keys, values, event times
    /// and headers), as [`push_event`](Self::push_event) on each would, with
    /// one copy per column instead of one per event: the host's worker moves
    /// a source's chunk into its batch this way.
    ///
    /// # Panics
    /// When `range` is not within `0..other.len()`, or a column would grow
    /// past 4 GiB.
    pub fn extend_from(&mut self, other: &Batch, range: std::ops::Range<usize>) {
        if range.is_empty() {
            assert!(range.start <= other.len(), "range past the batch's end");
            return;
        }
        let (first, last) = (range.start, range.end - 1);
        // Values, then keys: the bytes in one copy, the ends shifted.
        let append =
            |bytes: &mut Vec<u8>, ends: &mut Vec<u32>, from_bytes: &[u8], from_ends: &[u32]| {
                let from = if first == 0 { 0 } else { from_ends[first - 1] };
                let shift = i64::from(end(bytes.len())) - i64::from(from);
                bytes.extend_from_slice(&from_bytes[from as usize..from_ends[last] as usize]);
                ends.extend(
                    from_ends[range.clone()]
                        .iter()
                        .map(|&e| end((i64::from(e) + shift) as usize)),
                );
            };
        append(
            &mut self.values,
            &mut self.value_ends,
            &other.values,
            &other.value_ends,
        );
        append(
            &mut self.keys,
            &mut self.key_ends,
            &other.keys,
            &other.key_ends,
        );
        let at = self.len() - range.len();
        // Members, when the range has any: as the values, one copy and the
        // ends shifted (so that the result equals `push_event` of each).
        let (from, to) = if other.member_ends.is_empty() {
            (0, 0)
        } else {
            let from = if first == 0 {
                0
            } else {
                other.member_ends[first - 1]
            };
            (from, other.member_ends[last])
        };
        if to > from {
            if self.member_ends.is_empty() {
                self.member_ends.resize(at, 0);
            }
            let shift = i64::from(end(self.members.len())) - i64::from(from);
            self.members
                .extend_from_slice(&other.members[from as usize..to as usize]);
            self.member_ends.extend(
                other.member_ends[range.clone()]
                    .iter()
                    .map(|&e| end((i64::from(e) + shift) as usize)),
            );
        } else if !self.member_ends.is_empty() {
            let e = end(self.members.len());
            self.member_ends.resize(self.len(), e);
        }
        self.timestamps
            .extend_from_slice(&other.timestamps[range.clone()]);
        if !other.headers.is_empty() {
            let lo = other
                .headers
                .partition_point(|h| (h.index as usize) < first);
            let hi = other
                .headers
                .partition_point(|h| (h.index as usize) <= last);
            self.headers
                .extend(other.headers[lo..hi].iter().map(|h| Header {
                    index: end(h.index as usize - first + at),
                    name: h.name.clone(),
                    value: h.value.clone(),
                }));
        }
    }

    /// Key + value bytes of events `range` (what [`byte_size`](Self::byte_size)
    /// counts), from the offsets alone.
    ///
    /// # Panics
    /// When `range` is not within `0..self.len()`.
    pub fn byte_size_of(&self, range: std::ops::Range<usize>) -> usize {
        if range.is_empty() {
            return 0;
        }
        let span = |ends: &[u32]| {
            let from = if range.start == 0 {
                0
            } else {
                ends[range.start - 1]
            };
            (ends[range.end - 1] - from) as usize
        };
        span(&self.value_ends) + span(&self.key_ends)
    }

    /// Splits the batch into its columns, without copying.
    pub fn into_parts(self) -> BatchParts {
        BatchParts {
            values: self.values,
            value_ends: self.value_ends,
            keys: self.keys,
            key_ends: self.key_ends,
            timestamps: self.timestamps,
            headers: self
                .headers
                .into_iter()
                .map(|h| (h.index, h.name, h.value))
                .collect(),
            members: self.members,
            member_ends: self.member_ends,
        }
    }

    /// Builds a batch from its columns, without copying.
    ///
    /// # Errors
    /// When the columns disagree: lengths differ, offsets decrease or run past
    /// their buffer, or a header names an event that does not exist. The host checks
    /// every batch a plugin returns this way.
    pub fn from_parts(parts: BatchParts) -> Result<Self, String> {
        let n = parts.value_ends.len();
        if parts.key_ends.len() != n || parts.timestamps.len() != n {
            return Err(format!(
                "malformed batch: {n} value offsets, {} key offsets, {} timestamps",
                parts.key_ends.len(),
                parts.timestamps.len()
            ));
        }
        check_ends("value", &parts.value_ends, parts.values.len())?;
        check_ends("key", &parts.key_ends, parts.keys.len())?;
        let mut last = 0;
        for (index, _, _) in &parts.headers {
            if (*index as usize) >= n || *index < last {
                return Err(format!(
                    "malformed batch: header for event {index} (of {n}) out of order or range"
                ));
            }
            last = *index;
        }
        if !parts.member_ends.is_empty() {
            if parts.member_ends.len() != n {
                return Err("malformed batch: member offsets".into());
            }
            check_ends("member", &parts.member_ends, parts.members.len())?;
        }
        Ok(Batch {
            values: parts.values,
            value_ends: parts.value_ends,
            keys: parts.keys,
            key_ends: parts.key_ends,
            timestamps: parts.timestamps,
            headers: parts
                .headers
                .into_iter()
                .map(|(index, name, value)| Header { index, name, value })
                .collect(),
            members: parts.members,
            member_ends: parts.member_ends,
        })
    }
}

fn check_ends(what: &str, ends: &[u32], len: usize) -> Result<(), String> {
    let mut prev = 0;
    for &e in ends {
        if e < prev {
            return Err(format!("malformed batch: {what} offsets decrease"));
        }
        prev = e;
    }
    if prev as usize != len {
        return Err(format!(
            "malformed batch: {what} offsets end at {prev} but the buffer holds {len} bytes"
        ));
    }
    Ok(())
}

impl<'a> IntoIterator for &'a Batch {
    type Item = Event<'a>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Iterator over the events of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    batch: &'a Batch,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Event<'a>;
    fn next(&mut self) -> Option<Event<'a>> {
        let event = self.batch.get(self.next)?;
        self.next += 1;
        Some(event)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batch.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// A borrowed view of one event of a [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    batch: &'a Batch,
    index: usize,
}

fn slice<'a>(buf: &'a [u8], ends: &[u32], index: usize) -> &'a [u8] {
    let start = if index == 0 {
        0
    } else {
        ends[index - 1] as usize
    };
    &buf[start..ends[index] as usize]
}

impl<'a> Event<'a> {
    /// Position of the event in its batch (0-based): what [`Output::reject`] names.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The payload bytes (usually UTF-8 JSON).
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        slice(&self.batch.values, &self.batch.value_ends, self.index)
    }

    /// The key, or `None` when the event has none (or an empty one).
    pub fn key(&self) -> Option<&'a [u8]> {
        let key = slice(&self.batch.keys, &self.batch.key_ends, self.index);
        (!key.is_empty()).then_some(key)
    }

    /// Event time, in milliseconds since the Unix epoch (UTC).
    pub fn timestamp_ms(&self) -> i64 {
        self.batch.timestamps[self.index]
    }

    /// The top-level members the host's decoder found in the value, four
    /// offsets each (see [`Batch::push_indexed`]); empty when it handed
    /// none over.
    pub(crate) fn members(&self) -> &'a [u16] {
        self.batch.members_of(self.index)
    }

    /// The headers of this event, as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let headers = &self.batch.headers;
        let index = self.index as u32;
        let start = headers.partition_point(|h| h.index < index);
        headers[start..]
            .iter()
            .take_while(move |h| h.index == index)
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }

    /// The named top-level fields of the payload, a JSON object, without
    /// deserialising it: [`scan::fields`](crate::scan::fields) on
    /// [`value`](Self::value), or, when the host handed over the members its
    /// decoder found (package 0.3.0), a look through those without a second
    /// scan (the same answer). `None` means "ask [`json`](Self::json)".
    pub fn fields<const N: usize>(
        &self,
        names: &[&str; N],
    ) -> Option<[Option<crate::scan::Field<'a>>; N]> {
        let members = self.members();
        if !members.is_empty()
            && let Some(found) = crate::scan::fields_indexed(self.value(), members, names)
        {
            return Some(found);
        }
        crate::scan::fields(self.value(), names)
    }

    /// The payload parsed as JSON into `T` (which may borrow from the batch).
    ///
    /// # Errors
    /// serde_json's message, e.g. `"expected value at line 1 column 1"`: pass it
    /// to [`Output::reject`] to dead-letter the event with that reason.
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, String> {
        serde_json::from_slice(self.value()).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("unexpected JSON shape: {e}"),
            _ => format!("invalid JSON: {e}"),
        })
    }
}

/// A plugin's result for one batch: the events passed on, and the events refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Events to pass to the next stage or the sinks, in order.
    pub events: Batch,
    /// Events of the input batch refused, with the reason.
    pub rejected: Vec<Rejection>,
}

/// An input event the plugin refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the event in the input batch.
    pub index: u32,
    /// Why, for a human reading the dead-letter sink.
    pub reason: String,
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty output with room for `events` events and `bytes` bytes of values.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Output {
            events: Batch::with_capacity(events, bytes),
            rejected: Vec::new(),
        }
    }

    /// Passes `event` on unchanged (key, value, event time, headers). Not
    /// its members: the host drops those of an output (it trusts only its
    /// own), so copying them would only cost guest memory.
    pub fn forward(&mut self, event: &Event<'_>) {
        self.events
            .push(event.key(), event.value(), event.timestamp_ms());
        for (name, value) in event.headers() {
            self.events.push_header(name, value);
        }
    }

    /// Emits a new event.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp_ms: i64) {
        self.events.push(key, value, timestamp_ms);
    }

    /// Emits a new event whose payload is `value` serialized as JSON.
    ///
    /// # Errors
    /// serde_json's message when `value` cannot be serialized (a map with
    /// non-string keys, say).
    pub fn push_json<T: Serialize + ?Sized>(
        &mut self,
        key: Option<&[u8]>,
        value: &T,
        timestamp_ms: i64,
    ) -> Result<(), String> {
        let start = self.events.values.len();
        match serde_json::to_writer(&mut self.events.values, value) {
            Ok(()) => {
                self.events
                    .close_value(key, timestamp_ms, std::iter::empty());
                Ok(())
            }
            Err(e) => {
                self.events.values.truncate(start);
                Err(format!("cannot serialize output: {e}"))
            }
        }
    }

    /// Refuses `event`: the host sends its original bytes to the dead-letter sink
    /// with `reason` (once, with the first reason, however often it is
    /// rejected). A reject is about the input record; what the plugin also
    /// forwards or emits for it is output all the same: forward and reject
    /// one event and the sinks get the copy, the dead-letter sink the original.
    pub fn reject(&mut self, event: &Event<'_>, reason: impl Into<String>) {
        self.rejected.push(Rejection {
            index: end(event.index()),
            reason: reason.into(),
        });
    }

    #[cfg(target_arch = "wasm32")]
    pub(crate) fn into_wit(self) -> crate::__private::ProcessorOutput {
        use crate::__private::processor_bindings::sluice::plugin::types as wit;
        let parts = self.events.into_parts();
        wit::Output {
            events: wit::EventBatch {
                values: parts.values,
                value_ends: parts.value_ends,
                keys: parts.keys,
                key_ends: parts.key_ends,
                timestamps: parts.timestamps,
                headers: parts
                    .headers
                    .into_iter()
                    .map(|(index, name, value)| wit::Header { index, name, value })
                    .collect(),
                members: Vec::new(),
                member_ends: Vec::new(),
            },
            rejected: self
                .rejected
                .into_iter()
                .map(|r| wit::Rejection {
                    index: r.index,
                    reason: r.reason,
                })
                .collect(),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl Batch {
    pub(crate) fn from_wit(batch: crate::__private::EventBatch) -> Self {
        // The host builds well-formed batches; a malformed one is a host bug, and
        // every accessor is bounds-checked anyway.
        Batch {
            values: batch.values,
            value_ends: batch.value_ends,
            keys: batch.keys,
            key_ends: batch.key_ends,
            timestamps: batch.timestamps,
            headers: batch
                .headers
                .into_iter()
                .map(|h| Header {
                    index: h.index,
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            members: Vec::new(),
            member_ends: Vec::new(),
        }
    }

    /// A batch of package 0.3.0, with the members the host found.
    pub(crate) fn from_wit_indexed(batch: crate::__private::ProcessorBatch) -> Self {
        // The host builds well-formed batches; a malformed one is a host bug, and
        // every accessor is bounds-checked anyway.
        Batch {
            values: batch.values,
            value_ends: batch.value_ends,
            keys: batch.keys,
            key_ends: batch.key_ends,
            timestamps: batch.timestamps,
            headers: batch
                .headers
                .into_iter()
                .map(|h| Header {
                    index: h.index,
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            members: batch.members,
            member_ends: batch.member_ends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An event of a generated batch: key (empty: none), value, time,
    /// headers, members (none: pushed without).
    type Gen = (Vec<u8>, Vec<u8>, i64, Vec<(String, Vec<u8>)>, Vec<u16>);

    fn batch_of(events: &[Gen]) -> Batch {
        let mut batch = Batch::new();
        for (key, value, ts, headers, members) in events {
            if members.is_empty() {
                batch.push(Some(key), value, *ts);
            } else {
                batch.push_indexed(Some(key), value, *ts, members);
            }
            for (name, value) in headers {
                batch.push_header(name, value);
            }
        }
        batch
    }

    proptest! {
        /// `extend_from` of any range onto any batch equals `push_event` of
        /// each event of the range (members included), and `byte_size_of`
        /// equals the sum of the events' key and value lengths.
        #[test]
        fn extend_from_is_push_event_of_each(
            before in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..4), prop::collection::vec(any::<u8>(), 0..8),
                 any::<i64>(), prop::collection::vec(("[a-z]{1,3}", prop::collection::vec(any::<u8>(), 0..3)), 0..2),
                 prop::collection::vec(any::<u16>(), 0..3).prop_map(|m| m.repeat(4))),
                0..5),
            other in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..4), prop::collection::vec(any::<u8>(), 0..8),
                 any::<i64>(), prop::collection::vec(("[a-z]{1,3}", prop::collection::vec(any::<u8>(), 0..3)), 0..2),
                 prop::collection::vec(any::<u16>(), 0..3).prop_map(|m| m.repeat(4))),
                0..8),
            cut in (0usize..9, 0usize..9),
        ) {
            let other_batch = batch_of(&other);
            let (a, b) = (cut.0.min(other.len()), cut.1.min(other.len()));
            let range = a.min(b)..a.max(b);
            let mut bulk = batch_of(&before);
            bulk.extend_from(&other_batch, range.clone());
            let mut each = batch_of(&before);
            for i in range.clone() {
                each.push_event(&other_batch.get(i).unwrap());
            }
            prop_assert_eq!(&bulk, &each);
            for (i, event) in (range.start..).zip(bulk.iter().skip(before.len())) {
                prop_assert_eq!(bulk.members_of(event.index()), &other[i].4[..]);
            }
            let bytes: usize = other[range.clone()].iter().map(|(k, v, _, _, _)| k.len() + v.len()).sum();
            prop_assert_eq!(other_batch.byte_size_of(range), bytes);
        }
    }

    #[test]
    fn events_read_back_as_pushed() {
        let mut batch = Batch::new();
        batch.push(Some(b"UA"), br#"{"a":1}"#, 10);
        batch.push(None, b"", 20);
        batch.push_header("trace", b"x");
        batch.push(Some(b"AA"), b"plain", -5);
        let got: Vec<_> = batch
            .iter()
            .map(|e| (e.key(), e.value(), e.timestamp_ms(), e.headers().count()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(&b"UA"[..]), &br#"{"a":1}"#[..], 10, 0),
                (None, &b""[..], 20, 1),
                (Some(&b"AA"[..]), &b"plain"[..], -5, 0),
            ]
        );
        assert_eq!(batch.byte_size(), 7 + 5 + 4);
    }

    #[test]
    fn parts_round_trip_and_malformed_parts_are_refused() {
        let mut batch = Batch::from_lines("{\"x\":1}\n\n{\"x\":22}\n");
        batch.push_header("h", b"v");
        assert_eq!(batch.len(), 2);
        let parts = batch.clone().into_parts();
        assert_eq!(parts.value_ends, vec![7, 15]);
        assert_eq!(Batch::from_parts(parts.clone()).unwrap(), batch);

        let mut bad = parts.clone();
        bad.value_ends = vec![9, 7];
        assert!(Batch::from_parts(bad).unwrap_err().contains("decrease"));
        let mut bad = parts.clone();
        bad.timestamps.pop();
        assert!(Batch::from_parts(bad).is_err());
        let mut bad = parts;
        bad.headers[0].0 = 2;
        assert!(Batch::from_parts(bad).is_err());
    }

    #[test]
    fn fill_keys_gives_a_key_to_the_keyless_events_of_the_tail() {
        let mut batch = Batch::new();
        batch.push(None, b"0", 0);
        batch.push(Some(b"a"), b"1", 0);
        batch.push(None, b"2", 0);
        batch.push(Some(b"bb"), b"3", 0);
        batch.push(None, b"4", 0);
        batch.push_header("h", b"v");
        batch.fill_keys(2, b"kk");
        let keys: Vec<Option<&[u8]>> = batch.iter().map(|e| e.key()).collect();
        assert_eq!(
            keys,
            [None, Some(&b"a"[..]), Some(b"kk"), Some(b"bb"), Some(b"kk")]
        );
        assert_eq!(batch.get(4).unwrap().headers().count(), 1);
        assert_eq!(
            Batch::from_parts(batch.clone().into_parts()).unwrap(),
            batch
        );
        let before = batch.clone();
        batch.fill_keys(1, b"zz"); // every event from 1 on has a key
        batch.fill_keys(5, b"zz"); // none from 5 on
        assert_eq!(batch, before);
        batch.fill_keys(0, b"z");
        assert_eq!(batch.get(0).unwrap().key(), Some(&b"z"[..]));
        assert_eq!(batch.get(1).unwrap().key(), Some(&b"a"[..]));
    }

    #[test]
    fn push_json_rolls_back_on_error() {
        let mut out = Output::new();
        out.push_json(None, &serde_json::json!({"k": 1}), 3)
            .unwrap();
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 1);
        assert!(out.push_json(None, &bad, 4).is_err());
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events.get(0).unwrap().value(), br#"{"k":1}"#);
    }

    /// An output mixing forwarded events that had members, `push_json` and
    /// events pushed with members keeps each event's members its own (a
    /// break-it pass found `push_json` shifting the later ones).
    #[test]
    fn every_way_of_adding_keeps_members_in_step() {
        let mut input = Batch::new();
        // `{"a":1}`: name 2..3, value 5..6; `{"bb":"x"}`: name 2..4, value 6..9.
        input.push_indexed(None, br#"{"a":1}"#, 0, &[2, 3, 5, 6]);
        input.push_indexed(None, br#"{"bb":"x"}"#, 0, &[2, 4, 6, 9]);
        let mut out = Output::new();
        out.forward(&input.get(0).unwrap());
        out.events.push_event(&input.get(1).unwrap());
        out.push_json(None, &serde_json::json!({"bb": "zzzzzz", "c": 1}), 0)
            .unwrap();
        out.events.push(None, br#"{"bb":"y"}"#, 0);
        // Forwarded events carry no members (the host drops an output's).
        assert_eq!(out.events.members_of(0), &[] as &[u16]);
        assert_eq!(out.events.members_of(1), &[2, 4, 6, 9]);
        assert_eq!(out.events.members_of(2), &[] as &[u16]);
        assert_eq!(out.events.members_of(3), &[] as &[u16]);
        let bb: Vec<_> = out
            .events
            .iter()
            .map(|e| e.fields(&["bb"]).unwrap()[0].map(|f| f.raw().to_vec()))
            .collect();
        assert_eq!(
            bb,
            [
                None,
                Some(br#""x""#.to_vec()),
                Some(br#""zzzzzz""#.to_vec()),
                Some(br#""y""#.to_vec())
            ]
        );
        assert_eq!(
            Batch::from_parts(out.events.clone().into_parts()).unwrap(),
            out.events
        );
    }
}
