//! The `generator` source: synthetic records from a template, at a given rate
//! or as fast as the pipeline takes them, for demos, load tests and
//! benchmarks (Spark's `rate` source). The output is a function of the config
//! alone: record `n` is the same in every run once `start` is set.
//!
//! ```toml
//! [sources.gen]
//! type = "generator"
//! template = '{"id":{{n}},"ts":{{timestamp}},"at":"{{rfc3339}}","temp":{{random -10 40}}}'
//! rate = 1000                      # records/s; absent: as fast as the pipeline takes them
//! count = 100000                   # then the source ends; absent: until stopped
//! start = "2026-01-01T00:00:00Z"   # event time of record 0 (or ms since the epoch); absent: now
//! seed = 7                         # for {{random}}; default 0
//! timestamp = "/ts"                # the shared fields work as for any source
//! ```
//!
//! Placeholders, replaced in record `n` (counted from 0):
//!
//! | placeholder | value |
//! |---|---|
//! | `{{n}}` | `n` |
//! | `{{timestamp}}` | event time, ms since the Unix epoch: `start + n × 1000 / rate` (integer division), `start + n` without `rate` |
//! | `{{rfc3339}}` | the same time as RFC 3339, UTC, milliseconds (`2026-01-01T00:00:00.000Z`), without quotes |
//! | `{{random LO HI}}` | an integer in `LO..=HI`, see [`random`] |
//!
//! Records are paced from the source's start: record `n` is handed on no
//! earlier than `n / rate` seconds after it (after the record it resumed
//! from, when it resumed from a checkpoint).
//!
//! With `start` set it can be checkpointed: its position is the number of
//! records it generated, and a restarted pipeline generates the same records
//! from there. Without `start`, event times depend on when it started, so a
//! pipeline reading it takes no checkpoints.

use std::time::{Duration, Instant};

use super::{Lines, Read1};
use crate::checkpoint::{GeneratorPosition, Position};

/// `[sources.NAME] type = "generator"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// What each record is: text with placeholders (see the module doc), one
    /// line. Default `{"n":{{n}},"timestamp":{{timestamp}}}`.
    pub template: Option<toml::Spanned<String>>,
    /// Records per second, at least 1; absent: as fast as the pipeline takes
    /// them.
    pub rate: Option<toml::Spanned<u64>>,
    /// Records to generate, then the source ends; absent: until stopped.
    pub count: Option<u64>,
    /// Event time of record 0: ms since the Unix epoch, or an RFC 3339 string;
    /// absent: the time the source starts (then `{{timestamp}}` differs
    /// between runs).
    pub start: Option<toml::Spanned<Start>>,
    /// Seed of `{{random LO HI}}`. Default 0.
    #[serde(default)]
    pub seed: u64,
}

/// `start`, as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Start {
    /// Milliseconds since the Unix epoch.
    Ms(i64),
    /// An RFC 3339 date-time.
    Rfc3339(String),
}

/// The template when none is given.
pub const DEFAULT_TEMPLATE: &str = r#"{"n":{{n}},"timestamp":{{timestamp}}}"#;

impl super::SourceConfig for GeneratorConfig {
    fn build(
        &self,
        cx: &super::BuildContext<'_>,
    ) -> Result<super::Built, crate::config::ConfigError> {
        let text = self
            .template
            .as_ref()
            .map_or(DEFAULT_TEMPLATE, |t| t.get_ref().as_str());
        let parts = parse_template(text).map_err(|e| cx.error_at("template", e))?;
        let rate = match &self.rate {
            Some(r) if *r.get_ref() == 0 => {
                return Err(cx.config.error(
                    r.span(),
                    "`rate` is records per second: at least 1 (leave it out for no limit)",
                ));
            }
            r => r.as_ref().map(|r| *r.get_ref()),
        };
        let start_ms = match &self.start {
            None => None,
            Some(s) => Some(match s.get_ref() {
                Start::Ms(ms) => *ms,
                Start::Rfc3339(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| {
                        cx.config.error(
                            s.span(),
                            format!("`start`: {t:?} is not an RFC 3339 date-time ({e}) nor a number of ms since the epoch"),
                        )
                    })?
                    .timestamp_millis(),
            }),
        };
        let source = GeneratorSource {
            template: text.to_string(),
            parts,
            rate,
            count: self.count,
            start_ms,
            seed: self.seed,
        };
        // A JSON source must generate JSON: record 0 shows a template that
        // cannot.
        let json = cx.table.field_span("format").is_none()
            || crate::config::deserialize_table::<crate::config::DecodeConfig>(
                cx.table.split(crate::config::DecodeConfig::FIELDS).0,
                cx.config,
                &[],
            )
            .is_ok_and(|d| d.format == crate::config::Format::Json);
        if json {
            let mut first = Vec::new();
            source.render(
                0,
                source.start_ms.unwrap_or(0),
                &mut first,
                &mut SecondCache::default(),
            );
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&first) {
                return Err(cx.error_at(
                    "template",
                    format!(
                        "the template does not make JSON (record 0 is {}: {e}); set `format` for other records",
                        String::from_utf8_lossy(&first)
                    ),
                ));
            }
        }
        Ok(super::Built {
            source: std::sync::Arc::new(source),
            claims: Vec::new(),
        })
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    N,
    Timestamp,
    Rfc3339,
    /// `{{random LO HI}}`, the `index`-th random placeholder of the template.
    Random {
        lo: i64,
        hi: i64,
        index: u64,
    },
}

/// Splits a template into text and placeholders.
fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    if text.contains(['\n', '\r']) {
        return Err("the template holds a line break: a record is one line".into());
    }
    let mut parts = Vec::new();
    let mut rest = text;
    let mut randoms = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest.as_bytes()[..open].to_vec()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("`{{{{` without `}}}}` in {:?}", &rest[open..]))?;
        let words: Vec<&str> = after[..close].split_whitespace().collect();
        parts.push(match words.as_slice() {
            ["n"] => Part::N,
            ["timestamp"] => Part::Timestamp,
            ["rfc3339"] => Part::Rfc3339,
            ["random", lo, hi] => {
                let int = |w: &str| {
                    w.parse::<i64>()
                        .map_err(|e| format!("`{{{{random LO HI}}}}`: {w:?} is not an integer: {e}"))
                };
                let (lo, hi) = (int(lo)?, int(hi)?);
                if lo > hi {
                    return Err(format!("`{{{{random {lo} {hi}}}}}`: LO is larger than HI"));
                }
                randoms += 1;
                Part::Random {
                    lo,
                    hi,
                    index: randoms - 1,
                }
            }
            _ => {
                return Err(format!(
                    "unknown placeholder `{{{{{}}}}}`: expected {{{{n}}}}, {{{{timestamp}}}}, {{{{rfc3339}}}} or {{{{random LO HI}}}}",
                    &after[..close]
                ));
            }
        });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.as_bytes().to_vec()));
    }
    Ok(parts)
}

/// SplitMix64's output function (Steele, Lea, Flood, "Fast splittable
/// pseudorandom number generators", OOPSLA 2014): a bijection of `u64` that
/// mixes every input bit into every output bit.
pub fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value of the `index`-th `{{random LO HI}}` (from 0, left to right) of
/// record `n`: `x = splitmix64(splitmix64(splitmix64(seed) ^ n) ^ index)`,
/// then `LO + x mod (HI − LO + 1)` — a function of the seed and the
/// position alone, so any record can be computed without the ones before it
/// (the modulo's bias is below 2⁻³² for ranges under 2³²).
pub fn random(seed: u64, n: u64, index: u64, lo: i64, hi: i64) -> i64 {
    let x = splitmix64(splitmix64(splitmix64(seed) ^ n) ^ index);
    let span = (hi.wrapping_sub(lo) as u64).wrapping_add(1);
    if span == 0 {
        return x as i64; // the whole range of i64
    }
    lo.wrapping_add((x % span) as i64)
}

/// A generator source, built. Its `Debug` text is its config (the parsed
/// template left out).
#[derive(Clone)]
pub struct GeneratorSource {
    template: String,
    parts: Vec<Part>,
    rate: Option<u64>,
    count: Option<u64>,
    start_ms: Option<i64>,
    seed: u64,
}

impl std::fmt::Debug for GeneratorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("template", &self.template)
            .field("rate", &self.rate)
            .field("count", &self.count)
            .field("start_ms", &self.start_ms)
            .field("seed", &self.seed)
            .finish()
    }
}

impl GeneratorSource {
    /// Event time of record `n`, given record 0's.
    fn time_of(&self, n: u64, start_ms: i64) -> i64 {
        let offset = match self.rate {
            Some(rate) => u128::from(n) * 1000 / u128::from(rate),
            None => u128::from(n),
        };
        start_ms.saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    /// Writes record `n` into `buf` (cleared first).
    fn render(&self, n: u64, start_ms: i64, buf: &mut Vec<u8>, second: &mut SecondCache) {
        buf.clear();
        for part in &self.parts {
            match part {
                Part::Text(t) => buf.extend_from_slice(t),
                Part::N => push_int(buf, false, n),
                Part::Timestamp => push_i64(buf, self.time_of(n, start_ms)),
                Part::Rfc3339 => second.push_rfc3339(buf, self.time_of(n, start_ms)),
                Part::Random { lo, hi, index } => {
                    push_i64(buf, random(self.seed, n, *index, *lo, *hi))
                }
            }
        }
    }
}

/// The RFC 3339 text of the last second written, up to its milliseconds
/// (`2026-01-01T00:00:00.`): records close in time share it, and only their
/// milliseconds are written.
#[derive(Debug, Default)]
struct SecondCache {
    second: Option<i64>,
    prefix: Vec<u8>,
}

impl SecondCache {
    /// Appends `ms` as [`crate::time::rfc3339`] writes it.
    fn push_rfc3339(&mut self, buf: &mut Vec<u8>, ms: i64) {
        let (second, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        if self.second != Some(second) {
            let text = ms.checked_sub(milli).map(crate::time::rfc3339);
            match text.as_deref().and_then(|t| t.strip_suffix("000Z")) {
                Some(prefix) => {
                    self.prefix = prefix.as_bytes().to_vec();
                    self.second = Some(second);
                }
                None => {
                    // Out of the calendar's range (`±infinity`): no cache.
                    self.second = None;
                    buf.extend_from_slice(crate::time::rfc3339(ms).as_bytes());
                    return;
                }
            }
        }
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(&[
            b'0' + (milli / 100) as u8,
            b'0' + (milli / 10 % 10) as u8,
            b'0' + (milli % 10) as u8,
            b'Z',
        ]);
    }
}

/// Appends `v` in decimal.
fn push_i64(buf: &mut Vec<u8>, v: i64) {
    push_int(buf, v < 0, v.unsigned_abs());
}

/// Appends `magnitude` in decimal, after a `-` if `negative`: what `write!`
/// does, without the formatting machinery (a third of a record's cost in a
/// generator that writes four numbers).
fn push_int(buf: &mut Vec<u8>, negative: bool, magnitude: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = magnitude;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        buf.push(b'-');
    }
    buf.extend_from_slice(&digits[i..]);
}

impl super::Source for GeneratorSource {
    fn parallel_decode(&self) -> Option<bool> {
        Some(true)
    }

    fn describe(&self) -> String {
        "generator".into()
    }

    fn replay(&self) -> super::Replay {
        if self.start_ms.is_none() {
            return super::Replay::No(
                "a generator without `start` cannot be checkpointed: its event times depend on when it starts, so the records generated again after a restart would differ; set `start`".into(),
            );
        }
        super::Replay::Position
    }

    fn run(&self, cx: super::SourceContext<'_>) -> anyhow::Result<()> {
        let start_ms = self.start_ms.unwrap_or_else(super::now_ms);
        let first = match &cx.resume {
            Some(Position::Generator(p)) => p.generated,
            _ => 0,
        };
        super::run_lines(
            cx,
            Box::new(Generated {
                source: self.clone(),
                start_ms,
                first,
                next: first,
                started: Instant::now(),
                second: SecondCache::default(),
            }),
        )
    }
}

/// A running generator: the records as lines.
struct Generated {
    source: GeneratorSource,
    /// Event time of record 0.
    start_ms: i64,
    /// The first record's number (not 0 when resumed).
    first: u64,
    /// The next record's number.
    next: u64,
    /// When the source started: record `n` is due `(n - first) / rate` s
    /// after.
    started: Instant,
    /// For `{{rfc3339}}`.
    second: SecondCache,
}

impl Generated {
    /// How long until the next record is due (zero: now).
    fn until_due(&self) -> Duration {
        let Some(rate) = self.source.rate else {
            return Duration::ZERO;
        };
        let nanos = u128::from(self.next - self.first) * 1_000_000_000 / u128::from(rate);
        let due = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        due.saturating_sub(self.started.elapsed())
    }
}

impl Lines for Generated {
    fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Read1> {
        if self.source.count.is_some_and(|c| self.next >= c) {
            return Ok(Read1::Eof);
        }
        if !self.until_due().is_zero() {
            return Ok(Read1::Idle);
        }
        self.source
            .render(self.next, self.start_ms, buf, &mut self.second);
        self.next += 1;
        Ok(Read1::Line)
    }

    fn drained(&self) -> bool {
        !self.until_due().is_zero()
    }

    fn wait(&mut self, max: Duration) {
        std::thread::sleep(self.until_due().min(max));
    }

    fn position(&self) -> Option<Position> {
        Some(Position::Generator(GeneratorPosition {
            generated: self.next,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(template: &str, rate: Option<u64>) -> GeneratorSource {
        GeneratorSource {
            template: template.into(),
            parts: parse_template(template).unwrap(),
            rate,
            count: None,
            start_ms: Some(1_000),
            seed: 3,
        }
    }

    fn line(s: &GeneratorSource, n: u64) -> String {
        let mut buf = Vec::new();
        s.render(n, 1_000, &mut buf, &mut SecondCache::default());
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn placeholders_are_replaced() {
        let s = source(
            r#"{"n":{{ n }},"t":{{timestamp}},"at":"{{rfc3339}}"}"#,
            Some(4),
        );
        // 4 records/s: record 5 is 1250 ms after record 0.
        assert_eq!(
            line(&s, 5),
            r#"{"n":5,"t":2250,"at":"1970-01-01T00:00:02.250Z"}"#
        );
        assert_eq!(line(&source("{{timestamp}}", None), 7), "1007");
    }

    #[test]
    fn random_stays_in_range_and_depends_on_seed_record_and_place() {
        let s = source("{{random -2 2}} {{random -2 2}}", None);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let l = line(&s, n);
            let (a, b) = l.split_once(' ').unwrap();
            let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
            assert!((-2..=2).contains(&a) && (-2..=2).contains(&b), "{l}");
            assert_eq!(a, random(3, n, 0, -2, 2));
            assert_eq!(b, random(3, n, 1, -2, 2));
            seen.insert(a);
        }
        assert_eq!(seen.len(), 5, "every value of the range comes up");
        assert_ne!(
            (0..64)
                .map(|n| random(3, n, 0, 0, 1 << 40))
                .collect::<Vec<_>>(),
            (0..64)
                .map(|n| random(4, n, 0, 0, 1 << 40))
                .collect::<Vec<_>>()
        );
        assert_eq!(random(0, 0, 0, 9, 9), 9);
        // The whole i64 range is a range too.
        let _ = random(0, 1, 0, i64::MIN, i64::MAX);
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first outputs of the reference generator seeded with 0
        // (state += golden gamma before each output).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn integers_are_written_as_format_writes_them() {
        for v in [0, 7, -7, 10, 99, -100, i64::MIN, i64::MAX] {
            let mut buf = b"x".to_vec();
            push_i64(&mut buf, v);
            assert_eq!(buf, format!("x{v}").into_bytes());
        }
        let mut buf = Vec::new();
        push_int(&mut buf, false, u64::MAX);
        assert_eq!(buf, u64::MAX.to_string().into_bytes());
    }

    #[test]
    fn rfc3339_from_the_second_cache_is_what_time_writes() {
        let mut cache = SecondCache::default();
        let mut ms: Vec<i64> = (-2_500..2_500).step_by(7).collect();
        ms.extend([
            1_767_225_599_999,
            1_767_225_600_000,
            0,
            i64::MAX,
            i64::MIN,
            5,
        ]);
        for ms in ms {
            let mut buf = Vec::new();
            cache.push_rfc3339(&mut buf, ms);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                crate::time::rfc3339(ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        for (t, why) in [
            ("{{n", "without"),
            ("{{x}}", "unknown placeholder `{{x}}`"),
            ("{{random 3 1}}", "LO is larger than HI"),
            ("{{random a 1}}", "not an integer"),
            ("a\nb", "line break"),
        ] {
            let e = parse_template(t).unwrap_err();
            assert!(e.contains(why), "{t:?}: {e}");
        }
    }

    #[test]
    fn paces_and_ends() {
        let mut g = Generated {
            source: GeneratorSource {
                count: Some(2),
                ..source("{{n}}", Some(1))
            },
            start_ms: 0,
            first: 0,
            next: 0,
            started: Instant::now(),
            second: SecondCache::default(),
        };
        let mut buf = Vec::new();
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Line));
        assert_eq!(buf, b"0");
        // 1 record/s: the second is not due yet.
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Idle));
        assert!(g.drained());
        g.started -= Duration::from_secs(1);
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Line));
        assert_eq!(buf, b"1");
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Eof));
    }

    #[test]
    fn resumes_from_its_position_and_paces_from_there() {
        let mut g = Generated {
            source: source("{{n}}", Some(1)),
            start_ms: 0,
            first: 7,
            next: 7,
            started: Instant::now(),
            second: SecondCache::default(),
        };
        let mut buf = Vec::new();
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Line));
        assert_eq!(buf, b"7");
        assert!(matches!(g.next_line(&mut buf).unwrap(), Read1::Idle));
        assert_eq!(
            g.position(),
            Some(Position::Generator(GeneratorPosition { generated: 8 }))
        );
    }
}
