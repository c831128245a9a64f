//! `format = "syslog"`: each line is a syslog message, RFC 5424 or RFC 3164
//! (the BSD format of `/var/log/syslog` and most network devices), turned
//! into a JSON object.
//!
//! ```toml
//! [sources.logs]
//! type = "file"
//! path = "/var/log/syslog"
//! follow = true
//! format = "syslog"
//! key = "/hostname"
//! timestamp = "/timestamp"
//! ```
//!
//! The object, members always present, `null` where the message has none
//! (RFC 5424's NILVALUE `-`, or a field RFC 3164 lacks):
//!
//! ```json
//! {"facility": "auth", "severity": "crit", "version": 1,
//!  "timestamp": "2003-10-11T22:14:15.003Z", "hostname": "mymachine.example.com",
//!  "appname": "su", "procid": null, "msgid": "ID47",
//!  "structured_data": {"exampleSDID@32473": {"iut": "3"}},
//!  "message": "'su root' failed for lonvick on /dev/pts/8"}
//! ```
//!
//! - `facility` and `severity`: the names of RFC 5424 §6.2.1's tables 1 and
//!   2 (`kern` … `local7`; `emerg` … `debug`), from the PRI `<N>` (facility
//!   N / 8, severity N % 8); `null` without a PRI (a line of a syslog file).
//! - `version`: 1 for RFC 5424, `null` for RFC 3164.
//! - `timestamp`: RFC 3339 with the message's offset. An RFC 3164 time
//!   (`Oct 11 22:14:15`) has neither year nor zone: it is taken as UTC in the
//!   current year (the previous year for a December time read in January).
//! - `procid`: a string (RFC 5424 §6.2.6).
//! - `structured_data`: SD-ID → {PARAM-NAME → value}, escapes (`\"`, `\\`,
//!   `\]`, RFC 5424 §6.3.3) undone; `{}` when there is none.
//!
//! Parsing is the `syslog_loose` crate's (Vector's), in its exact mode: a
//! line that is neither format goes to the dead-letter sink.

use chrono::{Datelike as _, Utc};
use serde_json::{Map, Value};

/// RFC 5424 §6.2.1 table 1: facility names by code (Linux's names).
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// RFC 5424 §6.2.1 table 2: severity names by code.
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The year of an RFC 3164 time, which has none: this year, or the last one
/// for a December message read in January.
fn resolve_year((month, ..): syslog_loose::IncompleteDate) -> i32 {
    year_of(month, Utc::now())
}

/// The year of a message of `month` (1–12) read at `now`.
fn year_of(month: u32, now: chrono::DateTime<Utc>) -> i32 {
    if now.month() == 1 && month == 12 {
        now.year() - 1
    } else {
        now.year()
    }
}

/// The PRI of a line, `<N>` with N ≤ 191 (RFC 5424 §6.2.1), if it starts with one.
fn pri(line: &str) -> Option<u8> {
    let rest = line.trim_start().strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u8>().ok().filter(|&n| n <= 191)
}

/// Parses one syslog line into its JSON object (see the module docs).
///
/// # Errors
/// The line is not UTF-8, or is neither an RFC 5424 nor an RFC 3164 message.
pub fn parse(line: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("syslog line is not UTF-8: {e}"))?;
    let message = syslog_loose::parse_message_with_year_exact_tz(
        text,
        resolve_year,
        Some(Utc),
        syslog_loose::Variant::Either,
    )
    .map_err(|_| "not a syslog message (neither RFC 5424 nor RFC 3164)".to_string())?;
    let pri = pri(text);
    let opt = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
    let mut object = Map::new();
    object.insert(
        "facility".into(),
        opt(pri.map(|p| FACILITIES[usize::from(p / 8)])),
    );
    object.insert(
        "severity".into(),
        opt(pri.map(|p| SEVERITIES[usize::from(p % 8)])),
    );
    object.insert(
        "version".into(),
        match message.protocol {
            syslog_loose::Protocol::RFC5424(v) => Value::from(v),
            syslog_loose::Protocol::RFC3164 => Value::Null,
        },
    );
    object.insert(
        "timestamp".into(),
        opt(message
            .timestamp
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .as_deref()),
    );
    object.insert("hostname".into(), opt(message.hostname));
    object.insert("appname".into(), opt(message.appname));
    object.insert(
        "procid".into(),
        opt(message.procid.map(|p| p.to_string()).as_deref()),
    );
    object.insert("msgid".into(), opt(message.msgid));
    let mut sd = Map::new();
    for element in &message.structured_data {
        let params: Map<String, Value> = element
            .params()
            .map(|(name, value)| (name.to_string(), Value::String(value)))
            .collect();
        sd.insert(element.id.to_string(), Value::Object(params));
    }
    object.insert("structured_data".into(), Value::Object(sd));
    object.insert("message".into(), Value::String(message.msg.to_string()));
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(line: &str) -> Value {
        Value::Object(parse(line.as_bytes()).unwrap())
    }

    /// RFC 5424 §6.5, example 1 (the "BOM" stands for the UTF-8 BOM there).
    #[test]
    fn rfc5424_example_1() {
        assert_eq!(
            parsed(
                "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8"
            ),
            json!({
                "facility": "auth", "severity": "crit", "version": 1,
                "timestamp": "2003-10-11T22:14:15.003Z",
                "hostname": "mymachine.example.com", "appname": "su",
                "procid": null, "msgid": "ID47", "structured_data": {},
                "message": "\u{feff}'su root' failed for lonvick on /dev/pts/8"
            })
        );
    }

    /// RFC 5424 §6.5, example 2: microseconds and an offset, no MSGID.
    #[test]
    fn rfc5424_example_2() {
        assert_eq!(
            parsed(
                "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts."
            ),
            json!({
                "facility": "local4", "severity": "notice", "version": 1,
                "timestamp": "2003-08-24T05:14:15.000003-07:00",
                "hostname": "192.0.2.1", "appname": "myproc",
                "procid": "8710", "msgid": null, "structured_data": {},
                "message": "%% It's time to make the do-nuts."
            })
        );
    }

    /// RFC 5424 §6.5, examples 3 and 4: structured data, with and without a message.
    #[test]
    fn rfc5424_examples_3_and_4() {
        let sd = r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#;
        let v = parsed(&format!(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {sd} An application event log entry..."
        ));
        assert_eq!(
            v["structured_data"],
            json!({"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}})
        );
        assert_eq!(v["message"], "An application event log entry...");
        assert_eq!(v["appname"], "evntslog");
        let v = parsed(&format!(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {sd}[examplePriority@32473 class="high"]"#
        ));
        assert_eq!(
            v["structured_data"],
            json!({
                "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                "examplePriority@32473": {"class": "high"}
            })
        );
        assert_eq!(v["message"], "");
    }

    /// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped in PARAM-VALUE.
    #[test]
    fn rfc5424_param_escapes() {
        let v = parsed(
            r#"<13>1 2020-01-01T00:00:00Z h a - - [x@1 q="say \"hi\"" b="a\\b" c="[1\]"] m"#,
        );
        assert_eq!(
            v["structured_data"],
            json!({"x@1": {"q": "say \"hi\"", "b": "a\\b", "c": "[1]"}})
        );
    }

    /// RFC 5424 §6.2: every header field may be the NILVALUE.
    #[test]
    fn rfc5424_nil_values() {
        assert_eq!(
            parsed("<13>1 - - - - - -"),
            json!({
                "facility": "user", "severity": "notice", "version": 1,
                "timestamp": null, "hostname": null, "appname": null,
                "procid": null, "msgid": null, "structured_data": {}, "message": ""
            })
        );
    }

    /// RFC 3164 §5.4, example 1; the year is this one (UTC), the time UTC.
    #[test]
    fn rfc3164_example_1() {
        let year = Utc::now().year(); // October: never the December rule
        assert_eq!(
            parsed("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"),
            json!({
                "facility": "auth", "severity": "crit", "version": null,
                "timestamp": format!("{year}-10-11T22:14:15Z"),
                "hostname": "mymachine", "appname": "su",
                "procid": null, "msgid": null, "structured_data": {},
                "message": "'su root' failed for lonvick on /dev/pts/8"
            })
        );
    }

    /// RFC 3164 §5.4, example 2: an IP address as HOSTNAME, and a TAG that
    /// ends at the first non-alphanumeric character (§4.1.3): `Use`.
    #[test]
    fn rfc3164_example_2() {
        let v = parsed("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
        assert_eq!(v["facility"], "user");
        assert_eq!(v["severity"], "notice");
        assert_eq!(v["hostname"], "10.0.0.99");
        assert_eq!(v["appname"], "Use");
        assert_eq!(v["message"], "the BFG!");
        let t = v["timestamp"].as_str().unwrap();
        assert!(t.ends_with("-02-05T17:32:18Z"), "{t}");
    }

    /// A line of a syslog file: no PRI, a PID after the TAG.
    #[test]
    fn rfc3164_without_pri() {
        let v = parsed("Mar  6 09:00:00 host sshd[123]: Accepted publickey");
        assert_eq!(v["facility"], Value::Null);
        assert_eq!(v["severity"], Value::Null);
        assert_eq!(v["hostname"], "host");
        assert_eq!(v["appname"], "sshd");
        assert_eq!(v["procid"], "123");
        assert_eq!(v["message"], "Accepted publickey");
    }

    #[test]
    fn a_december_message_read_in_january_is_last_years() {
        use chrono::TimeZone as _;
        let jan = Utc.with_ymd_and_hms(2027, 1, 1, 0, 5, 0).unwrap();
        let dec = Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap();
        assert_eq!(year_of(12, jan), 2026);
        assert_eq!(year_of(1, jan), 2027);
        assert_eq!(year_of(12, dec), 2026);
        assert_eq!(year_of(1, dec), 2026);
    }

    #[test]
    fn pri_names() {
        // RFC 5424 §6.2.1: PRI = facility × 8 + severity.
        assert_eq!(FACILITIES[191 / 8], "local7");
        assert_eq!(SEVERITIES[191 % 8], "debug");
        assert_eq!(pri("<0>1 -"), Some(0));
        assert_eq!(pri("<191>x"), Some(191));
        assert_eq!(pri("<192>x"), None);
        assert_eq!(pri("<1a>x"), None);
        assert_eq!(pri("Mar  6"), None);
    }

    #[test]
    fn refuses_what_is_not_syslog() {
        for line in ["hello world", "<999>garbage", "<13>", "{\"a\":1}"] {
            let e = parse(line.as_bytes()).unwrap_err();
            assert!(e.contains("not a syslog message"), "{line}: {e}");
        }
        let e = parse(b"<13>1 - - - - - - \xff").unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
