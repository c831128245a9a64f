use super::*;

/// The outputs (value, event time) and the rejections (index, reason).
type Parsed = (Vec<(String, i64)>, Vec<(u32, String)>);

fn parse(config: &[(&str, &str)], lines: &[&str]) -> Parsed {
    let mut p = Parse::configure(&Config::from_pairs(config.iter().copied())).unwrap();
    let mut batch = Batch::new();
    for line in lines {
        batch.push(None, line.as_bytes(), 7);
    }
    let mut out = Output::new();
    p.process(&batch, &mut out).unwrap();
    (
        out.events
            .iter()
            .map(|e| {
                (
                    String::from_utf8(e.value().to_vec()).unwrap(),
                    e.timestamp_ms(),
                )
            })
            .collect(),
        out.rejected
            .into_iter()
            .map(|r| (r.index, r.reason))
            .collect(),
    )
}

const LINE: &str = r#"proxy-435.dialup.xtra.co.nz - - [22/Apr/2009:18:52:51 +1200] "GET /images/photos/455.jpg HTTP/1.1" 200 986 "-" "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_4_11; en)" "-""#;

#[test]
fn combined_log_line() {
    let (out, rejected) = parse(
        &[("pattern", "combined"), ("event_time", "time")],
        &[
            LINE,
            &LINE
                .replace(" 986 ", " - ")
                .replace("\"GET /images/photos/455.jpg HTTP/1.1\"", "\"-\""),
        ],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(
        out[0],
        (
            r#"{"remote_addr":"proxy-435.dialup.xtra.co.nz","ident":null,"user":null,"time":"2009-04-22T06:52:51.000Z","request":"GET /images/photos/455.jpg HTTP/1.1","method":"GET","path":"/images/photos/455.jpg","protocol":"HTTP/1.1","status":200,"bytes":986,"referrer":null,"user_agent":"Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_4_11; en)"}"#.to_string(),
            1_240_383_171_000
        )
    );
    // A request line that is not METHOD PATH PROTOCOL: only `request`.
    assert_eq!(
        out[1].0,
        r#"{"remote_addr":"proxy-435.dialup.xtra.co.nz","ident":null,"user":null,"time":"2009-04-22T06:52:51.000Z","request":null,"status":200,"bytes":null,"referrer":null,"user_agent":"Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_4_11; en)"}"#
    );
}

#[test]
fn broken_lines_are_rejected_with_the_reason() {
    let (out, rejected) = parse(
        &[("pattern", "combined"), ("event_time", "time")],
        &[
            "garbage",
            &LINE.replace("[22/Apr/2009", "[31/Apr/2009"),
            &LINE.replace(" 200 ", " 2x0 "),
            LINE,
            &LINE[..60],
            &LINE.replace("+1200", "+12:00"),
        ],
    );
    assert_eq!(out.len(), 1);
    let reasons: Vec<(u32, &str)> = rejected.iter().map(|(i, r)| (*i, r.as_str())).collect();
    assert_eq!(
        reasons,
        [
            (0, "does not match pattern `combined`: garbage"),
            (
                1,
                "field `time`: cannot read `31/Apr/2009:18:52:51 +1200` as a timestamp (clf)"
            ),
            (
                2,
                "does not match pattern `combined`: proxy-435.dialup.xtra.co.nz - - [22/Apr/2009:18:52:51 +1200] \"GET /images/photos…"
            ),
            (
                4,
                "does not match pattern `combined`: proxy-435.dialup.xtra.co.nz - - [22/Apr/2009:18:52:51 +1200]"
            ),
            (
                5,
                "field `time`: cannot read `22/Apr/2009:18:52:51 +12:00` as a timestamp (clf)"
            ),
        ]
    );
}

#[test]
fn regex_types_nulls_and_kv() {
    let config = [
        (
            "regex",
            r"^(?P<level>\w+) (?P<took>\S+)ms ok=(?P<ok>\w+) at (?P<at>\S+)(?: (?P<note>.+))?$",
        ),
        (
            "types",
            r#"{ took = "float", ok = "bool", at = "timestamp:unix" }"#,
        ),
        ("nulls", r#"["none"]"#),
        ("event_time", "at"),
    ];
    let (out, rejected) = parse(
        &config,
        &[
            "INFO 12.5ms ok=true at 1240383171.25",
            "WARN none ms ok=false at -1 \"quoted\" note",
            "INFO 1e999ms ok=true at 1",
            "INFO 1ms ok=yes at 1",
        ],
    );
    assert_eq!(
        out,
        [(
            r#"{"level":"INFO","took":12.5,"ok":true,"at":"2009-04-22T06:52:51.250Z"}"#.to_string(),
            1_240_383_171_250
        ),]
    );
    assert_eq!(rejected.len(), 3);
    assert_eq!(
        rejected[0].1,
        "does not match the regex: WARN none ms ok=false at -1 \"quoted\" note"
    );
    assert_eq!(
        rejected[1].1,
        "field `took`: cannot read `1e999` as a finite float"
    );
    assert_eq!(
        rejected[2].1,
        "field `ok`: cannot read `yes` as a bool (true or false)"
    );

    let (out, rejected) = parse(
        &[("pattern", "kv"), ("types", r#"{ n = "int" }"#)],
        &[
            r#"<13>Apr 22 host app: user=ada n=42 msg="a \"quoted\" text" path=/x=y flag"#,
            "no pairs here",
        ],
    );
    assert_eq!(
        out[0].0,
        r#"{"user":"ada","n":42,"msg":"a \"quoted\" text","path":"/x=y"}"#
    );
    assert_eq!(out[0].1, 7, "no event_time: the event's own");
    assert_eq!(rejected[0].1, "no key=value pair: no pairs here");
}

#[test]
fn a_field_of_a_json_record() {
    let (out, rejected) = parse(
        &[("pattern", "kv"), ("field", "/message")],
        &[
            r#"{"host":"h","message":"a=1 b=\"x y\""}"#,
            r#"{"host":"h"}"#,
            r#"{"message":3}"#,
        ],
    );
    assert_eq!(
        out[0].0,
        r#"{"host":"h","message":"a=1 b=\"x y\"","a":"1","b":"x y"}"#
    );
    assert_eq!(rejected[0].1, "no `/message` in the record");
    assert_eq!(rejected[1].1, "`/message` is not a string");
}

#[test]
fn config_errors() {
    for (config, want) in [
        (
            vec![],
            "`pattern` (combined, common, kv) or `regex` is required",
        ),
        (vec![("pattern", "apache")], "not a pattern"),
        (vec![("pattern", "kv"), ("regex", "x")], "not both"),
        (vec![("regex", "(")], "config `regex`: regex parse error"),
        (vec![("regex", "a+")], "no named group"),
        (
            vec![("pattern", "combined"), ("types", r#"{ nope = "int" }"#)],
            "`nope` is not a named group of pattern `combined`",
        ),
        (
            vec![
                ("pattern", "combined"),
                ("types", r#"{ status = "integer" }"#),
            ],
            "`integer` is not a type",
        ),
        (
            vec![("pattern", "combined"), ("event_time", "status")],
            "not a field of type timestamp",
        ),
        (
            vec![("pattern", "kv"), ("field", "message")],
            "not a JSON pointer",
        ),
    ] {
        let err = Parse::configure(&Config::from_pairs(config.iter().copied()))
            .err()
            .unwrap();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn timestamps_against_date() {
    use time::{Format, parse, rfc3339_ms};
    // Values from `date -u -d … +%s`.
    assert_eq!(
        parse(Format::Clf, "22/Apr/2009:18:52:51 +1200"),
        Some(1_240_383_171_000)
    );
    assert_eq!(
        parse(Format::Clf, "29/Feb/2000:12:00:00 +0000"),
        Some(951_825_600_000)
    );
    assert_eq!(parse(Format::Clf, "29/Feb/2001:12:00:00 +0000"), None);
    assert_eq!(parse(Format::Rfc3339, "1969-12-31T23:59:59Z"), Some(-1000));
    assert_eq!(
        parse(Format::Rfc3339, "2009-04-22 18:52:51.1234+12:00"),
        Some(1_240_383_171_123)
    );
    assert_eq!(parse(Format::Rfc3339, "2009-04-22T06:52:51"), None);
    assert_eq!(parse(Format::UnixSeconds, "-1.5"), Some(-1500));
    assert_eq!(parse(Format::UnixSeconds, "1."), None);
    assert_eq!(
        parse(Format::UnixMillis, "1240383171000"),
        Some(1_240_383_171_000)
    );
    assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
    assert_eq!(
        rfc3339_ms(951_825_600_000).as_deref(),
        Some("2000-02-29T12:00:00.000Z")
    );
    assert_eq!(rfc3339_ms(i64::MAX), None);
    // Every day of 1900–2100 round-trips.
    for day in sluice_plugin_sdk::time::days_from_civil(1900, 1, 1)
        ..sluice_plugin_sdk::time::days_from_civil(2100, 1, 1)
    {
        let text = rfc3339_ms(day * 86_400_000).unwrap();
        assert_eq!(
            parse(Format::Rfc3339, &text),
            Some(day * 86_400_000),
            "{text}"
        );
    }
}
