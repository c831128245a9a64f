//! Line formats beside JSON and text: how a source turns a CSV row or a
//! syslog message into a JSON object, whose bytes become the record's value
//! (the plugins see JSON) and to which the source's `key` and `timestamp`
//! pointers then apply.
//!
//! - [`csv`]: `format = "csv"`, RFC 4180 rows named by a header row;
//! - [`syslog`]: `format = "syslog"`, RFC 5424 and RFC 3164 messages.
//!
//! Decoding is shared by every source kind: the read loop in
//! [`crate::source`] (and the Kafka source) call it through
//! [`crate::source::LineDecoder`]. This module depends on nothing else of
//! the crate.

pub mod csv;
pub mod syslog;
