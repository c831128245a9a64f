//! What the stock plugins (`plugins/stock-*`) share.
//!
//! - [`settings`]: reading a stage's `config` values: the host passes strings,
//!   and lists and tables in their TOML text (`["/a", "/b"]`,
//!   `{ "/a" = "/b" }`);
//! - [`pointer`]: JSON pointers (RFC 6901);
//! - [`doc`]: a record as a tree that is only as deep as the edits need: the
//!   values a plugin does not touch are kept as their JSON text and written
//!   back byte for byte. Its top level is read with the SDK's scanner
//!   ([`sluice_plugin_sdk::scan::members`]) when it can be, with serde_json
//!   when it cannot (an escaped key, a key given twice, deep nesting), with the
//!   same result.
#![deny(missing_docs)]

pub mod doc;
pub mod pointer;
pub mod settings;

/// The TOML crate the settings are read with.
pub use toml;

use sluice_plugin_sdk::{Event, Output};

/// Emits `value` in place of `event`: its key, event time and headers kept.
pub fn emit(out: &mut Output, event: &Event<'_>, value: &[u8]) {
    emit_at(out, event, value, event.timestamp_ms());
}

/// [`emit`] with another event time.
pub fn emit_at(out: &mut Output, event: &Event<'_>, value: &[u8], timestamp_ms: i64) {
    out.push(event.key(), value, timestamp_ms);
    for (name, header) in event.headers() {
        out.events.push_header(name, header);
    }
}
