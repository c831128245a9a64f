//! Time formats shared by the window operator, the admin API and the
//! checkpoints listing. A leaf module.

/// `ms` since the epoch as RFC 3339 UTC with milliseconds; the end of time as
/// `+infinity`.
pub fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None if ms > 0 => "+infinity".into(),
        None => "-infinity".into(),
    }
}
