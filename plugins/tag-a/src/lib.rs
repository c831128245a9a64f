//! Test fixture for hot swaps: version "a" of a plugin that tags each JSON
//! object with `"v":"a"`. Copied over each other in a plugins folder, the two
//! versions show which one processed each record.

/// The tag this version adds.
pub const TAG: &str = "a";

include!("../../tag-a/src/tag.rs");
