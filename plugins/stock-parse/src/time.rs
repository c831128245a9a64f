//! Timestamps: read in a few formats into milliseconds since the Unix epoch,
//! written as RFC 3339 UTC with milliseconds (as the flights' `event_time`).

/// A timestamp format of `types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Common Log Format's `22/Apr/2009:18:52:51 +1200`.
    Clf,
    /// `2009-04-22T06:52:51Z`, `2009-04-22 18:52:51.25+12:00`.
    Rfc3339,
    /// Seconds since the epoch, with an optional fraction: `1240383171.5`.
    UnixSeconds,
    /// Milliseconds since the epoch: `1240383171500`.
    UnixMillis,
}

impl Format {
    /// The name used in `types` (after `timestamp:`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Clf => "clf",
            Format::Rfc3339 => "rfc3339",
            Format::UnixSeconds => "unix",
            Format::UnixMillis => "unix_ms",
        }
    }
}

/// `text` in `format`, as ms since the epoch.
pub fn parse(format: Format, text: &str) -> Option<i64> {
    match format {
        Format::Clf => clf(text),
        Format::Rfc3339 => rfc3339(text),
        Format::UnixSeconds => unix_seconds(text),
        Format::UnixMillis => {
            if text.is_empty()
                || !text
                    .trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                return None;
            }
            text.parse().ok()
        }
    }
}

// The calendar arithmetic is the SDK's (also the daemon's).
use sluice_plugin_sdk::time::{civil_from_days, utc_ms};

/// A run of exactly `n` ASCII digits.
fn digits(s: &[u8], n: usize) -> Option<i64> {
    let part = s.get(..n)?;
    part.iter().all(u8::is_ascii_digit).then(|| {
        part.iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    })
}

/// `+HHMM` or `-HHMM` (CLF) or `+HH:MM` (RFC 3339), in minutes east.
fn offset(s: &[u8], colon: bool) -> Option<i64> {
    let sign = match s.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h = digits(&s[1..], 2)?;
    let rest = &s[3..];
    let (m, len) = if colon {
        (digits(rest.strip_prefix(b":")?, 2)?, 6)
    } else {
        (digits(rest, 2)?, 5)
    };
    (s.len() == len && h < 24 && m < 60).then_some(sign * (h * 60 + m))
}

fn clf(text: &str) -> Option<i64> {
    // 22/Apr/2009:18:52:51 +1200
    let b = text.as_bytes();
    if b.len() != 26
        || b[2] != b'/'
        || b[6] != b'/'
        || b[11] != b':'
        || b[14] != b':'
        || b[17] != b':'
        || b[20] != b' '
    {
        return None;
    }
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &b[3..6])? as i64 + 1;
    let at = utc_ms(
        digits(&b[7..], 4)?,
        month,
        digits(b, 2)?,
        digits(&b[12..], 2)?,
        digits(&b[15..], 2)?,
        digits(&b[18..], 2)?,
        0,
    )?;
    Some(at - offset(&b[21..], false)? * 60_000)
}

fn rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Milliseconds, the rest truncated.
        for (i, d) in frac[..n.min(3)].iter().enumerate() {
            ms += i64::from(d - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        _ => offset(rest, true)?,
    };
    let at = utc_ms(
        digits(b, 4)?,
        digits(&b[5..], 2)?,
        digits(&b[8..], 2)?,
        digits(&b[11..], 2)?,
        digits(&b[14..], 2)?,
        digits(&b[17..], 2)?,
        ms,
    )?;
    Some(at - offset * 60_000)
}

fn unix_seconds(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = int.starts_with('-');
    let digits_part = int.strip_prefix('-').unwrap_or(int);
    if digits_part.is_empty()
        || !digits_part.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
    {
        return None;
    }
    let seconds: i64 = digits_part.parse().ok()?;
    let mut ms = 0;
    for (i, d) in frac.bytes().take(3).enumerate() {
        ms += i64::from(d - b'0') * [100, 10, 1][i];
    }
    let total = seconds.checked_mul(1000)?.checked_add(ms)?;
    Some(if negative { -total } else { total })
}

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; `None` outside the years 0–9999.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    let days = ms.div_euclid(86_400_000);
    let of_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    ))
}
