//! Test fixture for hot swaps: version "b" of a plugin that tags each JSON
//! object with `"v":"b"`. Copied over each other in a plugins folder, the two
//! versions show which one processed each record.

/// The tag this version adds.
pub const TAG: &str = "b";

include!("../../tag-a/src/tag.rs");
